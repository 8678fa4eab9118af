package registry

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func testManifest(seed byte) []byte {
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest,
		Config: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes([]byte{seed}), Size: 1}}
	m.SchemaVersion = 2
	return mustJSON(m)
}

func TestGetManifest(t *testing.T) {
	data := testManifest(1)
	d := digest.FromBytes(data)
	tests := []struct {
		name    string
		ref     string // repository:tag or repository@digest under the fake
		serve   func(w http.ResponseWriter, r *http.Request)
		want    string // media type
		wantErr error
	}{
		{"by tag", "a:v1", nil, ocispec.MediaTypeImageManifest, nil},
		{"by digest", "a@" + d.String(), nil, ocispec.MediaTypeImageManifest, nil},
		{"by digest, other content", "a@" + d.String(), func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", ocispec.MediaTypeImageManifest)
			w.Write(testManifest(2))
		}, "", ErrDigestMismatch},
		{"by tag, Docker-Content-Digest disagrees", "a:v1", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", ocispec.MediaTypeImageManifest)
			w.Header().Set("Docker-Content-Digest", digest.FromString("other").String())
			w.Write(data)
		}, "", ErrDigestMismatch},
		{"too large by Content-Length", "a:v1", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", fmt.Sprint(MaxManifestSize+1))
			w.WriteHeader(http.StatusOK)
		}, "", ErrManifestTooLarge},
		{"too large, streamed", "a:v1", func(w http.ResponseWriter, r *http.Request) {
			w.(http.Flusher).Flush()
			for i := 0; i < 5; i++ {
				w.Write(bytes.Repeat([]byte(" "), 1<<20))
			}
		}, "", ErrManifestTooLarge},
		{"generic content type, index inside", "a:v1", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			w.Write([]byte(`{"schemaVersion":2,"manifests":[]}`))
		}, ocispec.MediaTypeImageIndex, nil},
		{"no content type, mediaType field", "a:v1", func(w http.ResponseWriter, r *http.Request) {
			w.Header()["Content-Type"] = nil
			w.Write([]byte(`{"schemaVersion":2,"mediaType":"` + MediaTypeDockerManifest + `","config":{}}`))
		}, MediaTypeDockerManifest, nil},
		{"missing", "a:nope", nil, "", ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeRegistry(t)
			c, _ := testClient(t, Options{})
			_, err := c.PutManifest(testCtx(t), f.ref("a:v1"), ocispec.MediaTypeImageManifest, data)
			noErr(t, err)
			var accept string
			f.hook = func(w http.ResponseWriter, r *http.Request) bool {
				if !strings.Contains(r.URL.Path, "/manifests/") {
					return false
				}
				accept = r.Header.Get("Accept")
				if tt.serve != nil {
					tt.serve(w, r)
					return true
				}
				return false
			}
			got, desc, err := c.GetManifest(testCtx(t), f.ref(tt.ref))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("error %v, want %v", err, tt.wantErr)
				}
				return
			}
			noErr(t, err)
			if desc.MediaType != tt.want || desc.Size != int64(len(got)) || desc.Digest != digest.FromBytes(got) {
				t.Errorf("descriptor %+v for %d bytes", desc, len(got))
			}
			for _, mt := range []string{ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex, MediaTypeDockerManifest, MediaTypeDockerManifestList} {
				if !strings.Contains(accept, mt) {
					t.Errorf("Accept %q lacks %s", accept, mt)
				}
			}
		})
	}
}

func TestResolve(t *testing.T) {
	data := testManifest(3)
	tests := []struct {
		name     string
		head     func(w http.ResponseWriter, r *http.Request) // nil: the registry's
		wantGETs int
		wantErr  error
	}{
		{"HEAD answers", nil, 0, nil},
		{"HEAD without digest", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", ocispec.MediaTypeImageManifest)
			w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		}, 1, nil},
		{"HEAD not allowed", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusMethodNotAllowed) }, 1, nil},
		{"HEAD 404", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNotFound) }, 0, ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeRegistry(t)
			c, _ := testClient(t, Options{})
			_, err := c.PutManifest(testCtx(t), f.ref("a:v1"), ocispec.MediaTypeImageManifest, data)
			noErr(t, err)
			if tt.head != nil {
				f.hook = func(w http.ResponseWriter, r *http.Request) bool {
					if r.Method == http.MethodHead {
						tt.head(w, r)
						return true
					}
					return false
				}
			}
			desc, err := c.Resolve(testCtx(t), f.ref("a:v1"))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("error %v, want %v", err, tt.wantErr)
				}
			} else {
				noErr(t, err)
				if desc.Digest != digest.FromBytes(data) || desc.Size != int64(len(data)) || desc.MediaType != ocispec.MediaTypeImageManifest {
					t.Errorf("descriptor %+v", desc)
				}
			}
			if n := len(f.requests(`^GET /v2/a/manifests/`)); n != tt.wantGETs {
				t.Errorf("%d GETs, want %d", n, tt.wantGETs)
			}
		})
	}
}

func TestPutManifest(t *testing.T) {
	data := testManifest(4)
	d := digest.FromBytes(data)
	f := newFakeRegistry(t)
	c, _ := testClient(t, Options{})

	// With a tag the manifest goes under the tag (its digest checked); without, under the digest.
	desc, err := c.PutManifest(testCtx(t), f.ref("a:v1").WithDigest(d), ocispec.MediaTypeImageManifest, data)
	noErr(t, err)
	if desc.MediaType != ocispec.MediaTypeImageManifest || desc.Digest != d || desc.Size != int64(len(data)) {
		t.Errorf("descriptor %+v", desc)
	}
	_, err = c.PutManifest(testCtx(t), f.ref("b@"+d.String()), ocispec.MediaTypeImageManifest, data)
	noErr(t, err)
	puts := f.requests(`^PUT `)
	if fmt.Sprint(puts) != fmt.Sprint([]string{"PUT /v2/a/manifests/v1", "PUT /v2/b/manifests/" + d.String()}) {
		t.Errorf("PUTs %v", puts)
	}

	bad := []struct {
		name      string
		ref       Ref
		mediaType string
		data      []byte
		wantErr   error
	}{
		{"digest mismatch", f.ref("a@" + digest.FromString("x").String()), ocispec.MediaTypeImageManifest, data, ErrDigestMismatch},
		{"no media type", f.ref("a:v1"), "", data, nil},
		{"too large", f.ref("a:v1"), ocispec.MediaTypeImageManifest, make([]byte, MaxManifestSize+1), ErrManifestTooLarge},
		{"no reference", Ref{Registry: f.host(), Repository: "a"}, ocispec.MediaTypeImageManifest, data, nil},
	}
	for _, b := range bad {
		before := len(f.requests(`^PUT `))
		_, err := c.PutManifest(testCtx(t), b.ref, b.mediaType, b.data)
		if err == nil || (b.wantErr != nil && !errors.Is(err, b.wantErr)) {
			t.Errorf("%s: error %v, want %v", b.name, err, b.wantErr)
		}
		if len(f.requests(`^PUT `)) != before {
			t.Errorf("%s: a request was sent", b.name)
		}
	}

	f.hook = func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodPut {
			w.Header().Set("Docker-Content-Digest", digest.FromString("other").String())
			w.WriteHeader(http.StatusCreated)
			return true
		}
		return false
	}
	if _, err := c.PutManifest(testCtx(t), f.ref("a:v2"), ocispec.MediaTypeImageManifest, data); !errors.Is(err, ErrDigestMismatch) {
		t.Errorf("registry stored other bytes: %v", err)
	}
}

func TestGetManifestRetriesACutBody(t *testing.T) {
	f := newFakeRegistry(t)
	c, sleeps := testClient(t, Options{})
	data := testManifest(5)
	_, err := c.PutManifest(testCtx(t), f.ref("a:v1"), ocispec.MediaTypeImageManifest, data)
	noErr(t, err)
	cut := true
	f.hook = func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/manifests/") || !cut {
			return false
		}
		cut = false
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		w.Write(data[:10])
		dropConn(t, w, true)
		return true
	}
	got, _, err := c.GetManifest(testCtx(t), f.ref("a:v1"))
	noErr(t, err)
	if !bytes.Equal(got, data) || len(sleeps.all()) != 1 {
		t.Errorf("got %d bytes after %d retries", len(got), len(sleeps.all()))
	}
}
