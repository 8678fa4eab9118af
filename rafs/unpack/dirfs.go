package unpack

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/dfnydus/dfnydus/rafs"
	"golang.org/x/sys/unix"
)

// The helpers in this file create and adjust entries strictly relative to directory file
// descriptors, never through a path that the kernel would resolve through a symlink: a name is
// always a single component (checked by the plan) and the final component is never followed.

const dirOpenFlags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC

// openOut creates out if it is missing, checks that it is an empty directory and not a symlink,
// and returns it open.
func openOut(out string) (*os.File, error) {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, fmt.Errorf("create output directory: %w", err)
	}
	fd, err := unix.Open(out, dirOpenFlags, 0)
	if err != nil {
		return nil, fmt.Errorf("open output directory %s: %w", out, err)
	}
	f := os.NewFile(uintptr(fd), out)
	names, err := f.Readdirnames(1)
	if err != nil && len(names) == 0 && !errors.Is(err, io.EOF) {
		f.Close()
		return nil, fmt.Errorf("read output directory %s: %w", out, err)
	}
	if len(names) > 0 {
		f.Close()
		return nil, fmt.Errorf("output directory %s is not empty (it holds %q)", out, names[0])
	}
	return f, nil
}

// mkdirAt creates directory name in dirfd and opens it.
func mkdirAt(dirfd int, name string) (int, error) {
	if err := unix.Mkdirat(dirfd, name, 0o700); err != nil {
		return -1, fmt.Errorf("mkdir: %w", err)
	}
	fd, err := unix.Openat(dirfd, name, dirOpenFlags, 0)
	if err != nil {
		return -1, fmt.Errorf("open directory: %w", err)
	}
	return fd, nil
}

// openDirChain opens the directory reached from root by the given names, one component at a time,
// refusing symlinks at every step.
func openDirChain(root int, names []string) (int, error) {
	fd, err := unix.Openat(root, ".", dirOpenFlags, 0)
	if err != nil {
		return -1, err
	}
	for _, n := range names {
		next, err := unix.Openat(fd, n, dirOpenFlags, 0)
		unix.Close(fd)
		if err != nil {
			return -1, fmt.Errorf("open %s: %w", n, err)
		}
		fd = next
	}
	return fd, nil
}

// createFile creates regular file name in dirfd; it must not exist yet (O_EXCL never follows).
func createFile(dirfd int, name string) (int, error) {
	fd, err := unix.Openat(dirfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return -1, fmt.Errorf("create: %w", err)
	}
	return fd, nil
}

// pwriteAll writes all of b at off.
func pwriteAll(fd int, b []byte, off int64) error {
	for len(b) > 0 {
		n, err := unix.Pwrite(fd, b, off)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return err
		}
		if n == 0 {
			return errors.New("short write")
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

// mknodAt creates a device, fifo or socket.
func mknodAt(dirfd int, name string, ino *rafs.Inode) error {
	if err := unix.Mknodat(dirfd, name, ino.Mode&(rafs.SIFMT|0o7777), int(ino.Rdev)); err != nil {
		return fmt.Errorf("mknod: %w", err)
	}
	return nil
}

// setMetaFD applies owner, mode and xattrs to an open file or directory, in the order that keeps
// them all: chown first (it clears setuid/setgid and file capabilities), then chmod, then xattrs.
func setMetaFD(fd int, ino *rafs.Inode) error {
	if err := unix.Fchown(fd, int(ino.UID), int(ino.GID)); err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	if err := unix.Fchmod(fd, ino.Mode&0o7777); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	for _, x := range ino.Xattrs {
		if err := unix.Fsetxattr(fd, x.Name, x.Value, 0); err != nil {
			return fmt.Errorf("set xattr %s: %w", x.Name, err)
		}
	}
	return nil
}

// setMetaAt applies owner, mode (except on symlinks) and xattrs to name in dirfd without following
// it. It is used for entries that cannot be opened safely: symlinks, devices, fifos, sockets.
func setMetaAt(dirfd int, name string, ino *rafs.Inode) error {
	if err := unix.Fchownat(dirfd, name, int(ino.UID), int(ino.GID), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	if !ino.IsSymlink() {
		// name was just created by mknodat, so it is not a symlink and following it is moot.
		if err := unix.Fchmodat(dirfd, name, ino.Mode&0o7777, 0); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	if len(ino.Xattrs) > 0 {
		// /proc/self/fd/N is the directory dirfd itself (a magic link, not a path walk); the l*
		// call then does not follow name.
		p := "/proc/self/fd/" + strconv.Itoa(dirfd) + "/" + name
		for _, x := range ino.Xattrs {
			if err := unix.Lsetxattr(p, x.Name, x.Value, 0); err != nil {
				return fmt.Errorf("set xattr %s: %w", x.Name, err)
			}
		}
	}
	return nil
}

// setMtimeAt sets the access and modification times of name in dirfd (the directory itself for
// "."), never following a symlink.
func setMtimeAt(dirfd int, name string, ino *rafs.Inode) error {
	t := unix.Timespec{Sec: int64(ino.Mtime), Nsec: int64(ino.MtimeNsec)}
	if err := unix.UtimesNanoAt(dirfd, name, []unix.Timespec{t, t}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set mtime: %w", err)
	}
	return nil
}
