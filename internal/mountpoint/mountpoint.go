// Package mountpoint decides whether a directory may receive a dfnydus mount. Mounting over /proc,
// /sys or /dev hides what the whole host relies on, and mounting over an existing mount point hides
// a file system (another image, a volume) from everything that uses it; both are usually a typo or
// a confused caller, so they are refused unless the caller insists (--force), and the pseudo file
// systems always.
package mountpoint

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ErrForbidden: the mountpoint is /proc, /sys, /dev or inside one of them.
var ErrForbidden = errors.New("mountpoint is inside /proc, /sys or /dev")

// ErrAlreadyMounted: something is already mounted exactly there (use force to mount over it).
var ErrAlreadyMounted = errors.New("mountpoint already is a mount point")

// forbidden are the trees no image may be mounted over, whatever the caller says.
var forbidden = []string{"/proc", "/sys", "/dev"}

// mountinfo is read from here; tests point it at a fixture.
var mountinfo = "/proc/self/mountinfo"

// Check resolves mp's symlinks and refuses it when it lies in a forbidden tree, or when it already
// is a mount point and force is false. A mountpoint that does not exist yet is judged by its
// nearest existing ancestor (it is then no mount point). It returns the resolved path.
func Check(mp string, force bool) (string, error) {
	abs, err := filepath.Abs(mp)
	if err != nil {
		return "", fmt.Errorf("mountpoint %s: %w", mp, err)
	}
	resolved, err := resolve(abs)
	if err != nil {
		return "", fmt.Errorf("mountpoint %s: %w", mp, err)
	}
	for _, f := range forbidden {
		if resolved == f || strings.HasPrefix(resolved, f+"/") {
			return "", fmt.Errorf("%w: %s (resolves to %s)", ErrForbidden, mp, resolved)
		}
	}
	if force {
		return resolved, nil
	}
	mounted, err := IsMountPoint(resolved)
	if err != nil {
		return "", err
	}
	if mounted {
		return "", fmt.Errorf("%w: %s has a file system mounted on it already; mounting over it would hide it (pass --force to do it anyway)", ErrAlreadyMounted, resolved)
	}
	return resolved, nil
}

// resolve is filepath.EvalSymlinks for a path whose last components may not exist yet.
func resolve(p string) (string, error) {
	r, err := filepath.EvalSymlinks(p)
	if err == nil {
		return r, nil
	}
	if !errors.Is(err, os.ErrNotExist) || p == "/" {
		return "", err
	}
	parent, err := resolve(filepath.Dir(p))
	if err != nil {
		return "", err
	}
	return filepath.Join(parent, filepath.Base(p)), nil
}

// IsMountPoint reports whether the resolved absolute path p is the mount point of an entry of this
// process's mount table (field 5 of /proc/self/mountinfo, proc(5)).
func IsMountPoint(p string) (bool, error) {
	f, err := os.Open(mountinfo)
	if err != nil {
		return false, fmt.Errorf("read mount table: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && Unescape(fields[4]) == p {
			return true, nil
		}
	}
	if err := sc.Err(); err != nil {
		return false, fmt.Errorf("read mount table: %w", err)
	}
	return false, nil
}

// Unescape undoes the kernel's octal escapes of space, tab, newline and backslash in mountinfo
// paths (fs/proc_namespace.c show_mountinfo, seq_path with " \t\n\\").
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
