package v6

import (
	"fmt"
	"math"
	"math/bits"
	"sort"
	"strings"

	"github.com/dfnydus/dfnydus/rafs"
)

// prepareInode validates an inode and computes its xattr body, sizes and i_u.
func (e *encoder) prepareInode(st *inodeState) error {
	in := st.in
	fail := func(format string, args ...any) error {
		return fmt.Errorf("v6 encode: %s: %s", st.first, fmt.Sprintf(format, args...))
	}
	if in.Mode > math.MaxUint16 || fileType(in.Mode) == ftUnknown {
		return fail("mode %#o is not a 16-bit mode with a known file type", in.Mode)
	}
	if in.Ino > math.MaxUint32 {
		return fail("inode number %d does not fit 32 bits", in.Ino)
	}
	var err error
	if st.xattrs, st.icount, err = encodeXattrs(in.Xattrs); err != nil {
		return fail("%v", err)
	}
	st.isize = extInodeSize + uint64(len(st.xattrs))
	if !in.IsDir() {
		st.nlink = st.refs
	}
	switch in.Mode & rafs.SIFMT {
	case rafs.SIFDIR:
		st.size = direntBytes(st.node)
	case rafs.SIFLNK:
		if in.Symlink == "" || len(in.Symlink) >= 4096 || strings.IndexByte(in.Symlink, 0) >= 0 {
			return fail("symlink target must be 1..4095 bytes without NUL, got %d bytes", len(in.Symlink))
		}
		st.size = uint64(len(in.Symlink))
	case rafs.SIFREG:
		st.size = in.Size
		return e.prepareChunks(st, fail)
	default: // devices, fifos, sockets
		st.size = in.Size
		if st.u, err = encodeDev(in.Rdev); err != nil {
			return fail("%v", err)
		}
	}
	return nil
}

// prepareChunks checks a regular file's chunks and builds its chunk addresses and chunk format.
// The chunk size advertised to the kernel is the image chunk size, or, when the file spans more
// than one chunk and its chunks are contiguous in one blob, the file size rounded up to a power of
// two (v6_dump_file's page-cache sharing optimisation).
func (e *encoder) prepareChunks(st *inodeState, fail func(string, ...any) error) error {
	in, cs := st.in, uint64(e.img.ChunkSize)
	slots := in.Size/cs + boolU64(in.Size%cs != 0)
	if slots > maxFileSlots {
		return fail("size %d needs %d chunks, more than %d", in.Size, slots, maxFileSlots)
	}
	st.addrs = make([]chunkAddr, slots)
	for i := range st.addrs {
		st.addrs[i].blkAddr = nullAddr
	}
	contiguous := uint64(len(in.Chunks)) == slots
	for i := range in.Chunks {
		c := &in.Chunks[i]
		slot := c.FileOffset / cs
		switch {
		case c.FileOffset%cs != 0:
			return fail("chunk %d file offset %#x is not a multiple of the chunk size %#x", i, c.FileOffset, cs)
		case slot >= slots:
			return fail("chunk %d at file offset %#x is beyond the file size %d", i, c.FileOffset, in.Size)
		case i > 0 && c.FileOffset <= in.Chunks[i-1].FileOffset:
			return fail("chunk %d file offset %#x does not follow the previous chunk's", i, c.FileOffset)
		case int(c.BlobIndex) >= len(e.img.Blobs):
			return fail("chunk %d names blob %d; the image has %d", i, c.BlobIndex, len(e.img.Blobs))
		case c.UncompressedOffset%blockSize != 0:
			return fail("chunk %d uncompressed offset %#x is not 4 KiB aligned", i, c.UncompressedOffset)
		case c.UncompressedOffset/blockSize >= nullAddr:
			return fail("chunk %d uncompressed offset %#x is beyond a 32-bit block address", i, c.UncompressedOffset)
		case c.Index > maxCIIndex:
			return fail("chunk %d index %d does not fit 24 bits", i, c.Index)
		case uint64(c.UncompressedSize) > cs:
			return fail("chunk %d uncompressed size %d exceeds the chunk size %d", i, c.UncompressedSize, cs)
		}
		st.addrs[slot] = newChunkAddr(c.BlobIndex, c.Index, uint32(c.UncompressedOffset/blockSize))
		if i > 0 {
			p := &in.Chunks[i-1]
			if p.BlobIndex != c.BlobIndex || p.UncompressedOffset+cs != c.UncompressedOffset {
				contiguous = false
			}
		}
	}
	chunkBits := uint64(bits.TrailingZeros64(cs))
	if contiguous && in.Size > cs {
		if b := uint64(bits.Len64(in.Size - 1)); b-blockBits <= chunkFormatBitsMask {
			chunkBits = b
		}
	}
	st.u = chunkFormatIndexes | uint32(chunkBits-blockBits)
	return nil
}

// direntBytes is a directory's i_size: its dirents and names, "." and ".." included, in name
// order, never splitting an entry across a block (Node::v6_dirent_size).
func direntBytes(n *encNode) uint64 {
	var size uint64
	for _, name := range direntNames(n) {
		l := uint64(direntSize + len(name))
		if size%blockSize+l > blockSize {
			size = roundUp(size, blockSize)
		}
		size += l
	}
	return size
}

// direntNames returns the names of n's entries including "." and "..", sorted by bytes.
func direntNames(n *encNode) []string {
	names := make([]string, 0, len(n.children)+2)
	names = append(names, ".", "..")
	for _, c := range n.children {
		names = append(names, c.name)
	}
	sort.Strings(names)
	return names
}
