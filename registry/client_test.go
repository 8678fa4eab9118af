package registry

import (
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// tokenService is a fake token endpoint: it issues "tok-N" to requests with the right Basic
// credentials (or, with anonymous, to anyone) and records what was asked.
type tokenService struct {
	srv              *httptest.Server
	user, pass       string
	anonymous        bool
	expiresIn        int
	mu               sync.Mutex
	issued           map[string]string // token -> scope it grants
	revoked          map[string]bool
	requests         []tokenReq
	refreshTokenSeen string
}

type tokenReq struct {
	method, user, service, scope string
}

func newTokenService(t *testing.T, user, pass string) *tokenService {
	ts := &tokenService{user: user, pass: pass, expiresIn: 300, issued: map[string]string{}, revoked: map[string]bool{}}
	ts.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ts.mu.Lock()
		defer ts.mu.Unlock()
		u, p, ok := r.BasicAuth()
		scope := strings.Join(r.URL.Query()["scope"], " ")
		if r.Method == http.MethodPost {
			_ = r.ParseForm()
			scope = r.PostForm.Get("scope")
			ts.refreshTokenSeen = r.PostForm.Get("refresh_token")
			u, p, ok = ts.user, ts.pass, r.PostForm.Get("grant_type") == "refresh_token"
		}
		ts.requests = append(ts.requests, tokenReq{r.Method, u, r.URL.Query().Get("service") + r.PostForm.Get("service"), scope})
		if !(ts.anonymous && !ok) && (!ok || u != ts.user || p != ts.pass) {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}`)
			return
		}
		tok := fmt.Sprintf("tok-%d", len(ts.issued)+1)
		if ok {
			ts.issued[tok] = scope
		} else {
			ts.issued[tok] = "" // anonymous tokens grant nothing
		}
		field := "token"
		if r.Method == http.MethodPost {
			field = "access_token"
		}
		fmt.Fprintf(w, `{%q:%q,"expires_in":%d}`, field, tok, ts.expiresIn)
	}))
	t.Cleanup(ts.srv.Close)
	return ts
}

func (ts *tokenService) tokenRequests() []tokenReq {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]tokenReq(nil), ts.requests...)
}

// guard makes f accept only bearer tokens from ts whose scope covers the request's repository.
func (ts *tokenService) guard(f *fakeRegistry) {
	f.auth = func(w http.ResponseWriter, r *http.Request) bool {
		challenge := fmt.Sprintf(`Bearer realm="%s/token",service="fake"`, ts.srv.URL)
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		ts.mu.Lock()
		scope, ok := ts.issued[tok]
		ok = ok && !ts.revoked[tok]
		ts.mu.Unlock()
		if r.URL.Path != "/v2/" {
			repo := strings.SplitN(strings.TrimPrefix(r.URL.Path, "/v2/"), "/blobs/", 2)[0]
			repo = strings.SplitN(repo, "/manifests/", 2)[0]
			ok = ok && strings.Contains(scope, "repository:"+repo+":")
			challenge += fmt.Sprintf(`,scope="repository:%s:pull"`, repo)
		}
		if !ok {
			w.Header().Set("WWW-Authenticate", challenge)
			fakeError(w, http.StatusUnauthorized, "UNAUTHORIZED")
		}
		return ok
	}
}

func TestBearerTokenFlow(t *testing.T) {
	f := newFakeRegistry(t)
	ts := newTokenService(t, "alice", "s3cret")
	ts.guard(f)
	blob := f.addBlob("team/app", pattern(1000, 1))
	c, _ := testClient(t, Options{Username: "alice", Password: "s3cret"})
	repo := f.ref("team/app")

	for i := 0; i < 3; i++ {
		rc, err := c.FetchBlob(testCtx(t), repo, blob)
		noErr(t, err)
		_, err = readAllClose(rc)
		noErr(t, err)
	}
	reqs := ts.tokenRequests()
	if len(reqs) != 1 || reqs[0] != (tokenReq{"GET", "alice", "fake", "repository:team/app:pull"}) {
		t.Fatalf("token requests after 3 pulls: %+v, want one for pull", reqs)
	}

	// Pushing needs another scope, hence another token.
	data := pattern(300, 2)
	desc := f.addBlob("elsewhere", data)
	res, err := c.PushBlob(testCtx(t), repo, desc, strings.NewReader(string(data)), []Ref{f.ref("elsewhere")})
	noErr(t, err)
	if !res.Mounted {
		t.Errorf("push result %+v, want mounted", res)
	}
	reqs = ts.tokenRequests()
	if last := reqs[len(reqs)-1]; last.scope != "repository:elsewhere:pull repository:team/app:pull,push" {
		t.Errorf("mount token scope %q", last.scope)
	}

	// A token the registry stops accepting is replaced once.
	ts.mu.Lock()
	for tok := range ts.issued {
		ts.revoked[tok] = true
	}
	ts.mu.Unlock()
	n := len(ts.tokenRequests())
	_, _, err = c.BlobExists(testCtx(t), repo, blob.Digest)
	noErr(t, err)
	if got := len(ts.tokenRequests()) - n; got != 1 {
		t.Errorf("%d token requests after revocation, want 1", got)
	}
}

func TestBearerTokenExpiry(t *testing.T) {
	f := newFakeRegistry(t)
	ts := newTokenService(t, "alice", "pw")
	ts.expiresIn = 1 // below the 60 s minimum: treated as 60 s
	ts.guard(f)
	blob := f.addBlob("a", pattern(10, 1))
	c, _ := testClient(t, Options{Username: "alice", Password: "pw"})
	for i := 0; i < 2; i++ {
		_, _, err := c.BlobExists(testCtx(t), f.ref("a"), blob.Digest)
		noErr(t, err)
	}
	if n := len(ts.tokenRequests()); n != 1 {
		t.Errorf("%d token requests, want 1 (minimum lifetime)", n)
	}
	// Age the cached token past its lifetime: the next request fetches a new one first.
	hs := c.hosts[f.host()]
	hs.mu.Lock()
	for k, tok := range hs.tokens {
		tok.expires = time.Now().Add(-time.Second)
		hs.tokens[k] = tok
	}
	hs.mu.Unlock()
	_, _, err := c.BlobExists(testCtx(t), f.ref("a"), blob.Digest)
	noErr(t, err)
	if n := len(ts.tokenRequests()); n != 2 {
		t.Errorf("%d token requests after expiry, want 2", n)
	}
	if reqs := f.requests(`^HEAD `); len(reqs) != 3 {
		t.Errorf("registry saw %d HEADs, want 3 (no 401 round trips)", len(reqs))
	}
}

func TestBearerAuthErrors(t *testing.T) {
	f := newFakeRegistry(t)
	ts := newTokenService(t, "alice", "right-password")
	ts.guard(f)
	blob := f.addBlob("a", pattern(10, 1))

	c, _ := testClient(t, Options{Username: "alice", Password: "wrong-password"})
	_, _, err := c.BlobExists(testCtx(t), f.ref("a"), blob.Digest)
	var ae *AuthError
	if !errors.As(err, &ae) || !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("wrong password: %v, want an AuthError", err)
	}
	want := fmt.Sprintf("registry %s: authentication failed for user alice: 401 Unauthorized: UNAUTHORIZED: bad credentials", f.host())
	if !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "password") {
		t.Errorf("error %q: want %q and no password", err, want)
	}

	// Anonymous tokens that grant nothing: the registry's second 401 is "authentication required".
	ts.anonymous = true
	anon, _ := testClient(t, Options{})
	_, _, err = anon.BlobExists(testCtx(t), f.ref("a"), blob.Digest)
	if !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), "authentication required (no credentials configured for "+f.host()+")") {
		t.Errorf("anonymous: %v", err)
	}
}

func TestIdentityTokenUsesOAuthRefresh(t *testing.T) {
	f := newFakeRegistry(t)
	ts := newTokenService(t, "alice", "pw")
	ts.guard(f)
	blob := f.addBlob("a", pattern(10, 1))
	cfg := writeConfig(t, `{"auths":{"`+f.host()+`":{"identitytoken":"my-refresh-token"}}}`)
	c, _ := testClient(t, Options{DockerConfig: cfg})
	_, _, err := c.BlobExists(testCtx(t), f.ref("a"), blob.Digest)
	noErr(t, err)
	reqs := ts.tokenRequests()
	if len(reqs) != 1 || reqs[0].method != http.MethodPost || ts.refreshTokenSeen != "my-refresh-token" ||
		reqs[0].scope != "repository:a:pull" {
		t.Errorf("token requests %+v (refresh token %q), want one OAuth POST", reqs, ts.refreshTokenSeen)
	}
}

func TestBasicAuth(t *testing.T) {
	f := newFakeRegistry(t)
	var mu sync.Mutex
	var sawCreds int
	f.auth = func(w http.ResponseWriter, r *http.Request) bool {
		u, p, ok := r.BasicAuth()
		if ok && u == "bob" && p == "pw" {
			mu.Lock()
			sawCreds++
			mu.Unlock()
			return true
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="fake"`)
		fakeError(w, http.StatusUnauthorized, "UNAUTHORIZED")
		return false
	}
	blob := f.addBlob("a", pattern(10, 1))
	c, _ := testClient(t, Options{Username: "bob", Password: "pw"})
	for i := 0; i < 2; i++ {
		ok, _, err := c.BlobExists(testCtx(t), f.ref("a"), blob.Digest)
		noErr(t, err)
		if !ok {
			t.Fatal("blob not found")
		}
	}
	if reqs := f.requests(`^HEAD `); len(reqs) != 2 {
		t.Errorf("%d HEADs reached the registry, want 2 (credentials sent up front)", len(reqs))
	}

	bad, _ := testClient(t, Options{Username: "bob", Password: "nope"})
	_, _, err := bad.BlobExists(testCtx(t), f.ref("a"), blob.Digest)
	if want := "authentication failed for user bob: 401 Unauthorized"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("wrong password: %v, want %q", err, want)
	}
}

func TestRedirectDropsAuthorizationForOtherHosts(t *testing.T) {
	data := pattern(5000, 3)
	var mu sync.Mutex
	var storageAuth, storageRange []string
	storage := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		storageAuth = append(storageAuth, r.Header.Get("Authorization"))
		storageRange = append(storageRange, r.Header.Get("Range"))
		mu.Unlock()
		http.ServeContent(w, r, "", time.Time{}, strings.NewReader(string(data)))
	}))
	t.Cleanup(storage.Close)
	// "localhost" and "127.0.0.1" are different hosts to an HTTP client.
	storageURL := strings.Replace(storage.URL, "127.0.0.1", "localhost", 1)

	f := newFakeRegistry(t)
	desc := f.addBlob("a", data)
	var regAuth []string
	f.hook = func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") {
			mu.Lock()
			regAuth = append(regAuth, r.Header.Get("Authorization"))
			mu.Unlock()
			http.Redirect(w, r, storageURL+"/signed?sig=x", http.StatusTemporaryRedirect)
			return true
		}
		return false
	}
	f.auth = func(w http.ResponseWriter, r *http.Request) bool {
		if _, _, ok := r.BasicAuth(); !ok {
			w.Header().Set("WWW-Authenticate", `Basic realm="fake"`)
			fakeError(w, http.StatusUnauthorized, "UNAUTHORIZED")
			return false
		}
		return true
	}
	// The hook runs before auth, so teach the client Basic with one request first.
	c, _ := testClient(t, Options{Username: "u", Password: "p"})
	_, _, err := c.BlobExists(testCtx(t), f.ref("a"), desc.Digest)
	noErr(t, err)

	rc, err := c.FetchBlob(testCtx(t), f.ref("a"), desc)
	noErr(t, err)
	got, err := readAllClose(rc)
	noErr(t, err)
	if string(got) != string(data) {
		t.Fatal("redirected blob differs")
	}
	rc, err = c.FetchBlobRange(testCtx(t), f.ref("a"), desc.Digest, 100, 50)
	noErr(t, err)
	got, err = readAllClose(rc)
	noErr(t, err)
	if string(got) != string(data[100:150]) {
		t.Fatal("redirected range differs")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(regAuth) != 2 || !strings.HasPrefix(regAuth[0], "Basic ") {
		t.Errorf("registry saw Authorization %q, want credentials", regAuth)
	}
	for _, a := range storageAuth {
		if a != "" {
			t.Errorf("storage host received Authorization %q", a)
		}
	}
	if len(storageRange) != 2 || storageRange[0] != "" || storageRange[1] != "bytes=100-149" {
		t.Errorf("storage saw Range headers %q, want the range kept across the redirect", storageRange)
	}
}

func TestRetries(t *testing.T) {
	tests := []struct {
		name       string
		retries    int
		statuses   []int // answers before the registry's own
		header     http.Header
		wantErr    string
		wantDelays int
		wantExact  time.Duration // when non-zero, every delay must be this
	}{
		{"500 then ok", 0, []int{500, 500}, nil, "", 2, 0},
		{"502 503 504", 0, []int{502, 503, 504}, nil, "", 3, 0},
		{"429 honours Retry-After", 0, []int{429}, http.Header{"Retry-After": {"7"}}, "", 1, 7 * time.Second},
		{"503 honours Retry-After", 0, []int{503}, http.Header{"Retry-After": {"2"}}, "", 1, 2 * time.Second},
		{"gives up", 2, []int{500, 500, 500, 500}, nil, "500 Internal Server Error", 2, 0},
		{"no retries when disabled", -1, []int{503}, nil, "503 Service Unavailable", 0, 0},
		{"404 is final", 0, []int{404}, nil, "404 Not Found", 0, 0},
		{"400 is final", 0, []int{400}, nil, "400 Bad Request", 0, 0},
		{"501 is final", 0, []int{501}, nil, "501 Not Implemented", 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeRegistry(t)
			blob := f.addBlob("a", pattern(10, 1))
			var mu sync.Mutex
			queue := append([]int(nil), tt.statuses...)
			f.hook = func(w http.ResponseWriter, r *http.Request) bool {
				mu.Lock()
				defer mu.Unlock()
				if r.Method != http.MethodGet || r.URL.Path == "/v2/" || len(queue) == 0 {
					return false
				}
				for k, v := range tt.header {
					w.Header()[k] = v
				}
				fakeError(w, queue[0], "FAKE")
				queue = queue[1:]
				return true
			}
			c, sleeps := testClient(t, Options{Retries: tt.retries})
			rc, err := c.FetchBlob(testCtx(t), f.ref("a"), blob)
			if err == nil {
				_, err = readAllClose(rc)
			}
			if tt.wantErr == "" {
				noErr(t, err)
			} else if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want %q", err, tt.wantErr)
			}
			delays := sleeps.all()
			if len(delays) != tt.wantDelays {
				t.Fatalf("slept %v, want %d retries", delays, tt.wantDelays)
			}
			for _, d := range delays {
				if tt.wantExact != 0 && d != tt.wantExact {
					t.Errorf("slept %v, want %v", d, tt.wantExact)
				}
			}
			if got := c.Stats().Retries; got != int64(tt.wantDelays) {
				t.Errorf("Stats().Retries = %d, want %d", got, tt.wantDelays)
			}
		})
	}
}

func TestSchemeSelection(t *testing.T) {
	t.Run("loopback plain HTTP without asking", func(t *testing.T) {
		f := newFakeRegistry(t)
		blob := f.addBlob("a", pattern(10, 1))
		c, _ := testClient(t, Options{})
		ok, _, err := c.BlobExists(testCtx(t), f.ref("a"), blob.Digest)
		noErr(t, err)
		if !ok || c.hosts[f.host()].scheme != "http" {
			t.Errorf("exists=%v scheme=%q", ok, c.hosts[f.host()].scheme)
		}
	})

	tlsReg := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		http.NotFound(w, r)
	}))
	tlsReg.Config.ErrorLog = log.New(io.Discard, "", 0) // handshake failures are the point
	tlsReg.StartTLS()
	t.Cleanup(tlsReg.Close)
	host := strings.TrimPrefix(tlsReg.URL, "https://")
	ref := Ref{Registry: host, Repository: "a"}
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsReg.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		opts    Options
		wantErr string
	}{
		{"untrusted certificate is an error, not a fallback", Options{}, "certificate"},
		{"CA file", Options{CAFile: ca}, ""},
		{"insecure", Options{Insecure: true}, ""},
		{"plain HTTP to a TLS server fails", Options{PlainHTTP: true}, "400 Bad Request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := testClient(t, tt.opts)
			_, _, err := c.BlobExists(testCtx(t), ref, digest.Digest("sha256:"+strings.Repeat("0", 64)))
			if tt.wantErr == "" {
				noErr(t, err)
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %v, want %q", err, tt.wantErr)
			}
		})
	}

	if _, err := New(Options{CAFile: filepath.Join(t.TempDir(), "missing.pem")}); err == nil {
		t.Error("New with a missing CA file succeeded")
	}
	notPEM := filepath.Join(t.TempDir(), "x.pem")
	_ = os.WriteFile(notPEM, []byte("hello"), 0o600)
	if _, err := New(Options{CAFile: notPEM}); err == nil || !strings.Contains(err.Error(), "no PEM") {
		t.Errorf("New with a non-PEM CA file: %v", err)
	}
}

func TestStatsCountBytes(t *testing.T) {
	f := newFakeRegistry(t)
	data := pattern(12345, 9)
	c, _ := testClient(t, Options{})
	desc := f.addBlob("src", data)
	rc, err := c.FetchBlob(testCtx(t), f.ref("src"), desc)
	noErr(t, err)
	_, err = io.Copy(io.Discard, rc)
	noErr(t, err)
	rc.Close()
	if got := c.Stats().BytesDownloaded; got < int64(len(data)) || got > int64(len(data))+1024 {
		t.Errorf("BytesDownloaded = %d after fetching %d bytes", got, len(data))
	}
	res, err := c.PushBlob(testCtx(t), f.ref("dst"), desc, strings.NewReader(string(data)), nil)
	noErr(t, err)
	if res.BytesUploaded != int64(len(data)) || c.Stats().BytesUploaded != int64(len(data)) {
		t.Errorf("uploaded %d (client total %d), want %d", res.BytesUploaded, c.Stats().BytesUploaded, len(data))
	}
}
