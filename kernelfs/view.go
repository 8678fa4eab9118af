package kernelfs

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"syscall"

	gofuse "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/blob"
)

// blobView is one blob's uncompressed view: what EROFS reads at blk_addr * 4096 of the blob's
// extra device.
type blobView struct {
	blob   *rafs.Blob
	chunks []*rafs.Chunk // distinct, sorted by UncompressedOffset, not overlapping
	size   uint64
}

// newViews lays out the uncompressed view of every blob of img, in blob order (the order of
// the bootstrap's device table, which is the order of the mount's device= options).
func newViews(img *rafs.Image) ([]*blobView, error) {
	per := make([][]rafs.Chunk, len(img.Blobs))
	seen := map[*rafs.Inode]bool{}
	err := img.Walk(func(p string, n *rafs.Node) error {
		if seen[n.Inode] {
			return nil
		}
		seen[n.Inode] = true
		for _, c := range n.Inode.Chunks {
			if int(c.BlobIndex) >= len(per) {
				return rafs.Corruptf("%s: chunk %d names blob %d of %d", p, c.Index, c.BlobIndex, len(per))
			}
			per[c.BlobIndex] = append(per[c.BlobIndex], c)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	views := make([]*blobView, len(img.Blobs))
	for i, b := range img.Blobs {
		chunks, size, err := blob.ViewLayout(b, per[i])
		if err != nil {
			return nil, err
		}
		views[i] = &blobView{blob: b, chunks: chunks, size: size}
	}
	return views, nil
}

// readParallelism bounds the chunk reads one view read runs at once: a kernel read spans up to
// max_read bytes, many chunks when chunks are small, and fetching them one after another would
// pay a round trip each.
const readParallelism = 8

// readAt fills dest with the view's bytes at off and returns how many there are (fewer at the
// end of the view). Bytes no chunk covers are zeros: they are alignment padding, which no file
// maps. Any chunk that cannot be read fails the whole read: a short or zero-filled answer would
// reach EROFS readers as file data.
func (v *blobView) readAt(ctx context.Context, r rafs.ChunkReader, dest []byte, off int64) (int, error) {
	if off < 0 || uint64(off) >= v.size {
		return 0, nil
	}
	n := int(min(uint64(len(dest)), v.size-uint64(off)))
	dest = dest[:n]
	start, end := uint64(off), uint64(off)+uint64(n)
	i := sort.Search(len(v.chunks), func(i int) bool {
		c := v.chunks[i]
		return c.UncompressedOffset+uint64(c.UncompressedSize) > start
	})
	j := i
	for j < len(v.chunks) && v.chunks[j].UncompressedOffset < end {
		j++
	}
	span := v.chunks[i:j]
	// Zeros first, then the chunks over them: dest may hold bytes of an earlier request.
	pos := start
	for _, c := range span {
		if c.UncompressedOffset > pos {
			clear(dest[pos-start : c.UncompressedOffset-start])
		}
		pos = c.UncompressedOffset + uint64(c.UncompressedSize)
	}
	if pos < end {
		clear(dest[pos-start:])
	}
	copyChunk := func(ctx context.Context, c *rafs.Chunk) error {
		data, err := r.ReadChunk(ctx, v.blob, c, nil)
		if err != nil {
			return fmt.Errorf("blob %s chunk %d: %w", v.blob.ID, c.Index, err)
		}
		if len(data) != int(c.UncompressedSize) {
			return rafs.Corruptf("blob %s chunk %d: got %d bytes, the record says %d", v.blob.ID, c.Index, len(data), c.UncompressedSize)
		}
		from, to := max(c.UncompressedOffset, start), min(c.UncompressedOffset+uint64(c.UncompressedSize), end)
		copy(dest[from-start:to-start], data[from-c.UncompressedOffset:to-c.UncompressedOffset])
		return nil
	}
	if len(span) == 1 {
		if err := copyChunk(ctx, span[0]); err != nil {
			return 0, err
		}
		return n, nil
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(readParallelism)
	for _, c := range span {
		g.Go(func() error { return copyChunk(gctx, c) })
	}
	if err := g.Wait(); err != nil {
		return 0, err
	}
	return n, nil
}

// viewFS is the FUSE file system of the views: a root directory holding one read-only file per
// blob, named by its index ("0", "1", ...: short, so that many devices fit in the mount options).
type viewFS struct {
	views []*blobView
	r     rafs.ChunkReader
	log   *zap.Logger
	// base ends when the views stop: reads still fetching give up, so that the server's
	// request loops (which run the reads) can end.
	base context.Context
	stop context.CancelFunc

	// mu guards opens and released. The kernel's EROFS opens every device file when it mounts
	// and closes them when its superblock goes, however it is unmounted (umount here, umount(8)
	// outside, the last user of a detached mount leaving): the last close says the mount is gone.
	mu       sync.Mutex
	opens    int
	wasOpen  bool
	released chan struct{}
}

func newViewFS(views []*blobView, r rafs.ChunkReader, log *zap.Logger) *viewFS {
	base, stop := context.WithCancel(context.Background())
	return &viewFS{views: views, r: r, log: log, base: base, stop: stop, released: make(chan struct{})}
}

func (fs *viewFS) opened() {
	fs.mu.Lock()
	fs.opens++
	fs.wasOpen = true
	fs.mu.Unlock()
}

func (fs *viewFS) closed() {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.opens--
	if fs.opens == 0 && fs.wasOpen {
		select {
		case <-fs.released:
		default:
			close(fs.released)
		}
	}
}

// viewRoot is the views' directory.
type viewRoot struct {
	gofuse.Inode
	fs *viewFS
}

var (
	_ gofuse.NodeOnAdder    = (*viewRoot)(nil)
	_ gofuse.NodeGetattrer  = (*viewRoot)(nil)
	_ gofuse.NodeGetattrer  = (*viewFile)(nil)
	_ gofuse.NodeOpener     = (*viewFile)(nil)
	_ gofuse.NodeReader     = (*viewFile)(nil)
	_ gofuse.NodeReleaser   = (*viewFile)(nil)
	_ gofuse.NodeStatfser   = (*viewRoot)(nil)
	_ gofuse.NodeOpendirer  = (*viewRoot)(nil)
	_ gofuse.NodeReaddirer  = (*viewRoot)(nil)
	_ gofuse.NodeLookuper   = (*viewRoot)(nil)
	_ gofuse.NodeStatfser   = (*viewFile)(nil)
	_ gofuse.NodeGetxattrer = (*viewFile)(nil)
)

func viewName(i int) string { return fmt.Sprint(i) }

func (r *viewRoot) OnAdd(ctx context.Context) {
	for i, v := range r.fs.views {
		ch := r.NewPersistentInode(ctx, &viewFile{fs: r.fs, v: v}, gofuse.StableAttr{Mode: fuse.S_IFREG, Ino: uint64(i) + 2})
		r.AddChild(viewName(i), ch, false)
	}
}

func (r *viewRoot) Getattr(ctx context.Context, f gofuse.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = fuse.S_IFDIR | 0o500
	out.Nlink = 2
	return 0
}

func (r *viewRoot) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno { return 0 }

func (r *viewRoot) Opendir(ctx context.Context) syscall.Errno { return 0 }

// Readdir and Lookup defer to the children OnAdd made; they exist so that the root needs no
// other interface.
func (r *viewRoot) Readdir(ctx context.Context) (gofuse.DirStream, syscall.Errno) {
	var es []fuse.DirEntry
	for name, ch := range r.Children() {
		es = append(es, fuse.DirEntry{Name: name, Mode: fuse.S_IFREG, Ino: ch.StableAttr().Ino})
	}
	return gofuse.NewListDirStream(es), 0
}

func (r *viewRoot) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofuse.Inode, syscall.Errno) {
	ch := r.GetChild(name)
	if ch == nil {
		return nil, syscall.ENOENT
	}
	if g, ok := ch.Operations().(gofuse.NodeGetattrer); ok {
		var a fuse.AttrOut
		g.Getattr(ctx, nil, &a)
		out.Attr = a.Attr
	}
	return ch, 0
}

// viewFile is one blob's view.
type viewFile struct {
	gofuse.Inode
	fs *viewFS
	v  *blobView
}

func (f *viewFile) Getattr(ctx context.Context, fh gofuse.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = fuse.S_IFREG | 0o400
	out.Nlink = 1
	out.Size = f.v.size
	out.Blocks = (f.v.size + 511) / 512
	out.Blksize = 4096
	return 0
}

func (f *viewFile) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno { return 0 }

// Getxattr answers that there are none, so the kernel does not ask for security.capability on
// every read.
func (f *viewFile) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	return 0, syscall.ENODATA
}

// Open makes the views direct I/O: EROFS keeps the image's pages in its own page cache, so a
// page cache of the views would hold every byte twice and copy it once more; without it, EROFS's
// reads come straight here at EROFS's request size (measured: cold sequential reads 1.15-1.28x as
// fast, with 17-26% less CPU; docs/kernel.md).
func (f *viewFile) Open(ctx context.Context, flags uint32) (gofuse.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		return nil, 0, syscall.EROFS
	}
	f.fs.opened()
	// A handle of our own: go-fuse sends Release only for opens that returned one.
	return &viewHandle{}, fuse.FOPEN_DIRECT_IO, 0
}

// viewHandle is an open view; the node does the reads.
type viewHandle struct{}

func (f *viewFile) Release(ctx context.Context, fh gofuse.FileHandle) syscall.Errno {
	f.fs.closed()
	return 0
}

// Read ignores the kernel's INTERRUPT of the request: the reader is EROFS filling a page (for a
// read(2), a page fault, an execve), and EROFS turns any error of its device read into EIO for
// that page, so an interrupted view read would fail a process for merely receiving a signal
// (measured: runc's Go init, preempted with SIGURG while execve read the binary, got "exec
// /bin/sh: input/output error"). After a non-fatal signal the kernel still waits for the answer;
// after a fatal one it stops waiting, and the fetch finishes into the store. Only the end of the
// mount (base) cancels.
func (f *viewFile) Read(ctx context.Context, fh gofuse.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if f.fs.base.Err() != nil {
		// The mount ended: AfterFunc below would cancel a read of an ended mount only
		// asynchronously, and a fast one could still answer.
		return nil, syscall.EIO
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	defer context.AfterFunc(f.fs.base, cancel)()
	n, err := f.v.readAt(ctx, f.fs.r, dest, off)
	if err != nil {
		if f.fs.base.Err() == nil {
			f.fs.log.Warn("view read failed", zap.String("blob", f.v.blob.ID), zap.Int64("offset", off),
				zap.Int("size", len(dest)), zap.Error(err))
		}
		return nil, syscall.EIO
	}
	return fuse.ReadResultData(dest[:n]), 0
}
