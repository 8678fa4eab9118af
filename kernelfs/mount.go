package kernelfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	gofuse "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/dfnydus/dfnydus/rafs"
)

// Names inside a mount's work directory.
const (
	bootstrapName = "image.boot"
	viewDirName   = "view"
	// viewFSName is the view mount's source in the mount table (its type is fuse.dfnydus-view).
	viewFSName = "dfnydus-view"
)

// maxMountData is what mount(2) copies of its data argument (one page): the device= options of
// every blob must fit.
const maxMountData = 4095

// Options configure a kernel-mode mount.
type Options struct {
	// Log receives the mount's logs; nil means none.
	Log *zap.Logger
	// Debug logs every FUSE request of the views.
	Debug bool
}

// Server is an image mounted with the kernel's EROFS over its views.
type Server struct {
	mountpoint string
	dir        string
	view       *fuse.Server
	fs         *viewFS
	log        *zap.Logger

	gone     chan struct{} // closed once the EROFS mount is gone and the views stopped
	stopOnce sync.Once
}

// Mount mounts img at mountpoint (an existing directory) with the kernel's EROFS: raw is the
// image's v6 bootstrap, copied into workDir (a directory of the caller's, created 0700 and
// removed when the mount is gone) where the views' FUSE mount lives too. File data is read
// through r. img and raw must describe the same image.
func Mount(mountpoint, workDir string, img *rafs.Image, raw []byte, r rafs.ChunkReader, opts Options) (_ *Server, err error) {
	log := opts.Log
	if log == nil {
		log = zap.NewNop()
	}
	if img.Version != 6 {
		return nil, fmt.Errorf("kernel mount %s: %w: the image is RAFS v%d", mountpoint, ErrUnsupported, img.Version)
	}
	views, err := newViews(img)
	if err != nil {
		return nil, fmt.Errorf("kernel mount %s: %w", mountpoint, err)
	}
	if err := os.MkdirAll(workDir, 0o700); err != nil {
		return nil, fmt.Errorf("kernel mount %s: %w", mountpoint, err)
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(workDir)
		}
	}()
	boot := filepath.Join(workDir, bootstrapName)
	if err := os.WriteFile(boot, raw, 0o400); err != nil {
		return nil, fmt.Errorf("kernel mount %s: bootstrap copy: %w", mountpoint, err)
	}
	viewDir := filepath.Join(workDir, viewDirName)
	var devs []string
	for i := range views {
		devs = append(devs, "device="+filepath.Join(viewDir, viewName(i)))
	}
	data := strings.Join(devs, ",")
	if len(data) > maxMountData {
		return nil, fmt.Errorf("kernel mount %s: %w: %d blobs need %d bytes of mount options, more than mount(2) takes",
			mountpoint, ErrUnsupported, len(views), len(data))
	}
	if err := os.Mkdir(viewDir, 0o700); err != nil {
		return nil, fmt.Errorf("kernel mount %s: %w", mountpoint, err)
	}

	fs := newViewFS(views, r, log)
	srv, err := mountViews(viewDir, fs, opts)
	if err != nil {
		return nil, fmt.Errorf("kernel mount %s: views: %w", mountpoint, err)
	}
	s := &Server{mountpoint: mountpoint, dir: workDir, view: srv, fs: fs, log: log, gone: make(chan struct{})}
	if err := unix.Mount(boot, mountpoint, "erofs", unix.MS_RDONLY, data); err != nil {
		s.stopViews(stopUnmount)
		return nil, fmt.Errorf("kernel mount %s: mount(2) erofs %s with %d devices: %w", mountpoint, boot, len(views), err)
	}
	go s.watch()
	return s, nil
}

// ErrUnsupported: the image or the kernel cannot be served in kernel mode.
var ErrUnsupported = errors.New("not supported in kernel mode")

// mountViews serves fs at dir.
func mountViews(dir string, fs *viewFS, opts Options) (*fuse.Server, error) {
	timeout := time.Hour
	mo := fuse.MountOptions{
		Options:  []string{"ro"},
		FsName:   viewFSName,
		Name:     viewFSName,
		MaxWrite: 1 << 20,
		// Only root reaches the directory (0700); EROFS reads the files in the context of
		// whoever reads the image, so the views must not be limited to the mounter.
		AllowOther:       true,
		DirectMount:      true,
		DirectMountFlags: syscall.MS_RDONLY | syscall.MS_NOSUID | syscall.MS_NODEV,
		DisableSplice:    true,
		MaxBackground:    64,
		Debug:            opts.Debug,
		DisableXAttrs:    true,
		// A FUSE mount that negotiates passthrough gets a stacking depth (s_stack_depth 1),
		// and the kernel's EROFS refuses file-backed devices on stacked file systems ("file-
		// backed devices cannot be on stacked fses"): the views must not offer it.
		DisabledCapabilities: fuse.CAP_PASSTHROUGH,
		IgnoreSecurityLabels: true,
	}
	root := &viewRoot{fs: fs}
	nfs := gofuse.NewNodeFS(root, &gofuse.Options{MountOptions: mo, EntryTimeout: &timeout, AttrTimeout: &timeout,
		NegativeTimeout: &timeout, RootStableAttr: &gofuse.StableAttr{Ino: 1, Mode: fuse.S_IFDIR}})
	srv, err := fuse.NewServer(nfs, dir, &mo)
	if err != nil {
		return nil, err
	}
	go srv.Serve()
	if err := srv.WaitMount(); err != nil {
		_ = srv.Unmount()
		return nil, err
	}
	return srv, nil
}

// watch stops the views once the EROFS superblock has closed them (the mount is gone, however
// it went) or the views' connection ended (aborted, or unmounted from outside).
func (s *Server) watch() {
	viewDone := make(chan struct{})
	go func() {
		s.view.Wait()
		close(viewDone)
	}()
	select {
	case <-s.fs.released:
		s.stopViews(stopUnmount)
	case <-viewDone:
		s.stopViews(stopGone)
	}
}

// How stopViews stops the views.
const (
	stopUnmount = iota // nothing reads them any more: unmount
	stopDetach         // a detached EROFS mount may still read them: make its reads fail
	stopGone           // their connection already ended
)

// stopViews stops the views, removes the work directory and closes gone, once.
func (s *Server) stopViews(how int) {
	s.stopOnce.Do(func() {
		viewDir := filepath.Join(s.dir, viewDirName)
		s.fs.stop()
		switch how {
		case stopUnmount:
			if err := s.view.Unmount(); err != nil {
				s.log.Warn("views busy, detaching them", zap.String("views", viewDir), zap.Error(err))
				detachFUSE(viewDir, s.log)
			}
		case stopDetach:
			detachFUSE(viewDir, s.log)
		case stopGone:
			// An outside unmount of the views leaves nothing to do; an aborted connection may
			// leave the mount in the table.
			if err := unix.Unmount(viewDir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
				s.log.Warn("lazy unmount of the views failed", zap.String("views", viewDir), zap.Error(err))
			}
		}
		s.view.Wait()
		if err := os.RemoveAll(s.dir); err != nil {
			s.log.Warn("remove kernel mount work dir", zap.String("dir", s.dir), zap.Error(err))
		}
		close(s.gone)
	})
}

// Mountpoint returns where the image is mounted.
func (s *Server) Mountpoint() string { return s.mountpoint }

// Unmount unmounts the EROFS mount as umount(8) does: a busy mount (a process holds a file or
// sits in a directory) stays mounted and serving, and the error wraps unix.EBUSY. Once the EROFS
// mount is gone the views go too; Unmount returns after that.
func (s *Server) Unmount() error {
	if err := unix.Unmount(s.mountpoint, 0); err != nil {
		if errors.Is(err, unix.EINVAL) && !s.mounted() {
			// Unmounted from outside meanwhile: watch stops the views.
			<-s.gone
			return nil
		}
		return fmt.Errorf("unmount %s: %w", s.mountpoint, err)
	}
	s.stopViews(stopUnmount)
	return nil
}

// Detach takes a busy mount out of the mount table (MNT_DETACH) and stops the views, so that
// its remaining users' reads of data not in the page cache fail with EIO instead of waiting.
func (s *Server) Detach() {
	if err := unix.Unmount(s.mountpoint, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		s.log.Warn("lazy unmount failed", zap.String("mountpoint", s.mountpoint), zap.Error(err))
	}
	s.stopViews(stopDetach)
	<-s.gone
}

// Wait blocks until the mount is gone (Unmount, Detach, or an unmount from outside once its
// last user left) and the views stopped.
func (s *Server) Wait() { <-s.gone }

// mounted reports whether the mountpoint still shows an EROFS mount.
func (s *Server) mounted() bool {
	var st unix.Statfs_t
	return unix.Statfs(s.mountpoint, &st) == nil && st.Type == unix.EROFS_SUPER_MAGIC_V1
}

// detachFUSE detaches the FUSE mount at mp and aborts its connection, so that its pending and
// later reads fail (ENOTCONN, which EROFS passes on as EIO) and its server stops: the state a
// killed daemon leaves, without the process dying.
func detachFUSE(mp string, log *zap.Logger) {
	var st unix.Stat_t
	statErr := unix.Stat(mp, &st)
	if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		log.Warn("lazy unmount failed", zap.String("mountpoint", mp), zap.Error(err))
	}
	if statErr != nil {
		return
	}
	if err := abortFUSE(st.Dev, filepath.Dir(filepath.Dir(mp))); err != nil {
		log.Warn("abort FUSE connection", zap.String("mountpoint", mp), zap.Error(err))
	}
}

// fusectlDir is where fusectl is usually mounted.
const fusectlDir = "/sys/fs/fuse/connections"

// abortFUSE aborts the FUSE connection of the file system with device dev through fusectl. When
// fusectl is not mounted (containers, minimal hosts) it is mounted for the moment in a fresh
// directory under tmp: it has one superblock, so every mount of it shows every connection.
func abortFUSE(dev uint64, tmp string) error {
	// The connection directory is named by the superblock's kernel dev_t (MINORBITS 20).
	name := fmt.Sprint(uint64(unix.Major(dev))<<20 | uint64(unix.Minor(dev)))
	abort := filepath.Join(fusectlDir, name, "abort")
	err := os.WriteFile(abort, []byte("1"), 0)
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		return err
	}
	var sfs unix.Statfs_t
	if unix.Statfs(fusectlDir, &sfs) == nil && sfs.Type == fusectlSuperMagic {
		return nil // mounted, and the connection is gone already
	}
	dir, err := os.MkdirTemp(tmp, "fusectl-")
	if err != nil {
		return fmt.Errorf("abort FUSE connection %s: %w", name, err)
	}
	defer os.Remove(dir)
	if err := unix.Mount("fusectl", dir, "fusectl", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("abort FUSE connection %s: mount fusectl: %w", name, err)
	}
	defer unix.Unmount(dir, unix.MNT_DETACH)
	if err := os.WriteFile(filepath.Join(dir, name, "abort"), []byte("1"), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("abort FUSE connection %s: %w", name, err)
	}
	return nil
}

// fusectlSuperMagic is statfs's f_type of fusectl (linux/magic.h FUSE_CTL_SUPER_MAGIC).
const fusectlSuperMagic = 0x65735543
