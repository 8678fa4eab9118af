package netns

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/dfnydus/dfnydus/test/internal/testenv"
)

// RegistryBinary is the registry program (Debian package docker-registry, distribution 2.8).
const RegistryBinary = "docker-registry"

// Registry is a docker-registry serving plain HTTP on a node's address.
type Registry struct {
	Node *Node
	Host string // "ADDR:PORT" on the node

	root   string
	cmd    *exec.Cmd
	done   chan struct{}
	logs   *testenv.LogBuffer
	access *accessLog
}

// Ref is "HOST/repo:tag" (or "HOST/repo" when tag is "").
func (r *Registry) Ref(repo, tag string) string {
	if tag == "" {
		return r.Host + "/" + repo
	}
	return r.Host + "/" + repo + ":" + tag
}

// RootDir is the registry's storage directory.
func (r *Registry) RootDir() string { return r.root }

// Logs is what the registry has printed so far (bounded).
func (r *Registry) Logs() string { return r.logs.String() }

// StartRegistry runs docker-registry in nd's namespace on nd.Addr:port with storage under dir and
// waits until /v2/ answers from inside the node. Stop it with Close.
func StartRegistry(ctx context.Context, nd *Node, port int, dir string) (*Registry, error) {
	bin, err := exec.LookPath(RegistryBinary)
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	host := net.JoinHostPort(nd.Addr.String(), strconv.Itoa(port))
	r := &Registry{Node: nd, Host: host, root: filepath.Join(dir, "storage"), logs: &testenv.LogBuffer{}, done: make(chan struct{})}
	r.access = &accessLog{sent: map[string]int64{}, other: r.logs}
	cfg := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfg, []byte(testenv.RegistryConfigWithAccessLog(r.root, host, "")), 0o600); err != nil {
		return nil, fmt.Errorf("registry config: %w", err)
	}
	r.cmd = nd.Command(context.Background(), bin, "serve", cfg) // lives until Close, not until ctx ends
	r.cmd.Stdout, r.cmd.Stderr = r.access, r.logs
	if err := r.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start registry in %s: %w", nd.Name, err)
	}
	go func() { _ = r.cmd.Wait(); close(r.done) }()
	if err := r.waitReady(ctx); err != nil {
		r.Close()
		return nil, fmt.Errorf("registry on %s: %w\n%s", host, err, r.Logs())
	}
	return r, nil
}

func (r *Registry) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: r.Node.DialContext}}
	defer client.CloseIdleConnections()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.Host+"/v2/", nil)
		if err != nil {
			return err
		}
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-r.done:
			return fmt.Errorf("exited before serving")
		case <-ctx.Done():
			return fmt.Errorf("not answering: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Close stops the registry and waits for it to exit; calling it again does nothing.
func (r *Registry) Close() {
	select {
	case <-r.done:
		return
	default:
	}
	_ = r.cmd.Process.Kill()
	<-r.done
}

// BlobPath is where the registry's filesystem storage keeps the blob with hex sha256 id: for
// measurements that need a blob's bytes without sending them over the registry's link.
func (r *Registry) BlobPath(id string) string {
	return filepath.Join(r.root, "docker/registry/v2/blobs/sha256", id[:2], id, "data")
}

// SentTo is how many response bytes the registry has sent to each client address so far, by its
// access log: what each node cost the registry, including responses a client abandoned.
func (r *Registry) SentTo() map[string]int64 { return r.access.snapshot() }

// accessLog takes the registry's stdout: access-log lines (Apache combined format,
// `IP - - [time] "GET /v2/... HTTP/1.1" 206 4194304 "-" "agent"`) add their byte count to their
// client's total; other lines go to other.
type accessLog struct {
	mu      sync.Mutex
	partial []byte
	sent    map[string]int64
	other   io.Writer
}

var accessLine = regexp.MustCompile(`^(\S+) \S+ \S+ \[[^\]]*\] "[^"]*" \d{3} (\d+)`)

func (a *accessLog) Write(p []byte) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.partial = append(a.partial, p...)
	for {
		i := bytes.IndexByte(a.partial, '\n')
		if i < 0 {
			break
		}
		line := a.partial[:i+1]
		if m := accessLine.FindSubmatch(line); m != nil {
			n, _ := strconv.ParseInt(string(m[2]), 10, 64)
			a.sent[string(m[1])] += n
		} else {
			_, _ = a.other.Write(line)
		}
		a.partial = a.partial[i+1:]
	}
	if len(a.partial) > 64<<10 { // no line is that long: pass it on rather than grow
		_, _ = a.other.Write(a.partial)
		a.partial = nil
	}
	return len(p), nil
}

func (a *accessLog) snapshot() map[string]int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return maps.Clone(a.sent)
}
