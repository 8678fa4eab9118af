package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// fakeRegistry is a small in-memory OCI registry for edge cases the real one cannot be made to
// produce. Unlike distribution 2.8 it keeps the bytes of an interrupted PATCH and reports them in
// the upload status, as the distribution spec allows.
type fakeRegistry struct {
	t   testing.TB
	srv *httptest.Server

	mu        sync.Mutex
	blobs     map[string][]byte // digest -> content, shared by all repositories
	repoBlobs map[string]bool   // repo + "@" + digest
	manifests map[string][]byte // repo + ":" + reference
	mediaType map[string]string
	uploads   map[string][]byte // upload id -> bytes so far
	nextID    int
	log       []string // "METHOD path" of every request that reached the handlers

	// hook, when set, sees every request first and reports whether it handled it.
	hook func(w http.ResponseWriter, r *http.Request) bool
	// auth, when set, must approve a request (after hook) or it gets a 401 it writes itself.
	auth func(w http.ResponseWriter, r *http.Request) bool
}

func newFakeRegistry(t testing.TB) *fakeRegistry {
	f := &fakeRegistry{t: t, blobs: map[string][]byte{}, repoBlobs: map[string]bool{}, manifests: map[string][]byte{},
		mediaType: map[string]string{}, uploads: map[string][]byte{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

// host is "127.0.0.1:PORT".
func (f *fakeRegistry) host() string { return strings.TrimPrefix(f.srv.URL, "http://") }

func (f *fakeRegistry) ref(s string) Ref {
	r, err := ParseRef(f.host() + "/" + s)
	if err != nil {
		f.t.Fatalf("ParseRef: %v", err)
	}
	return r
}

func (f *fakeRegistry) addBlob(repo string, data []byte) ocispec.Descriptor {
	d := digest.FromBytes(data)
	f.mu.Lock()
	f.blobs[d.String()] = data
	f.repoBlobs[repo+"@"+d.String()] = true
	f.mu.Unlock()
	return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: d, Size: int64(len(data))}
}

func (f *fakeRegistry) requests(pattern string) []string {
	re := regexp.MustCompile(pattern)
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, l := range f.log {
		if re.MatchString(l) {
			out = append(out, l)
		}
	}
	return out
}

var (
	fakeBlobRE     = regexp.MustCompile(`^/v2/(.+)/blobs/(sha256:[0-9a-f]{64})$`)
	fakeUploadsRE  = regexp.MustCompile(`^/v2/(.+)/blobs/uploads/$`)
	fakeUploadRE   = regexp.MustCompile(`^/v2/(.+)/blobs/uploads/([0-9]+)$`)
	fakeManifestRE = regexp.MustCompile(`^/v2/(.+)/manifests/([^/]+)$`)
)

func fakeError(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"errors":[{"code":%q,"message":"fake: %s"}]}`, code, strings.ToLower(code))
}

func (f *fakeRegistry) serve(w http.ResponseWriter, r *http.Request) {
	if f.hook != nil && f.hook(w, r) {
		return
	}
	if f.auth != nil && !f.auth(w, r) {
		return
	}
	f.mu.Lock()
	f.log = append(f.log, r.Method+" "+r.URL.Path)
	f.mu.Unlock()
	p := r.URL.Path
	switch {
	case p == "/v2/":
		w.WriteHeader(http.StatusOK)
	case fakeUploadsRE.MatchString(p) && r.Method == http.MethodPost:
		f.startUpload(w, r, fakeUploadsRE.FindStringSubmatch(p)[1])
	case fakeUploadRE.MatchString(p):
		m := fakeUploadRE.FindStringSubmatch(p)
		f.upload(w, r, m[1], m[2])
	case fakeBlobRE.MatchString(p):
		m := fakeBlobRE.FindStringSubmatch(p)
		f.blob(w, r, m[1], m[2])
	case fakeManifestRE.MatchString(p):
		m := fakeManifestRE.FindStringSubmatch(p)
		f.manifest(w, r, m[1], m[2])
	default:
		fakeError(w, http.StatusNotFound, "NAME_UNKNOWN")
	}
}

func (f *fakeRegistry) startUpload(w http.ResponseWriter, r *http.Request, repo string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if d, from := r.URL.Query().Get("mount"), r.URL.Query().Get("from"); d != "" && f.repoBlobs[from+"@"+d] {
		f.repoBlobs[repo+"@"+d] = true
		w.WriteHeader(http.StatusCreated)
		return
	}
	f.nextID++
	id := strconv.Itoa(f.nextID)
	f.uploads[id] = []byte{}
	w.Header().Set("Location", "/v2/"+repo+"/blobs/uploads/"+id)
	w.Header().Set("Range", "0-0")
	w.WriteHeader(http.StatusAccepted)
}

func (f *fakeRegistry) upload(w http.ResponseWriter, r *http.Request, repo, id string) {
	f.mu.Lock()
	data, ok := f.uploads[id]
	f.mu.Unlock()
	if !ok {
		fakeError(w, http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN")
		return
	}
	loc := "/v2/" + repo + "/blobs/uploads/" + id
	switch r.Method {
	case http.MethodGet:
		w.Header().Set("Location", loc)
		w.Header().Set("Range", fmt.Sprintf("0-%d", max(len(data)-1, 0)))
		w.WriteHeader(http.StatusNoContent)
	case http.MethodPatch:
		if cr := r.Header.Get("Content-Range"); cr != "" {
			var start, end int
			if _, err := fmt.Sscanf(cr, "%d-%d", &start, &end); err != nil || start != len(data) {
				fakeError(w, http.StatusRequestedRangeNotSatisfiable, "BLOB_UPLOAD_INVALID")
				return
			}
		}
		// Keep whatever arrives, even when the client goes away mid-body.
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.uploads[id] = append(f.uploads[id], body...)
		n := len(f.uploads[id])
		f.mu.Unlock()
		w.Header().Set("Location", loc)
		w.Header().Set("Range", fmt.Sprintf("0-%d", n-1))
		w.WriteHeader(http.StatusAccepted)
	case http.MethodPut:
		body, _ := io.ReadAll(r.Body)
		data = append(data, body...)
		want := r.URL.Query().Get("digest")
		if digest.FromBytes(data).String() != want {
			fakeError(w, http.StatusBadRequest, "DIGEST_INVALID")
			return
		}
		f.mu.Lock()
		delete(f.uploads, id)
		f.blobs[want] = data
		f.repoBlobs[repo+"@"+want] = true
		f.mu.Unlock()
		w.Header().Set("Docker-Content-Digest", want)
		w.WriteHeader(http.StatusCreated)
	case http.MethodDelete:
		f.mu.Lock()
		delete(f.uploads, id)
		f.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	default:
		fakeError(w, http.StatusMethodNotAllowed, "UNSUPPORTED")
	}
}

func (f *fakeRegistry) blob(w http.ResponseWriter, r *http.Request, repo, d string) {
	f.mu.Lock()
	data, ok := f.blobs[d]
	ok = ok && f.repoBlobs[repo+"@"+d]
	f.mu.Unlock()
	if !ok {
		fakeError(w, http.StatusNotFound, "BLOB_UNKNOWN")
		return
	}
	w.Header().Set("Docker-Content-Digest", d)
	// http.ServeContent implements Range (206, 416) as registries do.
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
}

func (f *fakeRegistry) manifest(w http.ResponseWriter, r *http.Request, repo, ref string) {
	key := repo + ":" + ref
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		f.mu.Lock()
		data, ok := f.manifests[key]
		mt := f.mediaType[key]
		f.mu.Unlock()
		if !ok {
			fakeError(w, http.StatusNotFound, "MANIFEST_UNKNOWN")
			return
		}
		w.Header().Set("Content-Type", mt)
		w.Header().Set("Docker-Content-Digest", digest.FromBytes(data).String())
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		if r.Method == http.MethodGet {
			w.Write(data)
		}
	case http.MethodPut:
		data, _ := io.ReadAll(r.Body)
		d := digest.FromBytes(data).String()
		f.mu.Lock()
		for _, k := range []string{key, repo + ":" + d} {
			f.manifests[k] = data
			f.mediaType[k] = r.Header.Get("Content-Type")
		}
		f.mu.Unlock()
		w.Header().Set("Docker-Content-Digest", d)
		w.WriteHeader(http.StatusCreated)
	default:
		fakeError(w, http.StatusMethodNotAllowed, "UNSUPPORTED")
	}
}

// recordSleep replaces a client's sleeps with a record of them.
type recordSleep struct {
	mu     sync.Mutex
	delays []time.Duration
}

func (s *recordSleep) sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.delays = append(s.delays, d)
	s.mu.Unlock()
	return ctx.Err()
}

func (s *recordSleep) all() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.delays...)
}

// testClient makes a client isolated from the machine's docker config whose retries do not sleep.
func testClient(t testing.TB, opts Options) (*Client, *recordSleep) {
	t.Helper()
	if opts.DockerConfig == "" && opts.Username == "" {
		cfg := filepath.Join(t.TempDir(), "config.json")
		if err := os.WriteFile(cfg, []byte("{}"), 0o600); err != nil {
			t.Fatal(err)
		}
		opts.DockerConfig = cfg
	}
	c, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	rs := &recordSleep{}
	c.sleep = rs.sleep
	t.Cleanup(func() { c.Close() })
	return c, rs
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func noErr(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
}

func readAllClose(rc io.ReadCloser) ([]byte, error) {
	defer rc.Close()
	return io.ReadAll(rc)
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) ^ seed ^ byte(i>>8)
	}
	return b
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
