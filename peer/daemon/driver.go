package daemon

import (
	"crypto/sha256"
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

// pickDriver decides how img is served when want is asked for. With auto, a reason not to use
// EROFS is returned with fuse; with erofs it is an error.
func pickDriver(want string, img *rafs.Image) (driver, whyNot string, err error) {
	if want == FSDriverFUSE {
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

// mountKernel mounts the image with the kernel's EROFS over views read through r, in a fresh
// work directory under kernelRoot.
func (d *Daemon) mountKernel(mp string, oi *openedImage, r rafs.ChunkReader, debug bool, log *zap.Logger) (*kernelfs.Server, error) {
	root := d.kernelRoot()
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("mount %s: kernel mode: %w", mp, err)
	}
	sum := sha256.Sum256([]byte(mp))
	dir, err := os.MkdirTemp(root, fmt.Sprintf("%x-", sum[:6]))
	if err != nil {
		return nil, fmt.Errorf("mount %s: kernel mode: %w", mp, err)
	}
	s, err := kernelfs.Mount(mp, dir, oi.img, oi.raw, r, kernelfs.Options{Log: log, Debug: debug})
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err // says "kernel mount MP: ..."
	}
	return s, nil
}

// cleanKernelLeftovers detaches the kernel-mode mounts a killed process left under the cache
// dir and removes their work directories. The store's lock makes this process the cache dir's
// only user, so nothing there is alive.
func (d *Daemon) cleanKernelLeftovers() {
	if err := kernelfs.CleanWorkDirs(d.kernelRoot(), d.log); err != nil && !errors.Is(err, os.ErrNotExist) {
		d.log.Warn("clean kernel-mode leftovers", zap.Error(err))
	}
}
