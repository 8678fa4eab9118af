package peer

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/dfnydus/dfnydus/internal/sockutil"
)

// SocketPath is where the mount serving mountpoint answers its API, under the cache dir: a short
// name derived from the absolute mountpoint, so `dfnydus stat MOUNTPOINT` finds it.
func SocketPath(cacheDir, mountpoint string) string {
	abs, err := filepath.Abs(mountpoint)
	if err != nil {
		abs = mountpoint
	}
	sum := sha256.Sum256([]byte(filepath.Clean(abs)))
	return filepath.Join(cacheDir, "run", fmt.Sprintf("%x.sock", sum[:8]))
}

// MountInfo is what GET /api/v1/stat returns.
type MountInfo struct {
	Mountpoint string    `json:"mountpoint"`
	PID        int       `json:"pid"`
	Started    time.Time `json:"started"`
	Images     []Stats   `json:"images"`
}

// APIServer serves /api/v1/stat (JSON) and /metrics on a unix socket.
type APIServer struct {
	srv  *http.Server
	ln   net.Listener
	path string
}

// ServeAPI starts the API on a unix socket at path (a stale socket file is replaced).
func ServeAPI(path, mountpoint string, images func() []*Image, reg *prometheus.Registry) (*APIServer, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("api socket dir: %w", err)
	}
	// 0600 from the moment it exists, whatever the umask; a stale socket is replaced atomically.
	ln, err := sockutil.Listen(path)
	if err != nil {
		return nil, fmt.Errorf("api socket: %w", err)
	}
	started := time.Now()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/stat", func(w http.ResponseWriter, _ *http.Request) {
		info := MountInfo{Mountpoint: mountpoint, PID: os.Getpid(), Started: started}
		for _, im := range images() {
			info.Images = append(info.Images, im.Stats())
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(info)
	})
	if reg != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	}
	s := &APIServer{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, ln: ln, path: path}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// Close stops the API and removes the socket.
func (s *APIServer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	os.Remove(s.path)
	return err
}

// QueryStat asks the mount behind socket for its stats.
func QueryStat(ctx context.Context, socket string) (*MountInfo, error) {
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://dfnydus/api/v1/stat", nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("no dfnydus mount answers at %s: %w", socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("stat: %s", resp.Status)
	}
	var info MountInfo
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		return nil, fmt.Errorf("stat: %w", err)
	}
	return &info, nil
}
