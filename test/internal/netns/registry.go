package netns

import (
	"context"
	"fmt"
	"github.com/dfnydus/dfnydus/test/internal/testenv"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// RegistryBinary is the registry program (Debian package docker-registry, distribution 2.8).
const RegistryBinary = "docker-registry"

// Registry is a docker-registry serving plain HTTP on a node's address.
type Registry struct {
	Node *Node
	Host string // "ADDR:PORT" on the node

	root string
	cmd  *exec.Cmd
	done chan struct{}
	logs *testenv.LogBuffer
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
	cfg := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfg, []byte(testenv.RegistryConfig(r.root, host, "")), 0o600); err != nil {
		return nil, fmt.Errorf("registry config: %w", err)
	}
	r.cmd = nd.Command(context.Background(), bin, "serve", cfg) // lives until Close, not until ctx ends
	r.cmd.Stdout, r.cmd.Stderr = r.logs, r.logs
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
