package kernelfs

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/dfnydus/dfnydus/internal/mountpoint"
)

// mountinfo is read from here; tests may point it elsewhere.
var mountinfo = "/proc/self/mountinfo"

// mountEntry is one line of the mount table: where, what type, from what source.
type mountEntry struct {
	point, fstype, source string
}

// mounts reads this process's mount table (proc(5): ... MOUNTPOINT ... - FSTYPE SOURCE OPTIONS).
func mounts() ([]mountEntry, error) {
	f, err := os.Open(mountinfo)
	if err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	defer f.Close()
	var out []mountEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		before, after, ok := strings.Cut(sc.Text(), " - ")
		fields, tail := strings.Fields(before), strings.Fields(after)
		if !ok || len(fields) < 5 || len(tail) < 2 {
			continue
		}
		out = append(out, mountEntry{point: mountpoint.Unescape(fields[4]), fstype: tail[0], source: mountpoint.Unescape(tail[1])})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	return out, nil
}

// ours reports whether e is the EROFS mount of a kernel-mode mount: its source is a bootstrap
// copy in a work directory.
func (e mountEntry) ours() bool {
	return e.fstype == "erofs" && filepath.Base(e.source) == bootstrapName
}

// viewsDead reports whether the views of the kernel-mode EROFS mount e no longer answer: the
// process serving them is gone (ENOTCONN), or they are not mounted any more.
func (e mountEntry) viewsDead() bool {
	var st unix.Statfs_t
	err := unix.Statfs(filepath.Join(filepath.Dir(e.source), viewDirName), &st)
	return err != nil || st.Type != fuseSuperMagic
}

// fuseSuperMagic is statfs's f_type of FUSE file systems (linux/magic.h).
const fuseSuperMagic = 0x65735546

// Stale reports whether mp shows a kernel-mode mount whose views are dead (their daemon was
// killed): its metadata still answers, but every read of data not cached fails.
func Stale(mp string) bool {
	ms, err := mounts()
	if err != nil {
		return false
	}
	var top *mountEntry
	for i := range ms {
		if ms[i].point == mp {
			top = &ms[i] // later lines are mounted on top of earlier ones
		}
	}
	return top != nil && top.ours() && top.viewsDead()
}

// ClearStale detaches a stale kernel-mode mount at mp (Stale), and reports whether there was one.
// Processes still using it keep it until they leave, with reads failing as before.
func ClearStale(mp string) (bool, error) {
	if !Stale(mp) {
		return false, nil
	}
	if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		return true, fmt.Errorf("detach stale kernel-mode mount %s: %w", mp, err)
	}
	return true, nil
}

// CleanWorkDirs removes what killed processes left under root, the parent of kernel-mode work
// directories: EROFS mounts over a bootstrap there, view mounts there (all detached, since
// their server is gone), and the directories. Call it only while no kernel-mode mount of root
// can be alive (the caller holds what makes it root's only user).
func CleanWorkDirs(root string, log *zap.Logger) error {
	root = filepath.Clean(root)
	ms, err := mounts()
	if err != nil {
		return err
	}
	under := func(p string) bool { return strings.HasPrefix(p, root+"/") }
	var errs []error
	// EROFS mounts first: they hold the view files open.
	for _, pass := range []func(mountEntry) bool{
		func(e mountEntry) bool { return e.ours() && under(e.source) },
		func(e mountEntry) bool { return under(e.point) },
	} {
		for i := len(ms) - 1; i >= 0; i-- {
			e := ms[i]
			if !pass(e) {
				continue
			}
			log.Warn("detaching a mount a killed process left", zap.String("mountpoint", e.point), zap.String("type", e.fstype),
				zap.String("source", e.source))
			if err := unix.Unmount(e.point, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
				errs = append(errs, fmt.Errorf("detach %s: %w", e.point, err))
			}
		}
	}
	entries, err := os.ReadDir(root)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	for _, de := range entries {
		if err := os.RemoveAll(filepath.Join(root, de.Name())); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
