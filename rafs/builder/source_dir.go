package builder

import (
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"

	"github.com/dfnydus/dfnydus/rafs"
	"golang.org/x/sys/unix"
)

// dirSource walks a directory tree in name order, parents first, without following symlinks.
type dirSource struct {
	root    string
	stack   []string // absolute image paths still to visit, last is next
	links   map[[2]uint64]string
	cur     *os.File
	started bool
}

func newDirSource(root string) (*dirSource, error) {
	return &dirSource{root: root, links: map[[2]uint64]string{}}, nil
}

func (s *dirSource) Close() error {
	if s.cur != nil {
		err := s.cur.Close()
		s.cur = nil
		return err
	}
	return nil
}

func (s *dirSource) next() (*entry, error) {
	if err := s.Close(); err != nil {
		return nil, err
	}
	if !s.started {
		s.started = true
		s.stack = []string{"/"}
	}
	if len(s.stack) == 0 {
		return nil, io.EOF
	}
	p := s.stack[len(s.stack)-1]
	s.stack = s.stack[:len(s.stack)-1]
	host := filepath.Join(s.root, filepath.FromSlash(p))
	var st unix.Stat_t
	if err := unix.Lstat(host, &st); err != nil {
		return nil, fmt.Errorf("lstat %s: %w", host, err)
	}
	e := &entry{path: p, mode: st.Mode, uid: st.Uid, gid: st.Gid, rdev: st.Rdev,
		mtime: uint64(st.Mtim.Sec), mtimeNsec: uint32(st.Mtim.Nsec)}
	xs, err := readXattrs(host)
	if err != nil {
		return nil, err
	}
	e.xattrs = xs
	switch st.Mode & rafs.SIFMT {
	case rafs.SIFDIR:
		names, err := readDirNames(host)
		if err != nil {
			return nil, err
		}
		for i := len(names) - 1; i >= 0; i-- { // reverse so the stack pops them in order
			s.stack = append(s.stack, path.Join(p, names[i]))
		}
		return e, nil
	case rafs.SIFLNK:
		t, err := os.Readlink(host)
		if err != nil {
			return nil, fmt.Errorf("readlink %s: %w", host, err)
		}
		e.symlink = t
	case rafs.SIFREG:
		e.size = st.Size
	}
	if st.Nlink > 1 {
		key := [2]uint64{st.Dev, st.Ino}
		if first, ok := s.links[key]; ok {
			return &entry{path: p, hardlink: first}, nil
		}
		s.links[key] = p
	}
	if st.Mode&rafs.SIFMT == rafs.SIFREG {
		f, err := os.Open(host)
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", host, err)
		}
		s.cur = f
		e.data = io.LimitReader(f, st.Size)
	}
	return e, nil
}

func readDirNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("read dir: %w", err)
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("read dir %s: %w", dir, err)
	}
	sort.Strings(names)
	return names, nil
}

// readXattrs lists and reads every extended attribute of p without following a symlink.
func readXattrs(p string) ([]rafs.Xattr, error) {
	size, err := unix.Llistxattr(p, nil)
	if err != nil {
		if err == unix.ENOTSUP || err == unix.EOPNOTSUPP {
			return nil, nil
		}
		return nil, fmt.Errorf("listxattr %s: %w", p, err)
	}
	if size == 0 {
		return nil, nil
	}
	buf := make([]byte, size)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		return nil, fmt.Errorf("listxattr %s: %w", p, err)
	}
	var xs []rafs.Xattr
	for _, name := range splitNul(buf[:n]) {
		vsz, err := unix.Lgetxattr(p, name, nil)
		if err != nil {
			return nil, fmt.Errorf("getxattr %s %s: %w", p, name, err)
		}
		val := make([]byte, vsz)
		vn, err := unix.Lgetxattr(p, name, val)
		if err != nil {
			return nil, fmt.Errorf("getxattr %s %s: %w", p, name, err)
		}
		xs = append(xs, rafs.Xattr{Name: name, Value: val[:vn]})
	}
	sort.Slice(xs, func(i, j int) bool { return xs[i].Name < xs[j].Name })
	return xs, nil
}

func splitNul(b []byte) []string {
	var out []string
	start := 0
	for i, c := range b {
		if c == 0 {
			if i > start {
				out = append(out, string(b[start:i]))
			}
			start = i + 1
		}
	}
	return out
}
