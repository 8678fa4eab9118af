package peer

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
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

// ErrNoMountAPI is wrapped by QueryStat and RequestUmount when nothing answers on the socket: no
// mount of a process using that cache dir is at that mountpoint.
var ErrNoMountAPI = errors.New("no dfnydus mount answers")

// APIServer serves GET /api/v1/stat (JSON), POST /api/v1/umount and GET /metrics on a unix socket.
type APIServer struct {
	srv  *http.Server
	ln   net.Listener
	path string
}

// ServeAPI starts the API on a unix socket at path (a stale socket file is replaced). umount, when
// not nil, unmounts the mount (not waiting for it to be released: releasing it closes this API,
// which waits for the request in flight); its error goes back to the caller, with 409 Conflict
// for a busy mount (EBUSY).
func ServeAPI(path, mountpoint string, images func() []*Image, reg *prometheus.Registry, umount func(context.Context) error) (*APIServer, error) {
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
	if umount != nil {
		mux.HandleFunc("POST /api/v1/umount", func(w http.ResponseWriter, r *http.Request) {
			if err := umount(r.Context()); err != nil {
				code := http.StatusInternalServerError
				if errors.Is(err, syscall.EBUSY) {
					code = http.StatusConflict
				}
				http.Error(w, err.Error(), code)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		})
	}
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

// apiClient talks HTTP to the mount API on socket.
func apiClient(socket string) *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}}
}

// QueryStat asks the mount behind socket for its stats.
func QueryStat(ctx context.Context, socket string) (*MountInfo, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://dfnydus/api/v1/stat", nil)
	if err != nil {
		return nil, err
	}
	resp, err := apiClient(socket).Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w at %s: %w", ErrNoMountAPI, socket, err)
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

// RequestUmount asks the mount behind socket to unmount itself, as the process serving it does
// it (through fusermount when that process is not root), and waits until the mount is released,
// which removes the socket: a start trace the mount records is written by then. It wraps
// ErrNoMountAPI when nothing answers on socket.
func RequestUmount(ctx context.Context, socket string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://dfnydus/api/v1/umount", nil)
	if err != nil {
		return err
	}
	resp, err := apiClient(socket).Do(req)
	if err != nil {
		return fmt.Errorf("%w at %s: %w", ErrNoMountAPI, socket, err)
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNotFound, http.StatusMethodNotAllowed:
		return fmt.Errorf("%w at %s to umount: its API has none (an older dfnydus)", ErrNoMountAPI, socket)
	case http.StatusNoContent:
	default:
		if text := strings.TrimSpace(string(msg)); text != "" {
			return errors.New(text)
		}
		return fmt.Errorf("umount: %s", resp.Status)
	}
	for {
		if _, err := os.Lstat(socket); errors.Is(err, os.ErrNotExist) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("unmounted, but the mount was not released in time: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
