package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/dfnydus/dfnydus/fuse"
	"github.com/dfnydus/dfnydus/kernelfs"
	"github.com/dfnydus/dfnydus/rafs"
)

// server is what serves a mount to the kernel: our FUSE file system, or the kernel's EROFS over
// the blobs' views (kernelfs).
type server interface {
	// Unmount unmounts; the FUSE server first cancels the reads in flight, so that a busy mount
	// can let go. A mount that stays busy stays mounted and the error says so.
	Unmount() error
	// Detach takes a busy mount out of the mount table and makes its blocked reads fail.
	Detach(log *zap.Logger)
	// Wait blocks until the mount is gone, however it went.
	Wait()
	// Mounted reports whether the mountpoint still shows a file system of this kind.
	Mounted() bool
	Driver() string
}

type fuseServer struct{ *fuse.Server }

func (s fuseServer) Detach(log *zap.Logger) { forceDetach(s.Mountpoint(), log) }
func (s fuseServer) Mounted() bool          { return isFUSEMount(s.Mountpoint()) }
func (s fuseServer) Driver() string         { return FSDriverFUSE }

type kernelServer struct{ *kernelfs.Server }

func (s kernelServer) Detach(*zap.Logger) { s.Server.Detach() }
func (s kernelServer) Mounted() bool      { return isEROFSMount(s.Mountpoint()) }
func (s kernelServer) Driver() string     { return FSDriverEROFS }

// isEROFSMount reports whether an EROFS file system is mounted at mp.
func isEROFSMount(mp string) bool {
	var st unix.Statfs_t
	return unix.Statfs(mp, &st) == nil && st.Type == unix.EROFS_SUPER_MAGIC_V1
}

// kernelRoot holds the work directories of kernel-mode mounts (bootstrap copy, view mount).
func (d *Daemon) kernelRoot() string { return filepath.Join(d.cfg.CacheDir, "kernel") }

// fsDriverFor is the driver a request asks for: its own, else the config's.
func (d *Daemon) fsDriverFor(req MountRequest) string {
	if req.FSDriver != "" {
		return req.FSDriver
	}
	return d.cfg.FSDriver
}

// CheckFSDriver checks a driver name: fuse, erofs or auto.
func CheckFSDriver(s string) error { return checkFSDriver(s) }

// pickDriver decides how img is served when want is asked for. With auto, a reason not to use
// EROFS is returned with fuse; with erofs it is an error.
func pickDriver(want string, img *rafs.Image) (driver, whyNot string, err error) {
	if want == FSDriverFUSE || want == "" {
		return FSDriverFUSE, "", nil
	}
	why := ""
	if img.Version != 6 {
		why = fmt.Sprintf("the image is RAFS v%d; the kernel's EROFS reads v6 only", img.Version)
	} else if err := kernelfs.Supported(); err != nil {
		why = err.Error()
	}
	switch {
	case why == "":
		return FSDriverEROFS, "", nil
	case want == FSDriverEROFS:
		return "", "", fmt.Errorf("%w: fs driver erofs: %s", ErrInvalidRequest, why)
	}
	return FSDriverFUSE, why, nil
}

// KernelMount serves img at mp with the kernel's EROFS when want (fuse, erofs or auto; "" is
// fuse) and the image and the kernel allow it, its work directory under root, file data read
// through r; raw is img's bootstrap as stored. It is the one place the daemon and the nydusd
// front decide and set up kernel mode. A nil server means FUSE is to serve the mount; whyNot then
// says why EROFS was not used under auto ("" when fuse was asked). Under erofs, whatever
// prevents kernel mode is an error, naming the mountpoint.
func KernelMount(want, root, mp string, img *rafs.Image, raw []byte, r rafs.ChunkReader, opts kernelfs.Options) (_ *kernelfs.Server, whyNot string, _ error) {
	driver, whyNot, err := pickDriver(want, img)
	if err != nil {
		return nil, "", fmt.Errorf("mount %s: %w", mp, err)
	}
	if driver != FSDriverEROFS {
		return nil, whyNot, nil
	}
	ks, err := kernelfs.MountIn(root, mp, img, raw, r, opts)
	switch {
	case err == nil:
		return ks, "", nil
	case want == FSDriverEROFS:
		return nil, "", err
	}
	return nil, err.Error(), nil
}

// cleanKernelLeftovers detaches the kernel-mode mounts a killed process left under the cache
// dir and removes their work directories. The store's lock makes this process the cache dir's
// only user, so nothing there is alive.
func (d *Daemon) cleanKernelLeftovers() {
	if err := kernelfs.CleanWorkDirs(d.kernelRoot(), d.log); err != nil && !errors.Is(err, os.ErrNotExist) {
		d.log.Warn("clean kernel-mode leftovers", zap.Error(err))
	}
}
