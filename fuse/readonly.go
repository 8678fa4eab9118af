package fuse

import (
	"context"
	"syscall"

	gofuse "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Everything that would change the filesystem fails with EROFS. With the "ro" mount option the
// kernel refuses most of these before they reach us; these answer for mounts made without it.

var (
	_ gofuse.NodeSetattrer      = (*node)(nil)
	_ gofuse.NodeSetxattrer     = (*node)(nil)
	_ gofuse.NodeRemovexattrer  = (*node)(nil)
	_ gofuse.NodeMkdirer        = (*node)(nil)
	_ gofuse.NodeMknoder        = (*node)(nil)
	_ gofuse.NodeLinker         = (*node)(nil)
	_ gofuse.NodeSymlinker      = (*node)(nil)
	_ gofuse.NodeCreater        = (*node)(nil)
	_ gofuse.NodeTmpfiler       = (*node)(nil)
	_ gofuse.NodeUnlinker       = (*node)(nil)
	_ gofuse.NodeRmdirer        = (*node)(nil)
	_ gofuse.NodeRenamer        = (*node)(nil)
	_ gofuse.NodeWriter         = (*node)(nil)
	_ gofuse.NodeAllocater      = (*node)(nil)
	_ gofuse.NodeCopyFileRanger = (*node)(nil)
	_ gofuse.NodeFsyncer        = (*node)(nil)
)

func (n *node) Setattr(ctx context.Context, f gofuse.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return syscall.EROFS
}

func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return syscall.EROFS
}

func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno { return syscall.EROFS }

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofuse.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

func (n *node) Mknod(ctx context.Context, name string, mode, dev uint32, out *fuse.EntryOut) (*gofuse.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

func (n *node) Link(ctx context.Context, target gofuse.InodeEmbedder, name string, out *fuse.EntryOut) (*gofuse.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofuse.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

func (n *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*gofuse.Inode, gofuse.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EROFS
}

func (n *node) Tmpfile(ctx context.Context, flags, mode uint32, out *fuse.EntryOut) (*gofuse.Inode, gofuse.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EROFS
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno { return syscall.EROFS }

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno { return syscall.EROFS }

func (n *node) Rename(ctx context.Context, name string, newParent gofuse.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	return syscall.EROFS
}

func (n *node) Write(ctx context.Context, f gofuse.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	return 0, syscall.EROFS
}

func (n *node) Allocate(ctx context.Context, f gofuse.FileHandle, off, size uint64, mode uint32) syscall.Errno {
	return syscall.EROFS
}

func (n *node) CopyFileRange(ctx context.Context, fhIn gofuse.FileHandle, offIn uint64, out *gofuse.Inode, fhOut gofuse.FileHandle, offOut, length, flags uint64) (uint32, syscall.Errno) {
	return 0, syscall.EROFS
}

// Fsync succeeds: there is nothing to write back.
func (n *node) Fsync(ctx context.Context, f gofuse.FileHandle, flags uint32) syscall.Errno { return 0 }
