package edge_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/dfnydus/dfnydus/peer/daemon"
	"github.com/dfnydus/dfnydus/test/internal/testenv"
)

// peerProc is a running `dfnydus daemon` with P2P on.
type peerProc struct {
	cmd                   *exec.Cmd
	socket                string
	uploadAddr, pieceAddr string
	uploadPort, piecePort int
	stderr                *testenv.LogBuffer
	done                  chan struct{}
	stopOnce              sync.Once
}

var (
	portsMu sync.Mutex
	used    = map[int]bool{}
)

// freePort is a loopback port nothing listens on (and that this process has not handed out).
func freePort(t *testing.T) int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !used[p] {
			used[p] = true
			return p
		}
	}
	t.Fatal("no free port")
	return 0
}

// startPeer runs `dfnydus daemon` with the scheduler at sched; extra is YAML appended to the
// config (an upload: section, registry options, ...).
func startPeer(t *testing.T, sched string, seed bool, schedExtra, extra string) *peerProc {
	t.Helper()
	dir := t.TempDir()
	sockDir, err := os.MkdirTemp("", "dfd-edge-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	p := &peerProc{socket: filepath.Join(sockDir, "control.sock"), uploadPort: freePort(t), piecePort: freePort(t),
		stderr: &testenv.LogBuffer{}, done: make(chan struct{})}
	p.uploadAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(p.uploadPort))
	p.pieceAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(p.piecePort))
	cfg := filepath.Join(dir, "dfnydus.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`cacheDir: %s
controlSocket: %s
prefetch: {mode: off}
registry: {plainHTTP: true}
log: {level: debug}
scheduler:
  addrs: [%q]
  seed: %v
  advertiseIP: 127.0.0.1
  hostname: edge-%d
  uploadPort: %d
  piecePort: %d
%s
%s`, filepath.Join(dir, "cache"), p.socket, sched, seed, p.uploadPort, p.uploadPort, p.piecePort, schedExtra, extra)), 0o644); err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(testenv.Binary(t), "daemon", "--config", cfg)
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("daemon log (tail):\n%s", tail(p.stderr.String(), 60))
		}
	})
	c, err := daemon.Dial(p.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := c.Version(context.Background()); err == nil {
			if nc, err := net.Dial("tcp", p.pieceAddr); err == nil {
				nc.Close()
				return p
			}
		}
		select {
		case <-p.done:
			t.Fatalf("dfnydus daemon exited\n%s", p.stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("dfnydus daemon does not answer\n%s", p.stderr.String())
		}
	}
}

func (p *peerProc) stop() {
	p.stopOnce.Do(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(20 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
}

var vmRSS = regexp.MustCompile(`(?m)^VmRSS:\s+(\d+) kB`)

// rss is the daemon's resident set size in bytes.
func (p *peerProc) rss(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	m := vmRSS.FindSubmatch(b)
	if m == nil {
		t.Fatalf("no VmRSS in /proc/%d/status", p.cmd.Process.Pid)
	}
	kb, _ := strconv.ParseInt(string(m[1]), 10, 64)
	return kb << 10
}

// dialUpload connects to the peer's upload port from the loopback address local.
func (p *peerProc) dialUpload(t *testing.T, local string) *grpc.ClientConn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	cc, err := grpc.NewClient(p.uploadAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return d.DialContext(ctx, "tcp", a) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// origin is a plain-HTTP registry serving a few blobs; it counts every request it receives, and
// records the Authorization headers.
type origin struct {
	srv      *httptest.Server
	blobs    map[digest.Digest][]byte
	requests atomic.Int32
}

func newOrigin(t *testing.T, blobs ...[]byte) *origin {
	o := &origin{blobs: map[digest.Digest][]byte{}}
	for _, b := range blobs {
		o.blobs[digest.FromBytes(b)] = b
	}
	o.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.requests.Add(1)
		if r.URL.Path == "/v2/" {
			return
		}
		i := strings.LastIndex(r.URL.Path, "/blobs/")
		b, ok := o.blobs[digest.Digest(r.URL.Path[i+len("/blobs/"):])]
		if i < 0 || !ok {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, "", time.Time{}, strings.NewReader(string(b)))
	}))
	t.Cleanup(o.srv.Close)
	return o
}

// blobURL is the URL of blob b in repository "edge/app" on the origin.
func (o *origin) blobURL(b []byte) string {
	return o.srv.URL + "/v2/edge/app/blobs/" + digest.FromBytes(b).String()
}
