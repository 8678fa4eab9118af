package fuse

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"

	"go.uber.org/zap"

	"github.com/dfnydus/dfnydus/rafs"
)

// rootIno is the root's inode number on every mount (FUSE_ROOT_ID, and what builders give it).
const rootIno = 1

// blockSize is the unit of statfs and st_blksize.
const blockSize = 4096

// filesystem is what every node of one mount shares.
type filesystem struct {
	img    *rafs.Image
	reader rafs.ChunkReader
	opts   Options
	log    *zap.Logger
	m      *metrics
	cache  *chunkCache

	// ctx is cancelled by close: every chunk fetch runs under it.
	ctx    context.Context
	cancel context.CancelFunc

	// renumbered holds the inodes whose Ino is not used as is: the root (always rootIno) and
	// inodes whose number is 0, reserved or taken by another inode. Everything else keeps Ino.
	renumbered map[*rafs.Inode]uint64
	// badChunks holds regular files whose chunk list breaks the model's rules; they fail to open.
	badChunks map[*rafs.Inode]error

	inodes    uint64 // distinct inodes, for statfs
	dataBytes uint64 // sum of regular file sizes rounded up to blocks, for statfs

	// broken is set when the image cannot be served at all (NewRoot cannot return an error):
	// the root then shows an empty directory's attributes and everything else fails with EIO.
	broken error
}

// newFilesystem checks img and indexes what the mount needs. It fails for images that cannot be
// served; regular files with bad chunk lists only fail when opened.
func newFilesystem(img *rafs.Image, r rafs.ChunkReader, opts Options) (*filesystem, error) {
	opts = opts.withDefaults()
	fs := &filesystem{img: img, reader: r, opts: opts, log: opts.Log,
		renumbered: map[*rafs.Inode]uint64{}, badChunks: map[*rafs.Inode]error{}}
	fs.ctx, fs.cancel = context.WithCancel(context.Background())
	fs.cache = newChunkCache(fs.ctx, opts.ChunkCacheBytes)
	fs.cache.pool = &bufPool{}
	var err error
	if fs.m, err = newMetrics(opts.Metrics); err != nil {
		return fs, err
	}
	if r == nil {
		return fs, errors.New("fuse: no chunk reader")
	}
	if err := fs.index(); err != nil {
		return fs, err
	}
	return fs, nil
}

// close cancels every chunk fetch in flight and makes later ones fail.
func (fs *filesystem) close() { fs.cancel() }

// ino returns the inode number the mount shows for in.
func (fs *filesystem) ino(in *rafs.Inode) uint64 {
	if n, ok := fs.renumbered[in]; ok {
		return n
	}
	return in.Ino
}

// index walks the tree once: it checks what lookups and readdir rely on (a directory root,
// sorted unique valid names, no node reached twice), assigns inode numbers, validates chunk lists
// and counts inodes and blocks for statfs.
func (fs *filesystem) index() error {
	img := fs.img
	if img == nil || img.Root == nil || img.Root.Inode == nil {
		return rafs.Corruptf("image has no root")
	}
	if !img.Root.Inode.IsDir() {
		return rafs.Corruptf("image root is not a directory (mode %#o)", img.Root.Inode.Mode)
	}
	owner := map[uint64]*rafs.Inode{rootIno: img.Root.Inode}
	fs.renumbered[img.Root.Inode] = rootIno
	seen := map[*rafs.Inode]bool{img.Root.Inode: true}
	visitedDirs := map[*rafs.Node]bool{}
	var clash []*rafs.Inode
	maxIno := uint64(rootIno)

	stack := []*rafs.Node{img.Root}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if visitedDirs[n] {
			return rafs.Corruptf("directory %s is reached twice", n.Path())
		}
		visitedDirs[n] = true
		for i, c := range n.Children {
			if c == nil || c.Inode == nil {
				return rafs.Corruptf("directory %s: entry %d has no inode", n.Path(), i)
			}
			if err := checkName(c.Name); err != nil {
				return rafs.Corruptf("directory %s: %v", n.Path(), err)
			}
			if i > 0 && n.Children[i-1].Name >= c.Name {
				return rafs.Corruptf("directory %s: entries %q and %q are not in order", n.Path(), n.Children[i-1].Name, c.Name)
			}
			if c.Parent != n {
				return rafs.Corruptf("%s/%s: parent link does not point back", n.Path(), c.Name)
			}
			in := c.Inode
			if in.IsDir() {
				if seen[in] {
					return rafs.Corruptf("directory %s/%s is hard linked", n.Path(), c.Name)
				}
				stack = append(stack, c)
			} else if len(c.Children) > 0 {
				return rafs.Corruptf("%s/%s is not a directory but has entries", n.Path(), c.Name)
			}
			if seen[in] {
				continue
			}
			seen[in] = true
			fs.inodes++
			if in.IsReg() {
				fs.dataBytes += roundUp(in.Size, blockSize)
				if err := checkChunks(img, in); err != nil {
					fs.badChunks[in] = err
				}
			}
			if o, taken := owner[in.Ino]; in.Ino == 0 || in.Ino == math.MaxUint64 || (taken && o != in) {
				clash = append(clash, in)
				continue
			}
			owner[in.Ino] = in
			maxIno = max(maxIno, in.Ino)
		}
	}
	fs.inodes++ // the root
	// Renumber clashes above every number in use, in walk order, so the result is the same on
	// every mount of the image.
	next := maxIno
	for _, in := range clash {
		for {
			next++
			if next == math.MaxUint64 || next == 0 { // go-fuse reserves MaxUint64
				next = rootIno + 1
			}
			if _, taken := owner[next]; !taken {
				break
			}
		}
		owner[next] = in
		fs.renumbered[in] = next
		fs.log.Warn("image inode number clashes; renumbered", zap.Uint64("ino", in.Ino), zap.Uint64("renumbered", next))
	}
	return nil
}

// checkName reports names that cannot be a directory entry.
func checkName(name string) error {
	switch {
	case name == "" || name == "." || name == "..":
		return fmt.Errorf("invalid entry name %q", name)
	case len(name) > 255:
		return fmt.Errorf("entry name %.32q... is %d bytes, longer than 255", name, len(name))
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("entry name %q contains '/' or NUL", name)
	}
	return nil
}

// checkChunks verifies what the read path relies on: chunks in file order, not overlapping,
// inside the file, with a sane size and an existing blob.
func checkChunks(img *rafs.Image, in *rafs.Inode) error {
	var end uint64
	for i := range in.Chunks {
		c := &in.Chunks[i]
		size := uint64(c.UncompressedSize)
		switch {
		case size == 0 || size > rafs.MaxChunkSize:
			return rafs.Corruptf("chunk %d: uncompressed size %d outside (0, %d]", i, size, rafs.MaxChunkSize)
		case c.FileOffset > in.Size || size > in.Size-c.FileOffset:
			return rafs.Corruptf("chunk %d at offset %d size %d does not fit in the file's %d bytes", i, c.FileOffset, size, in.Size)
		case c.FileOffset < end:
			return rafs.Corruptf("chunk %d at offset %d overlaps the previous chunk ending at %d", i, c.FileOffset, end)
		case c.Flags&rafs.ChunkHole == 0 && (int(c.BlobIndex) >= len(img.Blobs) || img.Blobs[c.BlobIndex] == nil):
			return rafs.Corruptf("chunk %d: blob index %d out of range (%d blobs)", i, c.BlobIndex, len(img.Blobs))
		}
		end = c.FileOffset + size
	}
	return nil
}

func roundUp(n, to uint64) uint64 {
	if r := n % to; r != 0 {
		return n + to - r
	}
	return n
}
