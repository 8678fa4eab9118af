package registry

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// dropConn ends the connection under a handler with a TCP reset, after sending what the handler
// wrote so far when flush is set.
func dropConn(t testing.TB, w http.ResponseWriter, flush bool) {
	if fl, ok := w.(http.Flusher); ok && flush {
		fl.Flush()
	}
	conn, _, err := w.(http.Hijacker).Hijack()
	if err != nil {
		t.Errorf("hijack: %v", err)
		return
	}
	_ = conn.(*net.TCPConn).SetLinger(0)
	conn.Close()
}

func isBlobGet(r *http.Request) bool {
	return r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:")
}

func TestFetchBlobVerifies(t *testing.T) {
	data := pattern(10_000, 5)
	good := digest.FromBytes(data)
	tests := []struct {
		name string
		// serve answers blob GETs in place of the registry (nil: the registry's own bytes).
		serve   func(w http.ResponseWriter, r *http.Request)
		desc    ocispec.Descriptor
		wantErr error
	}{
		{"good", nil, ocispec.Descriptor{Digest: good, Size: int64(len(data))}, nil},
		{"unknown size", nil, ocispec.Descriptor{Digest: good, Size: -1}, nil},
		{"wrong bytes", func(w http.ResponseWriter, r *http.Request) {
			bad := append([]byte(nil), data...)
			bad[5000] ^= 1
			w.Write(bad)
		}, ocispec.Descriptor{Digest: good, Size: int64(len(data))}, ErrDigestMismatch},
		{"descriptor size too small", nil, ocispec.Descriptor{Digest: good, Size: 100}, ErrDigestMismatch},
		{"descriptor size too large", nil, ocispec.Descriptor{Digest: good, Size: 20_000}, ErrDigestMismatch},
		{"more bytes than the descriptor, no length", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Transfer-Encoding", "chunked")
			w.Write(data)
			w.(http.Flusher).Flush()
			w.Write([]byte("extra"))
		}, ocispec.Descriptor{Digest: good, Size: int64(len(data))}, ErrDigestMismatch},
		{"fewer bytes than the descriptor, no length", func(w http.ResponseWriter, r *http.Request) {
			w.(http.Flusher).Flush()
			w.Write(data[:9000])
		}, ocispec.Descriptor{Digest: good, Size: int64(len(data))}, ErrDigestMismatch},
		{"unknown size, wrong bytes", func(w http.ResponseWriter, r *http.Request) {
			w.Write(data[1:])
		}, ocispec.Descriptor{Digest: good, Size: -1}, ErrDigestMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeRegistry(t)
			f.addBlob("a", data)
			if tt.serve != nil {
				f.hook = func(w http.ResponseWriter, r *http.Request) bool {
					if isBlobGet(r) {
						tt.serve(w, r)
						return true
					}
					return false
				}
			}
			c, _ := testClient(t, Options{})
			rc, err := c.FetchBlob(testCtx(t), f.ref("a"), tt.desc)
			var got []byte
			if err == nil {
				got, err = readAllClose(rc)
			}
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("error %v, want %v", err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), good.String()) {
					t.Errorf("error %q does not name the blob", err)
				}
				return
			}
			noErr(t, err)
			if !bytes.Equal(got, data) {
				t.Error("content differs")
			}
		})
	}
}

func TestFetchBlobVerifyErrorIsSticky(t *testing.T) {
	f := newFakeRegistry(t)
	data := pattern(100, 1)
	f.addBlob("a", data)
	f.hook = func(w http.ResponseWriter, r *http.Request) bool {
		if isBlobGet(r) {
			w.Write(append([]byte{data[0] ^ 1}, data[1:]...))
			return true
		}
		return false
	}
	c, _ := testClient(t, Options{})
	rc, err := c.FetchBlob(testCtx(t), f.ref("a"), ocispec.Descriptor{Digest: digest.FromBytes(data), Size: 100})
	noErr(t, err)
	defer rc.Close()
	buf := make([]byte, 1000)
	var first error
	for first == nil {
		_, first = rc.Read(buf)
	}
	if _, again := rc.Read(buf); again != first {
		t.Errorf("second Read after a mismatch returned %v, want the same error %v", again, first)
	}
}

// TestFetchBlobResumes: a transfer that breaks is resumed with a Range request from the byte after
// the last one received, also when the registry answers the resume with the whole blob.
func TestFetchBlobResumes(t *testing.T) {
	data := pattern(200_000, 6)
	for _, ignoreRange := range []bool{false, true} {
		t.Run(fmt.Sprintf("ignoreRange=%v", ignoreRange), func(t *testing.T) {
			f := newFakeRegistry(t)
			desc := f.addBlob("a", data)
			var mu sync.Mutex
			var ranges []string
			f.hook = func(w http.ResponseWriter, r *http.Request) bool {
				if !isBlobGet(r) {
					return false
				}
				mu.Lock()
				n := len(ranges)
				ranges = append(ranges, r.Header.Get("Range"))
				mu.Unlock()
				if n < 2 { // the first two responses break after 30000 bytes
					start := int64(0)
					fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-", &start)
					w.Header().Set("Content-Length", fmt.Sprint(len(data)-int(start)))
					if start > 0 {
						w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, len(data)-1, len(data)))
						w.WriteHeader(http.StatusPartialContent)
					}
					w.Write(data[start : start+30000])
					dropConn(t, w, true)
					return true
				}
				if ignoreRange {
					w.Write(data)
					return true
				}
				return false
			}
			c, _ := testClient(t, Options{})
			rc, err := c.FetchBlob(testCtx(t), f.ref("a"), desc)
			noErr(t, err)
			got, err := readAllClose(rc)
			noErr(t, err)
			if !bytes.Equal(got, data) {
				t.Fatal("content differs")
			}
			mu.Lock()
			defer mu.Unlock()
			if len(ranges) != 3 || ranges[0] != "" {
				t.Fatalf("requests with Range %q, want 3, the first without", ranges)
			}
			for _, rg := range ranges[1:] {
				if rg == "" || rg == "bytes=0-" {
					t.Errorf("resume asked for %q", rg)
				}
			}
		})
	}
}

func TestFetchBlobGivesUp(t *testing.T) {
	f := newFakeRegistry(t)
	data := pattern(50_000, 6)
	desc := f.addBlob("a", data)
	var calls atomic.Int32
	f.hook = func(w http.ResponseWriter, r *http.Request) bool {
		if !isBlobGet(r) {
			return false
		}
		calls.Add(1)
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		w.WriteHeader(http.StatusOK)
		dropConn(t, w, true) // never a byte
		return true
	}
	c, sleeps := testClient(t, Options{Retries: 3})
	rc, err := c.FetchBlob(testCtx(t), f.ref("a"), desc)
	if err == nil {
		_, err = readAllClose(rc)
	}
	if err == nil || !strings.Contains(err.Error(), "giving up after 3 retries") {
		t.Fatalf("error %v, want giving up", err)
	}
	if n := len(sleeps.all()); n != 3 {
		t.Errorf("%d retries, want 3", n)
	}
	if n := calls.Load(); n != 4 {
		t.Errorf("%d requests, want 4", n)
	}
}

func TestFetchBlobRange(t *testing.T) {
	data := pattern(10_000, 7)
	tests := []struct {
		name    string
		off, n  int64
		serve   func(w http.ResponseWriter, r *http.Request) // nil: a registry with Range support
		wantErr string
	}{
		{"middle", 1000, 500, nil, ""},
		{"to the end", 9000, 1000, nil, ""},
		{"registry ignores Range", 1000, 500, func(w http.ResponseWriter, r *http.Request) { w.Write(data) }, ""},
		{"registry splits the range", 1000, 3000, func(w http.ResponseWriter, r *http.Request) {
			var a, b int
			fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-%d", &a, &b)
			b = min(b, a+999) // at most 1000 bytes per response
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", a, b, len(data)))
			w.WriteHeader(http.StatusPartialContent)
			w.Write(data[a : b+1])
		}, ""},
		{"range past the end", 9500, 1000, nil, "unexpected EOF"},
		{"short full response", 9500, 1000, func(w http.ResponseWriter, r *http.Request) { w.Write(data) }, "short read"},
		{"wrong Content-Range", 1000, 500, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Range", "bytes 0-499/10000")
			w.WriteHeader(http.StatusPartialContent)
			w.Write(data[:500])
		}, "got Content-Range"},
		{"start beyond the blob", 20_000, 10, nil, "not satisfiable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeRegistry(t)
			desc := f.addBlob("a", data)
			if tt.serve != nil {
				f.hook = func(w http.ResponseWriter, r *http.Request) bool {
					if isBlobGet(r) {
						tt.serve(w, r)
						return true
					}
					return false
				}
			}
			c, _ := testClient(t, Options{Retries: 2})
			rc, err := c.FetchBlobRange(testCtx(t), f.ref("a"), desc.Digest, tt.off, tt.n)
			var got []byte
			if err == nil {
				got, err = readAllClose(rc)
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			noErr(t, err)
			if !bytes.Equal(got, data[tt.off:tt.off+tt.n]) {
				t.Errorf("got %d bytes, want bytes [%d,%d)", len(got), tt.off, tt.off+tt.n)
			}
		})
	}

	c, _ := testClient(t, Options{})
	for _, r := range [][2]int64{{-1, 10}, {0, -1}, {1 << 62, 1 << 62}} {
		if _, err := c.FetchBlobRange(testCtx(t), Ref{Registry: "127.0.0.1:1", Repository: "a"}, digest.FromBytes(nil), r[0], r[1]); err == nil {
			t.Errorf("FetchBlobRange(%d, %d) accepted", r[0], r[1])
		}
	}
}

// uploadedBlob returns what the fake registry has for d.
func (f *fakeRegistry) uploadedBlob(d digest.Digest) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.blobs[d.String()]
}

func TestPushBlobChunks(t *testing.T) {
	f := newFakeRegistry(t)
	data := pattern(10_000, 8)
	desc := ocispec.Descriptor{Digest: digest.FromBytes(data), Size: int64(len(data))}
	c, _ := testClient(t, Options{UploadChunkSize: 3000})
	res, err := c.PushBlob(testCtx(t), f.ref("a"), desc, bytes.NewReader(data), nil)
	noErr(t, err)
	if res != (PushResult{BytesUploaded: 10_000}) {
		t.Errorf("result %+v", res)
	}
	if got := f.requests(`^PATCH `); len(got) != 4 {
		t.Errorf("%d PATCHes, want 4", len(got))
	}
	if !bytes.Equal(f.uploadedBlob(desc.Digest), data) {
		t.Error("registry has different bytes")
	}
	// Pushing again is a HEAD and nothing else.
	before := len(f.requests(``))
	res, err = c.PushBlob(testCtx(t), f.ref("a"), desc, bytes.NewReader(data), nil)
	noErr(t, err)
	if res != (PushResult{Skipped: true}) || len(f.requests(``))-before != 1 {
		t.Errorf("second push: %+v after %d requests", res, len(f.requests(``))-before)
	}
}

// TestPushBlobResumesMidChunk: the fake registry keeps the part of a chunk that arrived before the
// connection died, and the client continues from exactly there.
func TestPushBlobResumesMidChunk(t *testing.T) {
	f := newFakeRegistry(t)
	const chunk = 4000
	data := pattern(4*chunk, 9)
	desc := ocispec.Descriptor{Digest: digest.FromBytes(data), Size: int64(len(data))}
	var patches atomic.Int32
	var ranges []string
	var mu sync.Mutex
	f.hook = func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodPatch {
			return false
		}
		mu.Lock()
		ranges = append(ranges, r.Header.Get("Content-Range"))
		mu.Unlock()
		if patches.Add(1) != 2 {
			return false
		}
		// Take 1500 bytes of the second chunk, then die.
		part := make([]byte, 1500)
		if _, err := io.ReadFull(r.Body, part); err != nil {
			t.Errorf("read part: %v", err)
		}
		id := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
		f.mu.Lock()
		f.uploads[id] = append(f.uploads[id], part...)
		f.mu.Unlock()
		dropConn(t, w, false)
		return true
	}
	c, _ := testClient(t, Options{UploadChunkSize: chunk})
	res, err := c.PushBlob(testCtx(t), f.ref("a"), desc, bytes.NewReader(data), nil)
	noErr(t, err)
	if !bytes.Equal(f.uploadedBlob(desc.Digest), data) {
		t.Fatal("registry has different bytes")
	}
	want := []string{"0-3999", "4000-7999", "5500-9499", "9500-13499", "13500-15999"}
	if fmt.Sprint(ranges) != fmt.Sprint(want) {
		t.Errorf("PATCH Content-Ranges %v, want %v", ranges, want)
	}
	if res.BytesUploaded < desc.Size || res.BytesUploaded > desc.Size+chunk {
		t.Errorf("uploaded %d bytes for a %d-byte blob", res.BytesUploaded, desc.Size)
	}
	if n := len(f.requests(`^GET /v2/a/blobs/uploads/`)); n != 1 {
		t.Errorf("%d upload status requests, want 1", n)
	}
}

// dropOnWriteHeader lets a handler do its work but drops the connection instead of answering.
type dropOnWriteHeader struct {
	http.ResponseWriter
	t       testing.TB
	dropped bool
}

func (d *dropOnWriteHeader) WriteHeader(int) {
	if !d.dropped {
		d.dropped = true
		dropConn(d.t, d.ResponseWriter, false)
	}
}

func (d *dropOnWriteHeader) Write(p []byte) (int, error) {
	d.WriteHeader(http.StatusOK)
	return 0, io.ErrClosedPipe
}

func TestPushBlobFailures(t *testing.T) {
	data := pattern(9000, 10)
	desc := ocispec.Descriptor{Digest: digest.FromBytes(data), Size: int64(len(data))}
	isUpload := func(r *http.Request, method string) bool {
		return r.Method == method && strings.Contains(r.URL.Path, "/blobs/uploads/")
	}
	tests := []struct {
		name string
		// hook answers requests in place of the registry; n counts the requests it has seen.
		hook  func(t *testing.T, f *fakeRegistry, n int, w http.ResponseWriter, r *http.Request) bool
		want  string // error substring, "" for success
		posts int    // upload sessions opened
	}{
		{"session gone after a 500", func(t *testing.T, f *fakeRegistry, n int, w http.ResponseWriter, r *http.Request) bool {
			switch {
			case isUpload(r, http.MethodPatch) && r.Header.Get("Content-Range") == "3000-5999" && strings.HasSuffix(r.URL.Path, "/1"):
				fakeError(w, http.StatusInternalServerError, "FAKE")
				return true
			case isUpload(r, http.MethodGet):
				fakeError(w, http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN")
				return true
			}
			return false
		}, "", 2},
		{"PATCH refused for good", func(t *testing.T, f *fakeRegistry, n int, w http.ResponseWriter, r *http.Request) bool {
			if isUpload(r, http.MethodPatch) {
				fakeError(w, http.StatusForbidden, "DENIED")
				return true
			}
			return false
		}, "403 Forbidden: DENIED", 1},
		{"PATCH fails every time", func(t *testing.T, f *fakeRegistry, n int, w http.ResponseWriter, r *http.Request) bool {
			if isUpload(r, http.MethodPatch) {
				fakeError(w, http.StatusServiceUnavailable, "FAKE")
				return true
			}
			return false
		}, "giving up after 2 retries", 1},
		{"commit response lost", func(t *testing.T, f *fakeRegistry, n int, w http.ResponseWriter, r *http.Request) bool {
			if isUpload(r, http.MethodPut) {
				// The registry commits, but the answer never arrives; nor do those of the retries.
				m := fakeUploadRE.FindStringSubmatch(r.URL.Path)
				f.upload(&dropOnWriteHeader{ResponseWriter: w, t: t}, r, m[1], m[2])
				return true
			}
			return false
		}, "", 1},
		{"registry says digest invalid", func(t *testing.T, f *fakeRegistry, n int, w http.ResponseWriter, r *http.Request) bool {
			if isUpload(r, http.MethodPut) {
				fakeError(w, http.StatusBadRequest, "DIGEST_INVALID")
				return true
			}
			return false
		}, "do not match", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeRegistry(t)
			var n atomic.Int32
			f.hook = func(w http.ResponseWriter, r *http.Request) bool {
				return tt.hook(t, f, int(n.Add(1)), w, r)
			}
			c, _ := testClient(t, Options{UploadChunkSize: 3000, Retries: 2})
			res, err := c.PushBlob(testCtx(t), f.ref("a"), desc, bytes.NewReader(data), nil)
			if tt.want != "" {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("error %v, want %q", err, tt.want)
				}
			} else {
				noErr(t, err)
				if !bytes.Equal(f.uploadedBlob(desc.Digest), data) {
					t.Fatal("registry has different bytes")
				}
			}
			if got := len(f.requests(`^POST `)); got != tt.posts {
				t.Errorf("%d upload sessions, want %d (result %+v)", got, tt.posts, res)
			}
		})
	}
}

// failingReaderAt fails every read.
type failingReaderAt struct{ err error }

func (f failingReaderAt) ReadAt([]byte, int64) (int, error) { return 0, f.err }

// truncatedReaderAt fails reads past limit.
type truncatedReaderAt struct {
	r     io.ReaderAt
	limit int64
	err   error
}

func (t truncatedReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > t.limit {
		if off >= t.limit {
			return 0, t.err
		}
		n, _ := t.r.ReadAt(p[:t.limit-off], off)
		return n, t.err
	}
	return t.r.ReadAt(p, off)
}

func TestPushBlobSourceErrors(t *testing.T) {
	errSource := errors.New("source is gone")
	data := pattern(9000, 11)
	desc := ocispec.Descriptor{Digest: digest.FromBytes(data), Size: int64(len(data))}

	t.Run("unreadable source opens no session", func(t *testing.T) {
		f := newFakeRegistry(t)
		c, sleeps := testClient(t, Options{})
		_, err := c.PushBlob(testCtx(t), f.ref("a"), desc, failingReaderAt{errSource}, nil)
		if !errors.Is(err, errSource) {
			t.Fatalf("error %v, want the source's", err)
		}
		if n := len(f.requests(`^(POST|PATCH) `)); n != 0 || len(sleeps.all()) != 0 {
			t.Errorf("%d upload requests, %d retries", n, len(sleeps.all()))
		}
	})
	t.Run("refused mount's session is cancelled", func(t *testing.T) {
		f := newFakeRegistry(t)
		c, _ := testClient(t, Options{})
		_, err := c.PushBlob(testCtx(t), f.ref("a"), desc, failingReaderAt{errSource}, []Ref{f.ref("b")})
		if !errors.Is(err, errSource) {
			t.Fatalf("error %v, want the source's", err)
		}
		if n := len(f.requests(`^DELETE /v2/a/blobs/uploads/`)); n != 1 {
			t.Errorf("%d DELETEs, want the mount's session cancelled", n)
		}
	})
	t.Run("failure mid-upload is not retried", func(t *testing.T) {
		f := newFakeRegistry(t)
		c, sleeps := testClient(t, Options{UploadChunkSize: 3000})
		_, err := c.PushBlob(testCtx(t), f.ref("a"), desc, truncatedReaderAt{bytes.NewReader(data), 4000, errSource}, nil)
		if !errors.Is(err, errSource) {
			t.Fatalf("error %v, want the source's", err)
		}
		if len(sleeps.all()) != 0 {
			t.Errorf("retried a source error")
		}
	})
}

func TestPushBlobMounts(t *testing.T) {
	f := newFakeRegistry(t)
	data := pattern(5000, 12)
	desc := f.addBlob("has/it", data)
	c, _ := testClient(t, Options{})
	other := Ref{Registry: "other.example.com", Repository: "has/it"}
	res, err := c.PushBlob(testCtx(t), f.ref("dst"), desc, failingReaderAt{errors.New("no bytes needed")},
		[]Ref{other, f.ref("dst"), f.ref("lacks/it"), f.ref("has/it")})
	noErr(t, err)
	if res != (PushResult{Mounted: true}) {
		t.Errorf("result %+v, want mounted", res)
	}
	posts := f.requests(`^POST `)
	if len(posts) != 2 {
		t.Errorf("POSTs %v: want mounts from lacks/it and has/it only", posts)
	}
	if n := len(f.requests(`^DELETE `)); n != 1 {
		t.Errorf("%d DELETEs, want lacks/it's session cancelled", n)
	}
}

func TestPushBlobRegistryThatKeepsNothing(t *testing.T) {
	f := newFakeRegistry(t)
	f.hook = func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodPatch {
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Range", "0-0")
			w.WriteHeader(http.StatusAccepted)
			return true
		}
		return false
	}
	data := pattern(5000, 14)
	c, _ := testClient(t, Options{UploadChunkSize: 1000, Retries: 3})
	_, err := c.PushBlob(testCtx(t), f.ref("a"), ocispec.Descriptor{Digest: digest.FromBytes(data), Size: 5000}, bytes.NewReader(data), nil)
	if err == nil || !strings.Contains(err.Error(), "did not grow") {
		t.Fatalf("error %v, want the upload to stop", err)
	}
}
