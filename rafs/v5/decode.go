package v5

import (
	"bytes"
	"fmt"
	"slices"
	"strings"

	"github.com/dfnydus/dfnydus/rafs"
)

// maxPrefetchPathBytes bounds the total length of the paths the prefetch table expands to, so that
// a small hostile table cannot name deep paths millions of times.
const maxPrefetchPathBytes = 64 << 20

// IsV5 reports whether data starts with a RAFS v5 superblock: the magic and version 0x500.
func IsV5(data []byte) bool {
	return len(data) >= 8 && le.Uint32(data[0:]) == superMagic && le.Uint32(data[4:]) == superVersion
}

// Decode parses a RAFS v5 bootstrap into the model. It checks the superblock, the tables and every
// inode record (bounds, names, modes, xattrs, chunks, child ranges, parents, that every record
// belongs to exactly one directory and that no two records overlap) but not the Merkle digests:
// Inode.Digest holds the stored digest and Verify checks it. Hard links (records sharing an i_ino)
// share one *rafs.Inode. Every failure caused by the bytes wraps rafs.ErrCorrupt.
func Decode(data []byte) (*rafs.Image, error) {
	// A cut download is named as such, not by the first table or record found missing.
	if err := Truncated(data); err != nil {
		return nil, err
	}
	sb, regions, err := parseSuperblock(data)
	if err != nil {
		return nil, err
	}
	comp, err := rafs.CompressorFromFlags(sb.flags)
	if err != nil {
		return nil, err
	}
	dig, err := rafs.DigesterFromFlags(sb.flags)
	if err != nil {
		return nil, err
	}
	blobs, err := decodeBlobs(data, &sb, comp, dig)
	if err != nil {
		return nil, err
	}
	d := &decoder{data: data, sb: &sb, comp: comp, blobs: blobs}
	if err := d.locateRecords(regions); err != nil {
		return nil, err
	}
	if err := d.readNames(); err != nil {
		return nil, err
	}
	if err := d.link(); err != nil {
		return nil, err
	}
	if err := d.readInodes(); err != nil {
		return nil, err
	}
	prefetch, err := d.readPrefetch()
	if err != nil {
		return nil, err
	}
	return &rafs.Image{
		Version:    5,
		Flags:      sb.flags,
		ChunkSize:  sb.blockSize,
		Compressor: comp,
		Digester:   dig,
		Blobs:      blobs,
		Root:       d.recs[0].node,
		Prefetch:   prefetch,
	}, nil
}

// record is one inode table entry: where its record lies and what it decodes to.
type record struct {
	off, end uint64
	hdr      inodeHeader
	node     *rafs.Node
	parent   uint32 // inode number of the directory that lists it; 0 until linked
	pathLen  uint64 // length of its absolute path
}

type decoder struct {
	data  []byte
	sb    *superblock
	comp  rafs.Compressor
	blobs []*rafs.Blob
	recs  []record // recs[ino-1]
}

// where names inode ino for an error message: its path once the tree is linked, else its name.
func (d *decoder) where(ino uint32) string {
	r := &d.recs[ino-1]
	switch {
	case r.node == nil:
		return fmt.Sprintf("inode %d", ino)
	case ino == rootIno:
		return "inode 1 (/)"
	case r.parent != 0:
		return fmt.Sprintf("inode %d (%s)", ino, r.node.Path())
	}
	return fmt.Sprintf("inode %d (name %q)", ino, r.node.Name)
}

func (d *decoder) corrupt(ino uint32, format string, args ...any) error {
	return rafs.Corruptf("%s: %s", d.where(ino), fmt.Sprintf(format, args...))
}

// locateRecords reads the inode table and each record's header, works out how far each record
// extends, and checks that no record overlaps another record or a table.
func (d *decoder) locateRecords(regions []region) error {
	n := d.sb.inodeTableEntries
	size := uint64(len(d.data))
	d.recs = make([]record, n)
	tab := d.data[d.sb.inodeTableOffset:]
	for i := range d.recs {
		ino := uint32(i + 1)
		r := &d.recs[i]
		r.off = uint64(le.Uint32(tab[4*i:])) << 3
		if r.off < superblockSize || r.off > size-inodeHeaderSize {
			return rafs.Corruptf("inode table entry %d points at offset %d, outside the metadata area [%d, %d)", ino, r.off, superblockSize, size)
		}
		r.hdr.unmarshal(d.data[r.off:])
		h := &r.hdr
		end := r.off + inodeHeaderSize + align8(uint64(h.nameSize)) + align8(uint64(h.symlinkSize))
		if end <= size && h.flags&inodeFlagXattr != 0 {
			if end > size-xattrHeaderSize {
				return d.corrupt(ino, "xattr table header at %d runs past the end (%d)", end, size)
			}
			xs := le.Uint64(d.data[end:])
			end += xattrHeaderSize
			if xs > size-end {
				return d.corrupt(ino, "xattr table of %d bytes at %d runs past the end (%d)", xs, end, size)
			}
			end += align8(xs)
		}
		if end <= size && h.mode&rafs.SIFMT == rafs.SIFREG {
			end += chunkRecordSize * uint64(h.childCount) // < 2^39, no overflow
		}
		if end > size {
			return d.corrupt(ino, "record [%d, %d) runs past the end (%d)", r.off, end, size)
		}
		r.end = end
		regions = append(regions, region{start: r.off, end: end, ino: ino})
	}
	return checkOverlaps(regions)
}

// readNames decodes every record's name and file type: what linking the tree needs.
func (d *decoder) readNames() error {
	for i := range d.recs {
		ino := uint32(i + 1)
		r := &d.recs[i]
		h := &r.hdr
		name := string(d.data[r.off+inodeHeaderSize : r.off+inodeHeaderSize+uint64(h.nameSize)])
		if ino == rootIno {
			if name == "" {
				return d.corrupt(ino, "root has an empty name")
			}
			name = "" // the builder calls it "/"; in the model the root has no name
		} else if err := checkName(name); err != nil {
			return d.corrupt(ino, "%v", err)
		}
		r.node = &rafs.Node{Name: name}
		if err := checkMode(h.mode); err != nil {
			return d.corrupt(ino, "%v", err)
		}
	}
	return nil
}

// link builds the tree from the directories' child ranges, starting at the root: every other
// record must be listed by exactly one directory, whose inode number it names as its parent, and
// each directory's children must be sorted by name. Child ranges always lie after their directory
// (as upstream's validator requires), so the walk cannot loop.
func (d *decoder) link() error {
	n := uint64(len(d.recs))
	root := &d.recs[0]
	if root.hdr.mode&rafs.SIFMT != rafs.SIFDIR {
		return d.corrupt(rootIno, "root is not a directory (mode %#o)", root.hdr.mode)
	}
	if root.hdr.parent != 0 || root.hdr.ino != rootIno {
		return d.corrupt(rootIno, "root has i_ino %d and parent %d, want 1 and 0", root.hdr.ino, root.hdr.parent)
	}
	queue := []uint32{rootIno}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		dir := &d.recs[p-1]
		count := uint64(dir.hdr.childCount)
		if count == 0 {
			continue
		}
		first := uint64(dir.hdr.childIndex)
		if first <= uint64(p) || first+count-1 > n {
			return d.corrupt(p, "directory lists children %d..%d, outside (%d, %d]", first, first+count-1, p, n)
		}
		dir.node.Children = make([]*rafs.Node, 0, count)
		for c := first; c < first+count; c++ {
			ino := uint32(c)
			child := &d.recs[c-1]
			if child.parent != 0 {
				return d.corrupt(ino, "listed by directories %d and %d", child.parent, p)
			}
			if child.hdr.parent != uint64(p) {
				return d.corrupt(ino, "names parent %d but directory %d lists it", child.hdr.parent, p)
			}
			if k := len(dir.node.Children); k > 0 && dir.node.Children[k-1].Name >= child.node.Name {
				return d.corrupt(p, "children %q and %q are not in strictly increasing name order", dir.node.Children[k-1].Name, child.node.Name)
			}
			child.parent = p
			child.pathLen = dir.pathLen + 1 + uint64(len(child.node.Name))
			child.node.Parent = dir.node
			dir.node.Children = append(dir.node.Children, child.node)
			if child.hdr.mode&rafs.SIFMT == rafs.SIFDIR {
				queue = append(queue, ino)
			}
		}
	}
	for i := 1; i < len(d.recs); i++ {
		if d.recs[i].parent == 0 {
			return d.corrupt(uint32(i+1), "no directory lists it")
		}
	}
	return nil
}

// readInodes decodes each record's attributes, symlink, xattrs and chunks. A record whose i_ino is
// an earlier inode number is a hard link: it must describe the same file data as that inode's
// record (see sameFile), and its node shares that inode.
func (d *decoder) readInodes() error {
	for i := range d.recs {
		ino := uint32(i + 1)
		r := &d.recs[i]
		in, err := d.readInode(ino, r)
		if err != nil {
			return err
		}
		if r.hdr.ino == uint64(ino) {
			r.node.Inode = in
			continue
		}
		if !in.IsReg() || r.hdr.ino == 0 || r.hdr.ino > uint64(ino) {
			return d.corrupt(ino, "i_ino %d: only a regular file may repeat an earlier inode number", r.hdr.ino)
		}
		primary := &d.recs[r.hdr.ino-1]
		if primary.hdr.ino != r.hdr.ino || !sameFile(primary.node.Inode, in) {
			return d.corrupt(ino, "hard link to inode %d (%s) whose type, size, chunks, digest or xattrs differ", r.hdr.ino, primary.node.Path())
		}
		r.node.Inode = primary.node.Inode
	}
	return nil
}

func (d *decoder) readInode(ino uint32, r *record) (*rafs.Inode, error) {
	h := &r.hdr
	in := &rafs.Inode{
		Ino:       h.ino,
		Mode:      h.mode,
		UID:       h.uid,
		GID:       h.gid,
		ProjID:    h.projid,
		Size:      h.size,
		Blocks:    h.blocks,
		Nlink:     h.nlink,
		Rdev:      rdevFromDisk(h.rdev),
		Mtime:     h.mtime,
		MtimeNsec: h.mtimeNsec,
		HasHole:   h.flags&inodeFlagHasHole != 0,
		Digest:    h.digest,
	}
	switch {
	case h.ino == 0 || h.ino > uint64(len(d.recs)):
		return nil, d.corrupt(ino, "i_ino %d outside the inode table [1, %d]", h.ino, len(d.recs))
	case h.nlink == 0:
		return nil, d.corrupt(ino, "link count 0")
	case h.flags&^knownInodeFlags != 0:
		return nil, d.corrupt(ino, "unknown inode flags %#x", h.flags)
	case h.mtimeNsec > maxMtimeNsec:
		return nil, d.corrupt(ino, "mtime nanoseconds %d exceed %d", h.mtimeNsec, maxMtimeNsec)
	case in.IsSymlink() != (h.symlinkSize > 0):
		return nil, d.corrupt(ino, "mode %#o with a %d-byte symlink target", h.mode, h.symlinkSize)
	case in.HasHole && !in.IsReg():
		return nil, d.corrupt(ino, "HAS_HOLE on a non-regular file")
	case !in.IsReg() && !in.IsDir() && h.childCount != 0:
		return nil, d.corrupt(ino, "mode %#o with child count %d", h.mode, h.childCount)
	}

	p := r.off + inodeHeaderSize + align8(uint64(h.nameSize))
	if h.symlinkSize > 0 {
		in.Symlink = string(d.data[p : p+uint64(h.symlinkSize)])
		if err := checkSymlink(in.Symlink); err != nil {
			return nil, d.corrupt(ino, "%v", err)
		}
	}
	p += align8(uint64(h.symlinkSize))
	if h.flags&inodeFlagXattr != 0 {
		xs := le.Uint64(d.data[p:])
		xattrs, err := parseXattrs(d.data[p+xattrHeaderSize : p+xattrHeaderSize+xs])
		if err != nil {
			return nil, d.corrupt(ino, "%v", err)
		}
		in.Xattrs = xattrs
		p += xattrHeaderSize + align8(xs)
	}
	if in.IsReg() && h.childCount > 0 {
		in.Chunks = make([]rafs.Chunk, h.childCount)
		for j := range in.Chunks {
			in.Chunks[j] = rafs.UnmarshalChunkRecord(d.data[p+uint64(j)*chunkRecordSize:])
		}
		if err := checkChunks(in.Chunks, in.Size, d.sb.blockSize, d.comp, d.blobs); err != nil {
			return nil, d.corrupt(ino, "%v", err)
		}
	}
	return in, nil
}

// parseXattrs decodes an xattr table's content: per pair a u32 size, then name, '\0', value
// (parse_xattr in rafs/src/metadata/layout/mod.rs). The model keeps them sorted by name.
func parseXattrs(b []byte) ([]rafs.Xattr, error) {
	var xs []rafs.Xattr
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, fmt.Errorf("xattr table ends with %d stray bytes", len(b))
		}
		size := le.Uint32(b)
		b = b[4:]
		if uint64(size) > uint64(len(b)) {
			return nil, fmt.Errorf("xattr pair of %d bytes overruns the table (%d left)", size, len(b))
		}
		pair := b[:size]
		b = b[size:]
		nul := bytes.IndexByte(pair, 0)
		if nul < 0 {
			return nil, fmt.Errorf("xattr pair %q has no NUL between name and value", pair)
		}
		x := rafs.Xattr{Name: string(pair[:nul]), Value: bytes.Clone(pair[nul+1:])}
		if x.Value == nil {
			x.Value = []byte{}
		}
		if err := checkXattr(x.Name, x.Value); err != nil {
			return nil, err
		}
		xs = append(xs, x)
	}
	slices.SortFunc(xs, func(a, b rafs.Xattr) int { return strings.Compare(a.Name, b.Name) })
	if err := checkXattrsSorted(xs); err != nil {
		return nil, err
	}
	return xs, nil
}

// readPrefetch maps the prefetch table's inode numbers to absolute paths.
func (d *decoder) readPrefetch() ([]string, error) {
	n := d.sb.prefetchEntries
	if n == 0 {
		return nil, nil
	}
	tab := d.data[d.sb.prefetchTableOffset:]
	paths := make([]string, 0, n)
	var total uint64
	for i := range n {
		ino := le.Uint32(tab[4*i:])
		if ino == 0 || uint64(ino) > uint64(len(d.recs)) {
			return nil, rafs.Corruptf("prefetch table entry %d names inode %d, outside [1, %d]", i, ino, len(d.recs))
		}
		if total += d.recs[ino-1].pathLen + 1; total > maxPrefetchPathBytes {
			return nil, rafs.Corruptf("prefetch table expands to more than %d bytes of paths", maxPrefetchPathBytes)
		}
		paths = append(paths, d.recs[ino-1].node.Path())
	}
	return paths, nil
}
