package registry

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// headerRecorder is a server that records the Authorization headers it receives.
type headerRecorder struct {
	srv  *httptest.Server
	mu   sync.Mutex
	auth []string
}

func newHeaderRecorder(t *testing.T, tls bool) *headerRecorder {
	h := &headerRecorder{}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.auth = append(h.auth, r.Header.Get("Authorization"))
		h.mu.Unlock()
		_, _ = w.Write([]byte("stolen"))
	})
	if tls {
		h.srv = httptest.NewTLSServer(handler)
	} else {
		h.srv = httptest.NewServer(handler)
	}
	t.Cleanup(h.srv.Close)
	return h
}

func (h *headerRecorder) requests() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.auth...)
}

// tlsRegistry is an https registry that asks for Basic credentials and redirects every blob GET
// to target.
func tlsRegistry(t *testing.T, target func(r *http.Request) string) *httptest.Server {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, _, ok := r.BasicAuth(); !ok {
			w.Header().Set("WWW-Authenticate", `Basic realm="fake"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if r.URL.Path == "/v2/" {
			return
		}
		http.Redirect(w, r, target(r), http.StatusTemporaryRedirect)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func fetchAll(t *testing.T, c *Client, host string) error {
	t.Helper()
	desc := ocispec.Descriptor{Digest: digest.FromString("x"), Size: 1}
	rc, err := c.FetchBlob(testCtx(t), Ref{Registry: host, Repository: "a"}, desc)
	if err != nil {
		return err
	}
	_, err = readAllClose(rc)
	return err
}

// A blob redirect from https to plain http is refused: nothing is sent to the http target.
func TestRedirectHTTPSToHTTPRefused(t *testing.T) {
	target := newHeaderRecorder(t, false)
	reg := tlsRegistry(t, func(*http.Request) string { return target.srv.URL + "/blob" })
	c, _ := testClient(t, Options{Insecure: true, Username: "u", Password: "p"})
	err := fetchAll(t, c, strings.TrimPrefix(reg.URL, "https://"))
	if !errors.Is(err, ErrRedirect) {
		t.Fatalf("fetch through an https->http redirect: %v, want ErrRedirect", err)
	}
	if got := target.requests(); len(got) != 0 {
		t.Errorf("the http target received %d requests", len(got))
	}
}

// Credentials stay with the registry: an https redirect to another host gets none.
func TestRedirectToOtherHostGetsNoCredentials(t *testing.T) {
	target := newHeaderRecorder(t, true)
	otherHost := strings.Replace(target.srv.URL, "127.0.0.1", "localhost", 1)
	reg := tlsRegistry(t, func(*http.Request) string { return otherHost + "/blob" })
	c, _ := testClient(t, Options{Insecure: true, Username: "u", Password: "p"})
	_ = fetchAll(t, c, strings.TrimPrefix(reg.URL, "https://")) // the content does not match: fine
	got := target.requests()
	if len(got) == 0 {
		t.Fatal("the redirect was not followed")
	}
	for _, a := range got {
		if a != "" {
			t.Errorf("the redirect target received Authorization %q", a)
		}
	}
}

func TestRedirectChainCapped(t *testing.T) {
	var n atomic.Int32
	var reg *httptest.Server
	reg = tlsRegistry(t, func(r *http.Request) string {
		n.Add(1)
		return reg.URL + r.URL.Path + "x"
	})
	c, _ := testClient(t, Options{Insecure: true, Username: "u", Password: "p", Retries: -1})
	if err := fetchAll(t, c, strings.TrimPrefix(reg.URL, "https://")); !errors.Is(err, ErrRedirect) {
		t.Fatalf("fetch through endless redirects: %v, want ErrRedirect", err)
	}
	if got := n.Load(); got > maxRedirects+1 {
		t.Errorf("followed %d redirects, cap %d", got, maxRedirects)
	}
}

// Explicit credentials scoped to one registry are not sent to another one.
func TestCredentialHostScopesExplicitCredentials(t *testing.T) {
	f := newFakeRegistry(t)
	var mu sync.Mutex
	var sawAuth []string
	f.auth = func(w http.ResponseWriter, r *http.Request) bool {
		mu.Lock()
		sawAuth = append(sawAuth, r.Header.Get("Authorization"))
		mu.Unlock()
		if _, _, ok := r.BasicAuth(); ok {
			return true
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="fake"`)
		fakeError(w, http.StatusUnauthorized, "UNAUTHORIZED")
		return false
	}
	blob := f.addBlob("a", pattern(10, 1))
	other, _ := testClient(t, Options{Username: "bob", Password: "pw", CredentialHost: "registry.example.com"})
	if _, _, err := other.BlobExists(testCtx(t), f.ref("a"), blob.Digest); err == nil {
		t.Fatal("BlobExists succeeded without credentials")
	}
	mu.Lock()
	for _, a := range sawAuth {
		if a != "" {
			t.Errorf("credentials for another registry were sent: %q", a)
		}
	}
	mu.Unlock()
	own, _ := testClient(t, Options{Username: "bob", Password: "pw", CredentialHost: f.host()})
	if ok, _, err := own.BlobExists(testCtx(t), f.ref("a"), blob.Digest); err != nil || !ok {
		t.Fatalf("BlobExists with the registry's own credentials: %v, %v", ok, err)
	}
}
