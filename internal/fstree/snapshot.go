package fstree

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"

	"golang.org/x/sys/unix"
)

// Snapshot walks the directory root without following symlinks and records every entry, keyed by
// its absolute path inside root ("/" is root itself).
func Snapshot(root string, opts Options) (map[string]Entry, error) {
	s := snapshotter{root: root, opts: opts, m: map[string]Entry{}, inodes: map[inodeKey][]string{}}
	var st unix.Stat_t
	if err := unix.Lstat(root, &st); err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", root, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return nil, fmt.Errorf("snapshot %s: not a directory", root)
	}
	if err := s.walk("/", &st); err != nil {
		return nil, err
	}
	groups := make([][]string, 0, len(s.inodes))
	for _, g := range s.inodes {
		groups = append(groups, g)
	}
	assignHardLinkGroups(s.m, groups)
	return s.m, nil
}

type inodeKey struct{ dev, ino uint64 }

type snapshotter struct {
	root   string
	opts   Options
	m      map[string]Entry
	inodes map[inodeKey][]string // non-directories with more than one link
}

func (s *snapshotter) walk(p string, st *unix.Stat_t) error {
	full := filepath.Join(s.root, filepath.FromSlash(p))
	e, err := s.entry(p, full, st)
	if err != nil {
		return fmt.Errorf("snapshot %s: %w", full, err)
	}
	s.m[p] = s.opts.apply(e)
	if e.Type != TypeDir {
		if st.Nlink > 1 {
			k := inodeKey{uint64(st.Dev), st.Ino}
			s.inodes[k] = append(s.inodes[k], p)
		}
		return nil
	}
	names, err := readDirNames(full)
	if err != nil {
		return fmt.Errorf("snapshot %s: %w", full, err)
	}
	for _, name := range names {
		cp := path.Join(p, name)
		var cst unix.Stat_t
		if err := unix.Lstat(filepath.Join(full, name), &cst); err != nil {
			return fmt.Errorf("snapshot %s: %w", filepath.Join(full, name), err)
		}
		if err := s.walk(cp, &cst); err != nil {
			return err
		}
	}
	return nil
}

func readDirNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	return names, nil
}

func (s *snapshotter) entry(p, full string, st *unix.Stat_t) (Entry, error) {
	e := Entry{
		Path:  p,
		Mode:  st.Mode & 0o7777,
		UID:   st.Uid,
		GID:   st.Gid,
		Mtime: Timestamp{Sec: st.Mtim.Sec, Nsec: st.Mtim.Nsec},
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		e.Type = TypeDir
	case unix.S_IFREG:
		e.Type = TypeFile
		e.Size = st.Size
		sum, err := hashFile(full)
		if err != nil {
			return e, err
		}
		e.ContentSHA256 = sum
	case unix.S_IFLNK:
		e.Type = TypeSymlink
		e.Mode = 0o777
		target, err := os.Readlink(full)
		if err != nil {
			return e, err
		}
		e.LinkTarget = target
	case unix.S_IFCHR:
		e.Type, e.Rdev = TypeChar, st.Rdev
	case unix.S_IFBLK:
		e.Type, e.Rdev = TypeBlock, st.Rdev
	case unix.S_IFIFO:
		e.Type = TypeFifo
	case unix.S_IFSOCK:
		e.Type = TypeSocket
	default:
		return e, fmt.Errorf("unknown file type %#o", st.Mode&unix.S_IFMT)
	}
	x, err := readXattrs(full)
	if err != nil {
		return e, err
	}
	e.Xattrs = x
	return e, nil
}

func hashFile(full string) (string, error) {
	f, err := os.OpenFile(full, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// readXattrs returns the xattrs of full itself (not of a symlink's target), or nil if none.
func readXattrs(full string) (map[string]string, error) {
	names, err := getBuf(func(b []byte) (int, error) { return unix.Llistxattr(full, b) })
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		return nil, fmt.Errorf("list xattrs: %w", err)
	}
	var x map[string]string
	for len(names) > 0 {
		i := 0
		for i < len(names) && names[i] != 0 {
			i++
		}
		name := string(names[:i])
		if i < len(names) {
			i++
		}
		names = names[i:]
		if name == "" {
			continue
		}
		v, err := getBuf(func(b []byte) (int, error) { return unix.Lgetxattr(full, name, b) })
		if err != nil {
			return nil, fmt.Errorf("get xattr %s: %w", name, err)
		}
		if x == nil {
			x = map[string]string{}
		}
		x[name] = string(v)
	}
	return x, nil
}

// getBuf calls a size-probing syscall wrapper (size query with an empty buffer, then the read),
// retrying if the value grew in between.
func getBuf(call func([]byte) (int, error)) ([]byte, error) {
	for range 8 {
		n, err := call(nil)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return nil, nil
		}
		b := make([]byte, n)
		n, err = call(b)
		if errors.Is(err, unix.ERANGE) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return b[:n], nil
	}
	return nil, unix.ERANGE
}
