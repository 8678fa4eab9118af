package fuse

import (
	"context"
	"syscall"

	gofuse "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/dfnydus/dfnydus/rafs"
)

// OpendirHandle opens a directory for listing. The kernel may cache the listing
// (FOPEN_CACHE_DIR): directories never change.
func (n *node) OpendirHandle(ctx context.Context, flags uint32) (gofuse.FileHandle, uint32, syscall.Errno) {
	if n.fs.broken != nil {
		return nil, 0, syscall.EIO
	}
	if !n.inode().IsDir() {
		return nil, 0, syscall.ENOTDIR
	}
	return &dirHandle{n: n}, fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE, 0
}

// dirHandle lists a directory straight from the image: ".", "..", then the entries in name order.
// Its offsets are positions in that sequence, so seekdir and telldir need no state.
type dirHandle struct {
	n   *node
	pos uint64 // entries returned so far
}

var (
	_ gofuse.FileReaddirenter = (*dirHandle)(nil)
	_ gofuse.FileSeekdirer    = (*dirHandle)(nil)
	_ gofuse.FileLookuper     = (*dirHandle)(nil)
	_ gofuse.FileReleasedirer = (*dirHandle)(nil)
)

// Readdirent returns the next entry, or nil at the end.
func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	fs, rn := d.n.fs, d.n.rn
	var e fuse.DirEntry
	switch {
	case d.pos == 0:
		e = fuse.DirEntry{Name: ".", Mode: fuse.S_IFDIR, Ino: fs.ino(rn.Inode)}
	case d.pos == 1:
		parent := rn
		if rn.Parent != nil {
			parent = rn.Parent
		}
		e = fuse.DirEntry{Name: "..", Mode: fuse.S_IFDIR, Ino: fs.ino(parent.Inode)}
	case d.pos-2 < uint64(len(rn.Children)):
		c := rn.Children[d.pos-2]
		e = fuse.DirEntry{Name: c.Name, Mode: c.Inode.Mode & rafs.SIFMT, Ino: fs.ino(c.Inode)}
	default:
		return nil, 0
	}
	d.pos++
	e.Off = d.pos
	return &e, 0
}

// Seekdir moves to an offset Readdirent returned earlier (0 is the start).
func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if off > uint64(len(d.n.rn.Children))+2 {
		return syscall.EINVAL
	}
	d.pos = off
	return 0
}

// Lookup serves READDIRPLUS: name is the entry Readdirent just returned.
func (d *dirHandle) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofuse.Inode, syscall.Errno) {
	rn := d.n.rn
	if i := d.pos - 3; d.pos >= 3 && i < uint64(len(rn.Children)) && rn.Children[i].Name == name {
		return d.n.child(ctx, rn.Children[i], out), 0
	}
	return d.n.Lookup(ctx, name, out)
}

// Releasedir has nothing to release.
func (d *dirHandle) Releasedir(ctx context.Context, releaseFlags uint32) {}
