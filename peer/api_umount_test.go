package peer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// RequestUmount asks the mount's own API to unmount it and returns once the mount is released
// (its socket gone); a busy mount's refusal comes back as it is; nothing answering, or an API
// without umount, is ErrNoMountAPI, so that the caller can unmount plainly instead.
func TestRequestUmount(t *testing.T) {
	busy := fmt.Errorf("umount /mnt: %w (a process has a file open or its working directory there)", syscall.EBUSY)
	tests := []struct {
		name    string
		serve   string // "umount": serve with the umount below; "none": without umount; "stale": socket file, no server; "absent": no socket
		umount  func(s **APIServer) error
		timeout time.Duration
		want    string // "" for success; ErrNoMountAPI's text for that error; else a substring
	}{
		{"released", "umount", func(s **APIServer) error { go (*s).Close(); return nil }, time.Minute, ""},
		{"busy", "umount", func(**APIServer) error { return busy }, time.Minute, "device or resource busy (a process has a file open"},
		{"unmounted but never released", "umount", func(**APIServer) error { return nil }, 200 * time.Millisecond, "not released in time"},
		{"an API without umount", "none", nil, time.Minute, ErrNoMountAPI.Error()},
		{"a socket left by a killed process", "stale", nil, time.Minute, ErrNoMountAPI.Error()},
		{"no socket", "absent", nil, time.Minute, ErrNoMountAPI.Error()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "m.sock")
			var s *APIServer
			switch tc.serve {
			case "umount", "none":
				var umount func(context.Context) error
				if tc.umount != nil {
					umount = func(context.Context) error { return tc.umount(&s) }
				}
				var err error
				if s, err = ServeAPI(sock, "/mnt", func() []*Image { return nil }, nil, umount); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { s.Close() })
			case "stale":
				ln, err := net.Listen("unix", sock)
				if err != nil {
					t.Fatal(err)
				}
				ln.(*net.UnixListener).SetUnlinkOnClose(false)
				ln.Close()
			}
			ctx, cancel := context.WithTimeout(context.Background(), tc.timeout)
			defer cancel()
			err := RequestUmount(ctx, sock)
			switch {
			case tc.want == "":
				if err != nil {
					t.Fatal(err)
				}
				if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("returned before the socket went: %v", err)
				}
			case tc.want == ErrNoMountAPI.Error():
				if !errors.Is(err, ErrNoMountAPI) {
					t.Errorf("error %v, want one wrapping %v", err, ErrNoMountAPI)
				}
			default:
				if err == nil || errors.Is(err, ErrNoMountAPI) || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("error %v, want one saying %q (not %v)", err, tc.want, ErrNoMountAPI)
				}
			}
		})
	}
}
