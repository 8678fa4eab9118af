package fuse

import (
	"context"
	"sync/atomic"
	"syscall"

	gofuse "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/dfnydus/dfnydus/rafs"
)

// node is one inode of the mount. For a directory, rn is its (only) name in the image; for other
// files it is the name the inode was first looked up under (hard links share one node).
type node struct {
	gofuse.Inode
	fs    *filesystem
	rn    *rafs.Node
	opens atomic.Int32 // open file handles
}

var (
	_ gofuse.NodeGetattrer      = (*node)(nil)
	_ gofuse.NodeLookuper       = (*node)(nil)
	_ gofuse.NodeOpendirHandler = (*node)(nil)
	_ gofuse.NodeReadlinker     = (*node)(nil)
	_ gofuse.NodeOpener         = (*node)(nil)
	_ gofuse.NodeGetxattrer     = (*node)(nil)
	_ gofuse.NodeListxattrer    = (*node)(nil)
	_ gofuse.NodeStatfser       = (*node)(nil)
)

func (n *node) inode() *rafs.Inode { return n.rn.Inode }

// Getattr reports the image's attributes. (The root of an image that cannot be served still
// answers, with an empty directory's attributes: mounting needs that much.)
func (n *node) Getattr(ctx context.Context, f gofuse.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.fs.fillAttr(n.inode(), &out.Attr)
	return 0
}

// fillAttr writes the stat(2) view of in.
func (fs *filesystem) fillAttr(in *rafs.Inode, a *fuse.Attr) {
	a.Ino = fs.ino(in)
	a.Mode = in.Mode
	a.Nlink = max(in.Nlink, 1)
	a.Owner = fuse.Owner{Uid: in.UID, Gid: in.GID}
	a.Size = in.Size
	a.Blocks = in.Blocks
	if a.Blocks == 0 && in.IsReg() {
		a.Blocks = roundUp(min(in.Size, 1<<62), 512) / 512
	}
	a.Blksize = blockSize
	a.Atime, a.Mtime, a.Ctime = in.Mtime, in.Mtime, in.Mtime
	a.Atimensec, a.Mtimensec, a.Ctimensec = in.MtimeNsec, in.MtimeNsec, in.MtimeNsec
	if t := in.Mode & rafs.SIFMT; t == rafs.SIFCHR || t == rafs.SIFBLK {
		a.Rdev = encodeDev(in.Rdev)
	}
}

// encodeDev converts a Linux dev_t (unix.Mkdev) to the kernel's 32-bit new_encode_dev form FUSE
// carries.
func encodeDev(dev uint64) uint32 {
	major, minor := unix.Major(dev), unix.Minor(dev)
	return major<<8 | minor&0xff | (minor&^0xff)<<12
}

// Lookup finds name in a directory.
func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofuse.Inode, syscall.Errno) {
	if n.fs.broken != nil {
		return nil, syscall.EIO
	}
	if !n.inode().IsDir() {
		return nil, syscall.ENOTDIR
	}
	c := n.rn.Child(name)
	if c == nil {
		return nil, syscall.ENOENT
	}
	return n.child(ctx, c, out), 0
}

// child returns the go-fuse inode for entry c of n and fills out.
func (n *node) child(ctx context.Context, c *rafs.Node, out *fuse.EntryOut) *gofuse.Inode {
	n.fs.fillAttr(c.Inode, &out.Attr)
	ch := &node{fs: n.fs, rn: c}
	return n.NewInode(ctx, ch, gofuse.StableAttr{Mode: c.Inode.Mode & rafs.SIFMT, Ino: out.Attr.Ino})
}

// Readlink returns a symlink's target.
func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	in := n.inode()
	if !in.IsSymlink() {
		return nil, syscall.EINVAL
	}
	return []byte(in.Symlink), 0
}

// Getxattr copies the value of attr into dest: ENODATA when the inode has no such attribute,
// ERANGE (with the size needed) when dest is too small.
func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	v, ok := n.inode().Xattr(attr)
	if !ok {
		return 0, syscall.ENODATA
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

// Listxattr writes the NUL-terminated attribute names into dest: ERANGE (with the size needed)
// when dest is too small.
func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	xs := n.inode().Xattrs
	size := 0
	for _, x := range xs {
		size += len(x.Name) + 1
	}
	if len(dest) < size {
		return uint32(size), syscall.ERANGE
	}
	off := 0
	for _, x := range xs {
		off += copy(dest[off:], x.Name)
		dest[off] = 0
		off++
	}
	return uint32(size), 0
}

// Statfs reports the image's size: its inodes and its file data in 4 KiB blocks, none free.
func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	*out = fuse.StatfsOut{
		Blocks:  n.fs.dataBytes / blockSize,
		Files:   n.fs.inodes,
		Bsize:   blockSize,
		NameLen: 255,
		Frsize:  blockSize,
	}
	return 0
}

// Open opens a regular file for reading. Its data is immutable, so the kernel keeps its page
// cache across opens (FOPEN_KEEP_CACHE), and close sends no FLUSH (FOPEN_NOFLUSH).
func (n *node) Open(ctx context.Context, flags uint32) (gofuse.FileHandle, uint32, syscall.Errno) {
	in := n.inode()
	switch {
	case n.fs.broken != nil:
		return nil, 0, syscall.EIO
	case in.IsDir():
		return nil, 0, syscall.EISDIR
	case !in.IsReg():
		return nil, 0, syscall.EINVAL
	case flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0:
		return nil, 0, syscall.EROFS
	}
	if err := n.fs.badChunks[in]; err != nil {
		n.fs.log.Error("open: file has a bad chunk list", zap.String("path", n.rn.Path()), zap.Error(err))
		return nil, 0, syscall.EIO
	}
	fuseFlags := uint32(fuse.FOPEN_KEEP_CACHE | fuse.FOPEN_NOFLUSH)
	if n.fs.opts.noKeepCache {
		fuseFlags &^= fuse.FOPEN_KEEP_CACHE
	}
	n.opens.Add(1)
	return &fileHandle{n: n}, fuseFlags, 0
}
