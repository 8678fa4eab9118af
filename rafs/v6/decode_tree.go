package v6

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/dfnydus/dfnydus/rafs"
)

// maxDepth bounds directory nesting. Linux paths are at most 4096 bytes, so no usable tree is
// deeper; the bound keeps hostile input from building trees that recursive walkers cannot visit.
const maxDepth = 4096

// inodeAt is an on-disk inode and the byte offset it was read from.
type inodeAt struct {
	diskInode
	off uint64
}

// dirent is one decoded directory entry.
type dirent struct {
	name string
	nid  uint64
}

// decodeTree walks the directory tree from the root nid without recursion. Each directory nid is
// visited once: reaching one again (a cycle or a directory hard link) is corruption.
func (d *decoder) decodeTree() (*rafs.Node, error) {
	rootNid := uint64(d.sb.rootNid)
	rootDisk, err := d.readInode(rootNid)
	if err != nil {
		return nil, fmt.Errorf("root inode: %w", err)
	}
	rootIn, err := d.buildInode(rootNid, &rootDisk)
	if err != nil {
		return nil, fmt.Errorf("root inode: %w", err)
	}
	if !rootIn.IsDir() {
		return nil, rafs.Corruptf("root nid %d has mode %#o, not a directory", rootNid, rootIn.Mode)
	}
	d.inodes[rootNid] = rootIn
	root := &rafs.Node{Inode: rootIn} // the root has no name, as in the rest of the model

	type work struct {
		node  *rafs.Node
		nid   uint64
		in    inodeAt
		depth int
	}
	stack := []work{{root, rootNid, rootDisk, 0}}
	for len(stack) > 0 {
		w := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		ents, err := d.readDir(w.nid, &w.in)
		if err != nil {
			return nil, fmt.Errorf("directory %s: %w", w.node.Path(), err)
		}
		w.node.Children = make([]*rafs.Node, 0, len(ents))
		for _, e := range ents {
			child := &rafs.Node{Name: e.name, Parent: w.node}
			if in, ok := d.inodes[e.nid]; ok {
				if in.IsDir() {
					return nil, rafs.Corruptf("directory nid %d is reached again at %s/%s (cycle or directory hard link)", e.nid, strings.TrimSuffix(w.node.Path(), "/"), e.name)
				}
				child.Inode = in
			} else {
				cd, err := d.readInode(e.nid)
				if err != nil {
					return nil, fmt.Errorf("%s/%s: %w", strings.TrimSuffix(w.node.Path(), "/"), e.name, err)
				}
				in, err := d.buildInode(e.nid, &cd)
				if err != nil {
					return nil, fmt.Errorf("%s/%s: %w", strings.TrimSuffix(w.node.Path(), "/"), e.name, err)
				}
				d.inodes[e.nid] = in
				child.Inode = in
				if in.IsDir() {
					if w.depth+1 > maxDepth {
						return nil, rafs.Corruptf("directory tree is deeper than %d levels", maxDepth)
					}
					stack = append(stack, work{child, e.nid, cd, w.depth + 1})
				}
			}
			w.node.Children = append(w.node.Children, child)
		}
	}
	return root, nil
}

// charge accounts n bytes of metadata decoded from the bootstrap. In a well-formed image inode
// cores, xattrs, directory and symlink data and chunk addresses never overlap, so their total
// cannot exceed the bootstrap; input that claims more (regions reused by many inodes) is rejected
// before it can make the decoder allocate more than a small multiple of its own size.
func (d *decoder) charge(n uint64, what string) error {
	if n > d.budget {
		return rafs.Corruptf("%s: metadata regions overlap (decoded more than the %d-byte bootstrap holds)", what, len(d.data))
	}
	d.budget -= n
	return nil
}

// readInode reads the inode at nid, validating that it lies inside the bootstrap.
func (d *decoder) readInode(nid uint64) (inodeAt, error) {
	limit := uint64(len(d.data))
	if nid > (limit-d.metaBase)/slotSize {
		return inodeAt{}, rafs.Corruptf("nid %d is beyond the meta area", nid)
	}
	off := d.metaBase + nid*slotSize
	if off+compactInodeSize > limit {
		return inodeAt{}, rafs.Corruptf("inode at nid %d (offset %#x) runs past the bootstrap", nid, off)
	}
	in := inodeAt{off: off}
	format := le.Uint16(d.data[off:])
	if format&^0xf != 0 {
		return inodeAt{}, rafs.Corruptf("inode at nid %d has unknown format bits %#x", nid, format)
	}
	if format&formatExtended != 0 {
		if off+extInodeSize > limit {
			return inodeAt{}, rafs.Corruptf("extended inode at nid %d (offset %#x) runs past the bootstrap", nid, off)
		}
		in.unmarshalExtended(d.data[off:])
	} else {
		in.unmarshalCompact(d.data[off:], d.sb.buildTime, d.sb.buildTimeNsec)
	}
	if l := in.layout(); l != layoutFlatPlain && l != layoutFlatInline && l != layoutChunkBased {
		return inodeAt{}, fmt.Errorf("%w: inode at nid %d uses data layout %d (compressed)", ErrUnsupported, nid, l)
	}
	return in, d.charge(in.isize()+in.xattrSize(), fmt.Sprintf("inode at nid %d", nid))
}

// buildInode turns an on-disk inode into a model inode, reading its xattrs, symlink target or
// chunks. Directory entries are read by the caller.
func (d *decoder) buildInode(nid uint64, di *inodeAt) (*rafs.Inode, error) {
	in := &rafs.Inode{
		Ino:       uint64(di.ino),
		Mode:      uint32(di.mode),
		UID:       di.uid,
		GID:       di.gid,
		Size:      di.size,
		Blocks:    di.size/512 + boolU64(di.size%512 != 0),
		Nlink:     di.nlink,
		Mtime:     di.mtime,
		MtimeNsec: di.mtimeNsec,
	}
	if n := di.xattrSize(); n > 0 {
		start := di.off + di.isize()
		if start > uint64(len(d.data)) || n > uint64(len(d.data))-start {
			return nil, rafs.Corruptf("xattrs of nid %d run past the bootstrap", nid)
		}
		xs, err := decodeXattrs(d.data[start : start+n])
		if err != nil {
			return nil, fmt.Errorf("xattrs of nid %d: %w", nid, err)
		}
		in.Xattrs = xs
	}
	switch in.Mode & rafs.SIFMT {
	case rafs.SIFDIR:
		if di.layout() == layoutChunkBased {
			return nil, rafs.Corruptf("directory nid %d is chunk-based", nid)
		}
	case rafs.SIFLNK:
		if di.layout() == layoutChunkBased {
			return nil, rafs.Corruptf("symlink nid %d is chunk-based", nid)
		}
		blocks, err := d.flatData(nid, di)
		if err != nil {
			return nil, err
		}
		in.Symlink = string(bytes.Join(blocks, nil))
	case rafs.SIFREG:
		if err := d.fileChunks(nid, di, in); err != nil {
			return nil, err
		}
	case rafs.SIFCHR, rafs.SIFBLK, rafs.SIFIFO, rafs.SIFSOCK:
		in.Rdev = decodeDev(di.u)
	default:
		return nil, rafs.Corruptf("nid %d has mode %#o, an unknown file type", nid, in.Mode)
	}
	return in, nil
}

func boolU64(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// flatData returns the data of a FLAT_PLAIN or FLAT_INLINE inode block by block, mapped as the
// kernel's erofs_map_blocks_flat does: whole blocks from raw_blkaddr (i_u), and for FLAT_INLINE the
// last block inline right after the inode and its xattrs, within the inode's own block.
func (d *decoder) flatData(nid uint64, di *inodeAt) ([][]byte, error) {
	size, limit := di.size, uint64(len(d.data))
	if size == 0 {
		return nil, nil
	}
	if size > limit {
		return nil, rafs.Corruptf("nid %d claims %d bytes of data, more than the bootstrap holds", nid, size)
	}
	if err := d.charge(size, fmt.Sprintf("data of nid %d", nid)); err != nil {
		return nil, err
	}
	nblocks := (size + blockSize - 1) / blockSize
	inline := di.layout() == layoutFlatInline
	whole := nblocks
	if inline {
		whole--
	}
	blocks := make([][]byte, 0, nblocks)
	if whole > 0 {
		start := uint64(di.u) * blockSize
		n := min(size, whole*blockSize)
		if start > limit || n > limit-start {
			return nil, rafs.Corruptf("data blocks of nid %d at block %d run past the bootstrap", nid, di.u)
		}
		for off := uint64(0); off < n; off += blockSize {
			blocks = append(blocks, d.data[start+off:start+min(n, off+blockSize)])
		}
	}
	if inline {
		tail := size - whole*blockSize
		start := di.off + di.isize() + di.xattrSize()
		if start%blockSize+tail > blockSize {
			return nil, rafs.Corruptf("inline data of nid %d (%d bytes at %#x) crosses a block boundary", nid, tail, start)
		}
		if start > limit || tail > limit-start {
			return nil, rafs.Corruptf("inline data of nid %d runs past the bootstrap", nid)
		}
		blocks = append(blocks, d.data[start:start+tail])
	}
	return blocks, nil
}

// readDir decodes the dirents of a directory, block by block, with the checks the kernel's
// erofs_readdir and namei make: a block starts with its dirent array, whose first nameoff gives
// the count; names follow in order, the last one NUL-terminated or ending with the block. Names
// must be strictly increasing across the whole directory (lookups binary-search them).
func (d *decoder) readDir(nid uint64, di *inodeAt) ([]dirent, error) {
	blocks, err := d.flatData(nid, di)
	if err != nil {
		return nil, err
	}
	var ents []dirent
	prev := ""
	for bi, blk := range blocks {
		if len(blk) < direntSize {
			return nil, rafs.Corruptf("dirent block %d holds %d bytes, less than one dirent", bi, len(blk))
		}
		first := int(le.Uint16(blk[8:]))
		if first < direntSize || first%direntSize != 0 || first >= len(blk) {
			return nil, rafs.Corruptf("dirent block %d: first name offset %d is invalid for a %d-byte block", bi, first, len(blk))
		}
		count := first / direntSize
		for j := 0; j < count; j++ {
			de := blk[j*direntSize:]
			nameOff := int(le.Uint16(de[8:]))
			if nameOff < first || nameOff >= len(blk) {
				return nil, rafs.Corruptf("dirent block %d entry %d: name offset %d out of range [%d, %d)", bi, j, nameOff, first, len(blk))
			}
			end := nameOff + cStringLen(blk[nameOff:])
			if j+1 < count {
				end = int(le.Uint16(blk[(j+1)*direntSize+8:]))
			}
			if end <= nameOff || end > len(blk) {
				return nil, rafs.Corruptf("dirent block %d entry %d: name [%d, %d) is empty or out of range", bi, j, nameOff, end)
			}
			name := string(blk[nameOff:end])
			if strings.ContainsAny(name, "/\x00") {
				return nil, rafs.Corruptf("dirent block %d entry %d: name %q contains '/' or NUL", bi, j, name)
			}
			if len(ents) > 0 && name <= prev {
				return nil, rafs.Corruptf("dirent %q follows %q: names are not strictly sorted", name, prev)
			}
			prev = name
			ents = append(ents, dirent{name: name, nid: le.Uint64(de)})
		}
	}
	out := ents[:0]
	for _, e := range ents {
		if e.name != "." && e.name != ".." {
			out = append(out, e)
		}
	}
	return out, nil
}

func cStringLen(b []byte) int {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return i
	}
	return len(b)
}

// fileChunks reads the chunk addresses of a regular file. nydusd sizes the address array by the
// superblock chunk size (rafs/src/metadata/direct_v6.rs chunk_addresses), whatever chunk size i_u
// advertises to the kernel, and finds each chunk's record by (blob, chunk-info index, block).
// A slot whose block address is EROFS_NULL_ADDR is a hole.
func (d *decoder) fileChunks(nid uint64, di *inodeAt, in *rafs.Inode) error {
	if di.layout() != layoutChunkBased {
		if di.size == 0 {
			return nil
		}
		return fmt.Errorf("%w: regular file nid %d keeps %d bytes of data in the bootstrap (layout %d)", ErrUnsupported, nid, di.size, di.layout())
	}
	if di.u&^(chunkFormatIndexes|chunkFormatBitsMask) != 0 || di.u&chunkFormatIndexes == 0 {
		return rafs.Corruptf("regular file nid %d has chunk format %#x, want 8-byte chunk indexes", nid, di.u)
	}
	cs := uint64(d.ext.chunkSize)
	slots := di.size/cs + boolU64(di.size%cs != 0)
	start := roundUp(di.off+di.isize()+di.xattrSize(), chunkAddrSize)
	limit := uint64(len(d.data))
	if start > limit || slots > (limit-start)/chunkAddrSize {
		return rafs.Corruptf("regular file nid %d: %d chunk addresses run past the bootstrap", nid, slots)
	}
	if err := d.charge(slots*chunkAddrSize, fmt.Sprintf("chunk addresses of nid %d", nid)); err != nil {
		return err
	}
	for i := uint64(0); i < slots; i++ {
		var ca chunkAddr
		ca.unmarshal(d.data[start+i*chunkAddrSize:])
		if ca.blkAddr == nullAddr {
			in.HasHole = true
			continue
		}
		dev := ca.deviceID()
		if dev == 0 || int(dev) > len(d.blobs) {
			return rafs.Corruptf("regular file nid %d chunk %d names device %d; the image has %d blobs", nid, i, dev, len(d.blobs))
		}
		c, ok := d.chunks[chunkKey{dev - 1, ca.ciIndex(), ca.blkAddr}]
		if !ok {
			return rafs.Corruptf("regular file nid %d chunk %d (blob %d, chunk index %d, block %d) has no record in the chunk table", nid, i, dev-1, ca.ciIndex(), ca.blkAddr)
		}
		// Bounded here rather than in readChunkTable so the error names the file that uses it.
		if err := rafs.CheckChunkBounds(&c, d.blobs[dev-1], d.blobs[dev-1].ChunkSize); err != nil {
			return rafs.Corruptf("regular file nid %d chunk %d (blob %d, chunk index %d): %v", nid, i, dev-1, c.Index, err)
		}
		c.FileOffset = i * cs
		in.Chunks = append(in.Chunks, c)
	}
	return nil
}
