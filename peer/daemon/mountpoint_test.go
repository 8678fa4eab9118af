package daemon

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/dfnydus/dfnydus/internal/mountpoint"
)

func TestPrepareMountpointRefusesDangerousPlaces(t *testing.T) {
	log := zap.NewNop()
	for _, mp := range []string{"/proc/sys", "/sys", "/dev"} {
		if err := prepareMountpoint(mp, true, log); !errors.Is(err, ErrInvalidRequest) || !errors.Is(err, mountpoint.ErrForbidden) {
			t.Errorf("prepareMountpoint(%s, force) = %v, want ErrInvalidRequest and ErrForbidden", mp, err)
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	mp := filepath.Join(t.TempDir(), "mp")
	if err := os.Mkdir(mp, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", mp, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	defer unix.Unmount(mp, unix.MNT_DETACH)
	if err := prepareMountpoint(mp, false, log); !errors.Is(err, mountpoint.ErrAlreadyMounted) {
		t.Errorf("over a tmpfs: %v, want ErrAlreadyMounted", err)
	}
	if err := prepareMountpoint(mp, true, log); err != nil {
		t.Errorf("over a tmpfs with force: %v", err)
	}
}
