package nydusapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// fakeMounter records mounts; it stands in for LocalMounter in this package's unit tests only.
type fakeMounter struct {
	mu      sync.Mutex
	mounted map[string]*fakeHandle
	fail    error
	auth    string
}

type fakeHandle struct {
	mp   string
	done chan struct{}
}

func (h *fakeHandle) Stats() MountStats {
	return MountStats{Chunks: 10, ChunksCached: 4, ChunkReads: 7, Fetches: 3, BytesPrefetched: 100, StorePath: "/store"}
}
func (h *fakeHandle) Done() <-chan struct{} { return h.done }

func (m *fakeMounter) Mount(_ context.Context, spec MountSpec) (Handle, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return nil, m.fail
	}
	h := &fakeHandle{mp: spec.Mountpoint, done: make(chan struct{})}
	m.mounted[spec.Mountpoint] = h
	return h, nil
}

func (m *fakeMounter) Unmount(_ context.Context, hd Handle) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := hd.(*fakeHandle)
	delete(m.mounted, h.mp)
	close(h.done)
	return nil
}

func (m *fakeMounter) UpdateAuth(_ context.Context, _ Handle, user, pass string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.auth = user + ":" + pass
	return nil
}

func (m *fakeMounter) isMounted(mp string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.mounted[mp]
	return ok
}

// testServer serves a Server on a unix socket and returns a client for it.
func testServer(t *testing.T, fm *fakeMounter) (*Server, *http.Client, chan struct{}) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "api.sock")
	exited := make(chan struct{})
	s := NewServer(ServerOptions{ID: "daemon-1", Mounter: fm, Root: "/mnt/root", Version: BuildInfo{PackageVer: "v1", GitCommit: "abc"},
		Exit: func() { close(exited) }})
	if err := s.Listen(sock); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	return s, c, exited
}

func do(t *testing.T, c *http.Client, method, path, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://unix"+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func mountBody(t *testing.T, config string) string {
	b, err := json.Marshal(MountRequest{FsType: "rafs", Source: "/boot/image.boot", Config: config})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

const localConfig = `{"device":{"backend":{"type":"localfs","config":{"dir":"/blobs"}}}}`

func TestServerDaemonInfoAndStates(t *testing.T) {
	s, c, _ := testServer(t, &fakeMounter{mounted: map[string]*fakeHandle{}})
	for _, st := range []string{StateInit, StateReady, StateRunning} {
		s.SetState(st)
		code, body := do(t, c, http.MethodGet, EndpointDaemon, "")
		var info DaemonInfo
		if err := json.Unmarshal([]byte(body), &info); err != nil || code != http.StatusOK {
			t.Fatalf("GET daemon: %d %s %v", code, body, err)
		}
		want := DaemonInfo{ID: "daemon-1", State: st, Version: BuildInfo{PackageVer: "v1", GitCommit: "abc"}}
		if info != want {
			t.Errorf("daemon info %+v, want %+v", info, want)
		}
	}
}

func TestServerStartMovesReadyToRunning(t *testing.T) {
	tests := []struct {
		from     string
		wantCode int
		want     string
	}{
		{StateReady, http.StatusNoContent, StateRunning},
		{StateRunning, http.StatusNoContent, StateRunning},
		{StateInit, http.StatusConflict, StateInit},
	}
	for _, tc := range tests {
		t.Run(tc.from, func(t *testing.T) {
			s, c, _ := testServer(t, &fakeMounter{mounted: map[string]*fakeHandle{}})
			s.SetState(tc.from)
			if code, body := do(t, c, http.MethodPut, EndpointStart, ""); code != tc.wantCode {
				t.Errorf("PUT start: %d %s, want %d", code, body, tc.wantCode)
			}
			if s.State() != tc.want {
				t.Errorf("state %s, want %s", s.State(), tc.want)
			}
		})
	}
}

func TestServerSharedMounts(t *testing.T) {
	fm := &fakeMounter{mounted: map[string]*fakeHandle{}}
	_, c, _ := testServer(t, fm)
	steps := []struct {
		name, method, path, body string
		wantCode                 int
		wantBody                 string // substring
		wantMounted              bool
	}{
		{"mount", http.MethodPost, EndpointMount + "?mountpoint=/snap1", mountBody(t, localConfig), http.StatusNoContent, "", true},
		{"mount again", http.MethodPost, EndpointMount + "?mountpoint=/snap1", mountBody(t, localConfig), http.StatusConflict, `"code":"AlreadyExists"`, true},
		{"metrics of it", http.MethodGet, EndpointCacheMetrics + "?id=/snap1", "", http.StatusOK, `"entries_count":4`, true},
		{"metrics of another", http.MethodGet, EndpointCacheMetrics + "?id=/snap2", "", http.StatusNotFound, `"code":"NotFound"`, true},
		{"auth update", http.MethodPut, EndpointConfig + "?id=/snap1", `{"registry_auth":"dTpw"}`, http.StatusNoContent, "", true},
		{"umount", http.MethodDelete, EndpointMount + "?mountpoint=/snap1", "", http.StatusNoContent, "", false},
		{"umount again", http.MethodDelete, EndpointMount + "?mountpoint=/snap1", "", http.StatusNotFound, `"code":"NotFound"`, false},
		{"mountpoint escaping the root", http.MethodPost, EndpointMount + "?mountpoint=/../etc", mountBody(t, localConfig), http.StatusBadRequest, "InvalidArgument", false},
		{"unsupported backend", http.MethodPost, EndpointMount + "?mountpoint=/snap3", mountBody(t, `{"device":{"backend":{"type":"oss"}}}`),
			http.StatusBadRequest, `backend type \"oss\"`, false},
		{"not rafs", http.MethodPost, EndpointMount + "?mountpoint=/snap4", `{"fs_type":"erofs","source":"/x","config":"{}"}`,
			http.StatusBadRequest, `"code":"Unsupported"`, false},
		{"takeover", http.MethodPut, EndpointTakeover, "", http.StatusNotImplemented, `recover_policy`, false},
		{"inflight", http.MethodGet, EndpointInflight, "", http.StatusNoContent, "", false},
		{"unknown endpoint", http.MethodGet, "/api/v1/nope", "", http.StatusNotFound, `"code":"NotFound"`, false},
	}
	for _, st := range steps {
		code, body := do(t, c, st.method, st.path, st.body)
		if code != st.wantCode || !strings.Contains(body, st.wantBody) {
			t.Errorf("%s: %d %s, want %d with %s", st.name, code, body, st.wantCode, st.wantBody)
		}
		if got := fm.isMounted("/mnt/root/snap1"); got != st.wantMounted {
			t.Errorf("%s: /mnt/root/snap1 mounted = %v, want %v", st.name, got, st.wantMounted)
		}
	}
	if fm.auth != "u:p" {
		t.Errorf("credentials after the update: %q, want u:p", fm.auth)
	}
}

func TestServerMountFailureIsAnErrorMessage(t *testing.T) {
	fm := &fakeMounter{mounted: map[string]*fakeHandle{}, fail: fmt.Errorf("blob x: %w", ErrAccessDenied)}
	_, c, _ := testServer(t, fm)
	code, body := do(t, c, http.MethodPost, EndpointMount+"?mountpoint=/s", mountBody(t, localConfig))
	var em ErrorMessage
	if err := json.Unmarshal([]byte(body), &em); err != nil || code != http.StatusInternalServerError || em.Code != "AccessDenied" || em.Message == "" {
		t.Errorf("failed mount answered %d %s (%v), want 500 with code AccessDenied", code, body, err)
	}
}

// TestServerMetricsShapes checks the arrays the snapshotter indexes into (pkg/metrics) are full length.
func TestServerMetricsShapes(t *testing.T) {
	fm := &fakeMounter{mounted: map[string]*fakeHandle{}}
	s, c, _ := testServer(t, fm)
	if err := s.Mount(context.Background(), MountSpec{ID: "/", Mountpoint: "/mnt/dedicated"}); err != nil {
		t.Fatal(err)
	}
	_, body := do(t, c, http.MethodGet, EndpointMetrics, "")
	var m FsMetrics
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatal(err)
	}
	if len(m.FopHits) != nFops || len(m.FopErrors) != nFops || len(m.BlockCountRead) != nBlockBuckets || len(m.ReadLatencyDist) != nLatBuckets {
		t.Errorf("metric arrays %d/%d/%d/%d long", len(m.FopHits), len(m.FopErrors), len(m.BlockCountRead), len(m.ReadLatencyDist))
	}
	if m.FopHits[fopRead] != 7 {
		t.Errorf("read hits %d, want 7", m.FopHits[fopRead])
	}
	_, body = do(t, c, http.MethodGet, EndpointCacheMetrics, "")
	var cm CacheMetrics
	if err := json.Unmarshal([]byte(body), &cm); err != nil {
		t.Fatal(err)
	}
	want := CacheMetrics{UnderlyingFiles: []string{}, StorePath: "/store", Total: 7, WholeHits: 4, EntriesCount: 4, PrefetchDataAmount: 100}
	if fmt.Sprint(cm) != fmt.Sprint(want) {
		t.Errorf("cache metrics %+v, want %+v", cm, want)
	}
}

func TestServerExitAndDedicatedMountLoss(t *testing.T) {
	t.Run("PUT exit", func(t *testing.T) {
		_, c, exited := testServer(t, &fakeMounter{mounted: map[string]*fakeHandle{}})
		if code, _ := do(t, c, http.MethodPut, EndpointExit, ""); code != http.StatusNoContent {
			t.Fatalf("PUT exit: %d", code)
		}
		<-exited
	})
	t.Run("the dedicated mount going away", func(t *testing.T) {
		fm := &fakeMounter{mounted: map[string]*fakeHandle{}}
		s, _, exited := testServer(t, fm)
		if err := s.Mount(context.Background(), MountSpec{ID: "/", Mountpoint: "/mnt/d"}); err != nil {
			t.Fatal(err)
		}
		fm.mu.Lock()
		h := fm.mounted["/mnt/d"]
		fm.mu.Unlock()
		close(h.done) // unmounted from outside
		<-exited
	})
}

// TestServerKeepsIdleConnections: the snapshotter holds a connection open and reads its hang-up as
// the daemon's death, so the server must never close an idle one; Close must.
func TestServerKeepsIdleConnections(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	s := NewServer(ServerOptions{Mounter: &fakeMounter{mounted: map[string]*fakeHandle{}}})
	if err := s.Listen(sock); err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if s.http.IdleTimeout != 0 || s.http.ReadTimeout != 0 || s.http.ReadHeaderTimeout != 0 {
		t.Errorf("server has timeouts: idle %v read %v header %v", s.http.IdleTimeout, s.http.ReadTimeout, s.http.ReadHeaderTimeout)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	if _, err := conn.Read(buf); err == nil {
		t.Errorf("read after Close succeeded, want a hang-up (EOF or reset)")
	}
}
