package unpack

import (
	"context"
	"fmt"

	"github.com/dfnydus/dfnydus/rafs"
	"golang.org/x/sys/unix"
)

// ToDir materialises img under out, which is created if missing and must otherwise be an empty
// directory (not a symlink to one). The root inode's metadata is applied to out itself.
//
// Regular files get their chunks at Chunk.FileOffset, holes left sparse, and are truncated to
// Inode.Size; nodes sharing one *rafs.Inode become hard links of the first path extracted; devices,
// fifos and sockets are made with mknod. Owners, modes (including setuid, setgid and sticky),
// xattrs and mtimes with nanoseconds are applied to every entry, to directories only after their
// children are written. The image is validated in full before anything is created, and every entry
// is created relative to directory descriptors opened with O_NOFOLLOW, so nothing is ever written
// outside out. Creating devices and setting owners needs root (CAP_MKNOD, CAP_CHOWN).
//
// On error, out may hold a partial tree.
func ToDir(ctx context.Context, img *rafs.Image, src rafs.ChunkReader, out string, opts Options) error {
	p, err := newPlan(img, opts)
	if err != nil {
		return fmt.Errorf("unpack: %w", err)
	}
	root, err := openOut(out)
	if err != nil {
		return fmt.Errorf("unpack: %w", err)
	}
	defer root.Close()
	f := startFetch(ctx, p, src, opts.concurrency())
	defer f.stop()
	w := &dirWriter{p: p, rootFD: int(root.Fd()), fetch: f, prog: progress{fn: opts.Progress}}
	return w.run(ctx)
}

type dirWriter struct {
	p      *plan
	rootFD int
	fetch  *fetcher
	prog   progress
	stack  []openDir // the directories on the path to the current entry, root first
}

type openDir struct {
	fd    int
	entry int
}

func (w *dirWriter) run(ctx context.Context) error {
	w.stack = []openDir{{fd: w.rootFD, entry: 0}}
	defer func() {
		for _, d := range w.stack {
			if d.fd != w.rootFD {
				unix.Close(d.fd)
			}
		}
	}()
	w.prog.entry("/", true, "")
	for i := 1; i < len(w.p.entries); i++ {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("unpack: %w", err)
		}
		e := &w.p.entries[i]
		for len(w.stack) > e.depth {
			if err := w.finishDir(); err != nil {
				return err
			}
		}
		if err := w.create(i, w.stack[len(w.stack)-1].fd); err != nil {
			return fmt.Errorf("unpack %s: %w", w.p.path(i), err)
		}
		w.prog.entry(w.p.path(i), true, "")
	}
	for len(w.stack) > 0 {
		if err := w.finishDir(); err != nil {
			return err
		}
	}
	return nil
}

// create makes entry i inside the directory dirfd.
func (w *dirWriter) create(i, dirfd int) error {
	e := &w.p.entries[i]
	switch e.kind {
	case kindDir:
		fd, err := mkdirAt(dirfd, e.name)
		if err != nil {
			return err
		}
		w.stack = append(w.stack, openDir{fd: fd, entry: i})
		return nil
	case kindFile:
		return w.writeFile(i, dirfd)
	case kindSymlink:
		if err := unix.Symlinkat(e.ino.Symlink, dirfd, e.name); err != nil {
			return fmt.Errorf("symlink: %w", err)
		}
	case kindSpecial:
		if err := mknodAt(dirfd, e.name, e.ino); err != nil {
			return err
		}
	case kindHardLink:
		return w.link(i, dirfd)
	}
	if err := setMetaAt(dirfd, e.name, e.ino); err != nil {
		return err
	}
	return setMtimeAt(dirfd, e.name, e.ino)
}

// finishDir applies the metadata of the innermost open directory, now that its children are
// written, and closes it.
func (w *dirWriter) finishDir() error {
	d := w.stack[len(w.stack)-1]
	ino := w.p.entries[d.entry].ino
	err := setMetaFD(d.fd, ino)
	if err == nil {
		err = setMtimeAt(d.fd, ".", ino)
	}
	if d.fd != w.rootFD {
		if cerr := unix.Close(d.fd); err == nil && cerr != nil {
			err = fmt.Errorf("close: %w", cerr)
		}
	}
	w.stack = w.stack[:len(w.stack)-1]
	if err != nil {
		return fmt.Errorf("unpack %s: %w", w.p.path(d.entry), err)
	}
	return nil
}

// writeFile creates regular file i and writes its chunks; unwritten ranges stay holes.
func (w *dirWriter) writeFile(i, dirfd int) error {
	e := &w.p.entries[i]
	fd, err := createFile(dirfd, e.name)
	if err != nil {
		return err
	}
	defer func() {
		if fd >= 0 {
			unix.Close(fd)
		}
	}()
	for _, ci := range e.reads {
		j, err := w.fetch.next(i, ci)
		if err != nil {
			return err
		}
		err = pwriteAll(fd, j.data, int64(e.ino.Chunks[ci].FileOffset))
		w.prog.p.Bytes += int64(len(j.data))
		w.fetch.release(j)
		if err != nil {
			return fmt.Errorf("write chunk %d: %w", ci, err)
		}
	}
	if err := unix.Ftruncate(fd, int64(e.ino.Size)); err != nil {
		return fmt.Errorf("truncate to %d: %w", e.ino.Size, err)
	}
	if err := setMetaFD(fd, e.ino); err != nil {
		return err
	}
	err, fd = unix.Close(fd), -1
	if err != nil {
		return fmt.Errorf("close: %w", err)
	}
	return setMtimeAt(dirfd, e.name, e.ino)
}

// link makes entry i a hard link of the first entry of its inode, which is already extracted.
func (w *dirWriter) link(i, dirfd int) error {
	e := &w.p.entries[i]
	first := &w.p.entries[e.link]
	var names []string
	for a := first.parent; a > 0; a = w.p.entries[a].parent {
		names = append(names, w.p.entries[a].name)
	}
	for l, r := 0, len(names)-1; l < r; l, r = l+1, r-1 {
		names[l], names[r] = names[r], names[l]
	}
	from, err := openDirChain(w.rootFD, names)
	if err != nil {
		return fmt.Errorf("open directory of link target %s: %w", w.p.path(e.link), err)
	}
	defer unix.Close(from)
	if err := unix.Linkat(from, first.name, dirfd, e.name, 0); err != nil {
		return fmt.Errorf("hard link to %s: %w", w.p.path(e.link), err)
	}
	return nil
}
