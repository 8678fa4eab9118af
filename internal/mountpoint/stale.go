package mountpoint

import (
	"errors"

	"golang.org/x/sys/unix"
)

// Stale reports whether mp is a FUSE mount whose server is gone (a killed daemon): its file system
// answers ENOTCONN or ECONNABORTED. statfs, unlike stat, is never answered from the kernel's
// attribute cache, so a dead connection shows even while the root's attributes are cached.
func Stale(mp string) bool {
	var st unix.Statfs_t
	err := unix.Statfs(mp, &st)
	return errors.Is(err, unix.ENOTCONN) || errors.Is(err, unix.ECONNABORTED)
}

// ClearStale detaches a stale mount at mp; it reports whether there was one.
func ClearStale(mp string) (bool, error) {
	if !Stale(mp) {
		return false, nil
	}
	if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil {
		return true, err
	}
	return true, nil
}
