package v6

import (
	"bytes"
	"fmt"
	"math"
	"sort"

	"github.com/dfnydus/dfnydus/rafs"
)

// buffer is a growable byte slice written at absolute offsets, like upstream's seek+write on the
// bootstrap file: its length is the end of the furthest non-empty write.
type buffer struct{ b []byte }

func (w *buffer) at(off uint64, p []byte) {
	if len(p) == 0 {
		return
	}
	end := off + uint64(len(p))
	w.grow(end)
	copy(w.b[off:end], p)
}

func (w *buffer) grow(n uint64) {
	if n <= uint64(len(w.b)) {
		return
	}
	if n <= uint64(cap(w.b)) {
		w.b = w.b[:n]
		return
	}
	nb := make([]byte, n, max(n, 2*uint64(cap(w.b))))
	copy(nb, w.b)
	w.b = nb
}

func (w *buffer) len() uint64 { return uint64(len(w.b)) }

// write emits the bootstrap in v6_dump's order: inodes from meta_blkaddr, the prefetch table, the
// chunk table at the (4 KiB aligned) end, then the device table, superblocks and blob table.
func (e *encoder) write() ([]byte, error) {
	img := e.img
	nblobs := uint64(len(img.Blobs))
	btOff := roundUp(devTableOffset+nblobs*devSlotSize, blockSize)
	btSize := nblobs * blobEntrySize
	var pfOff, pfSize uint64
	if len(img.Prefetch) > 0 && btSize > 0 {
		pfOff, pfSize = btOff+btSize, uint64(len(img.Prefetch))*prefetchEntrySz
	}
	// meta_blkaddr sits one block before the root inode so that the root nid is not 0
	// (glibc's readdir hides ino 0); the build offsets are shifted to follow the tables.
	origMeta := e.root.st.off - blockSize
	metaAddr := origMeta
	if btSize > 0 {
		metaAddr = roundUp(btOff+btSize+pfSize, blockSize)
	}
	shift := metaAddr - origMeta
	nid := func(st *inodeState) uint64 { return (st.off + shift - metaAddr) / slotSize }

	w := &buffer{}
	w.grow(blockSize)
	hasXattr := false
	for _, st := range e.order {
		if err := e.writeInode(w, st, shift, nid); err != nil {
			return nil, err
		}
		hasXattr = hasXattr || st.icount > 0
	}
	end := roundUp(w.len(), blockSize)

	for i, p := range img.Prefetch {
		if pfSize == 0 {
			break
		}
		n := e.lookup(p)
		if n == nil {
			return nil, fmt.Errorf("v6 encode: prefetch path %q is not in the image", p)
		}
		id := nid(n.st)
		if id > math.MaxUint32 {
			return nil, fmt.Errorf("v6 encode: prefetch path %q has nid %d beyond 32 bits", p, id)
		}
		var b [prefetchEntrySz]byte
		le.PutUint32(b[:], uint32(id))
		w.at(pfOff+uint64(i)*prefetchEntrySz, b[:])
	}

	ctOff := end
	records, err := e.chunkRecords()
	if err != nil {
		return nil, err
	}
	table := make([]byte, len(records)*chunkRecordSize)
	for i := range records {
		rafs.MarshalChunkRecord(table[i*chunkRecordSize:], &records[i])
	}
	w.at(ctOff, table)
	ctSize := uint64(len(table))
	end = roundUp(ctOff+ctSize, blockSize)
	w.grow(end)

	// Device slots: one per blob, its uncompressed view mapped after the bootstrap at 512 KiB
	// aligned block addresses (v6_align_mapped_blkaddr).
	pos, totalBlocks := end, uint64(0)
	allInlined := true
	for i, b := range img.Blobs {
		cnt := b.UncompressedSize / blockSize
		mapped := roundUp(pos, mappedBlkAlign) / blockSize
		totalBlocks += cnt
		if mapped > math.MaxUint32 || totalBlocks > math.MaxUint32 {
			return nil, fmt.Errorf("v6 encode: too many data blocks (%d) for a 32-bit EROFS block address", totalBlocks)
		}
		pos = (mapped + cnt) * blockSize
		slot := deviceSlot{tag: b.ID, blocks: uint32(cnt), mappedBlkAddr: uint32(mapped)}
		var raw [devSlotSize]byte
		slot.marshal(raw[:])
		w.at(devTableOffset+uint64(i)*devSlotSize, raw[:])
		allInlined = allInlined && b.Features&rafs.BlobFeatureInlinedChunkDigest != 0
	}

	sb := superBlock{
		magic:           erofsMagic,
		featureCompat:   featureCompatRafsV6,
		blkSzBits:       blockBits,
		rootNid:         uint16(nid(e.root.st)),
		inos:            e.nodes,
		blocks:          uint32(totalBlocks),
		metaBlkAddr:     uint32(metaAddr / blockSize),
		featureIncompat: featureIncompatChunkedFile | featureIncompatDeviceTable,
		extraDevices:    uint16(nblobs),
		devtSlotOff:     devSlotOffUnits,
	}
	var raw [extSuperSize]byte
	sb.marshal(raw[:superSize])
	w.at(superOffset, raw[:superSize])

	flags := img.Flags &^ (rafs.FlagCompressNone | rafs.FlagCompressLZ4Block | rafs.FlagCompressGzip |
		rafs.FlagCompressZstd | rafs.FlagHashBlake3 | rafs.FlagHashSHA256 | rafs.FlagHasXattr | rafs.FlagInlinedChunkDig)
	flags |= img.Compressor.Flag() | img.Digester.Flag()
	if hasXattr {
		flags |= rafs.FlagHasXattr
	}
	if allInlined {
		flags |= rafs.FlagInlinedChunkDig
	}
	ext := extSuperBlock{
		flags:               flags,
		blobTableOffset:     btOff,
		blobTableSize:       uint32(btSize),
		chunkSize:           img.ChunkSize,
		chunkTableOffset:    ctOff,
		chunkTableSize:      ctSize,
		prefetchTableOffset: pfOff,
		prefetchTableSize:   uint32(pfSize),
	}
	raw = [extSuperSize]byte{}
	ext.marshal(raw[:])
	w.at(extSuperOffset, raw[:])

	for i, b := range img.Blobs {
		var entry [blobEntrySize]byte
		marshalBlob(entry[:], i, b, img.ChunkSize)
		w.at(btOff+uint64(i)*blobEntrySize, entry[:])
	}
	return w.b[:end], nil
}

// writeInode writes an inode, its xattrs and its dirents, symlink target or chunk addresses.
func (e *encoder) writeInode(w *buffer, st *inodeState, shift uint64, nid func(*inodeState) uint64) error {
	in := st.in
	off := st.off + shift
	core := diskInode{
		format:      formatExtended | st.layout<<1,
		xattrICount: st.icount,
		mode:        uint16(in.Mode),
		nlink:       st.nlink,
		size:        st.size,
		u:           st.u,
		ino:         uint32(in.Ino),
		uid:         in.UID,
		gid:         in.GID,
		mtime:       in.Mtime,
		mtimeNsec:   in.MtimeNsec,
	}
	if in.IsDir() || in.IsSymlink() {
		blk := (st.data + shift) / blockSize
		if blk > math.MaxUint32 {
			return fmt.Errorf("v6 encode: %s: data block %d beyond 32 bits", st.first, blk)
		}
		core.u = uint32(blk)
	}
	buf := make([]byte, st.isize)
	core.marshalExtended(buf)
	copy(buf[extInodeSize:], st.xattrs)
	w.at(off, buf)

	tail := off + st.isize // where FLAT_INLINE data goes
	switch {
	case in.IsDir():
		e.writeDirents(w, st, shift, tail, nid)
	case in.IsSymlink():
		at := st.data + shift
		if st.layout == layoutFlatInline {
			at = tail
		}
		w.at(at, []byte(in.Symlink))
	case in.IsReg():
		addrs := make([]byte, len(st.addrs)*chunkAddrSize)
		for i, a := range st.addrs {
			a.marshal(addrs[i*chunkAddrSize:])
		}
		w.at(roundUp(tail, chunkAddrSize), addrs)
	}
	return nil
}

// writeDirents fills a directory's blocks (Node::v6_dump_dir): entries in name order, a new block
// whenever the next entry would not fit; each block is its dirent array then its names. Whole
// blocks go to the data blocks, the last one inline after the inode for FLAT_INLINE.
func (e *encoder) writeDirents(w *buffer, st *inodeState, shift, tail uint64, nid func(*inodeState) uint64) {
	type entry struct {
		name string
		st   *inodeState
	}
	n := st.node
	parent := n
	if n.parent != nil {
		parent = n.parent
	}
	ents := make([]entry, 0, len(n.children)+2)
	ents = append(ents, entry{".", st}, entry{"..", parent.st})
	for _, c := range n.children {
		ents = append(ents, entry{c.name, c.st})
	}
	sort.SliceStable(ents, func(i, j int) bool { return ents[i].name < ents[j].name })

	block := func(group []entry) []byte {
		var names bytes.Buffer
		out := make([]byte, len(group)*direntSize)
		nameOff := len(out)
		for i, g := range group {
			d := out[i*direntSize:]
			le.PutUint64(d, nid(g.st))
			le.PutUint16(d[8:], uint16(nameOff))
			d[10] = fileType(g.st.in.Mode)
			nameOff += len(g.name)
			names.WriteString(g.name)
		}
		return append(out, names.Bytes()...)
	}
	at := st.data + shift
	var group []entry
	used := 0
	for _, g := range ents {
		l := direntSize + len(g.name)
		if used+l > blockSize {
			w.at(at, block(group))
			at += blockSize
			group, used = group[:0], 0
		}
		group = append(group, g)
		used += l
	}
	if len(group) > 0 {
		if st.layout == layoutFlatInline {
			at = tail
		}
		w.at(at, block(group))
	}
}

// chunkRecords returns the chunk-info table: every chunk of every regular file, once per
// (blob, chunk index, block address) - the key a chunk address names - keeping the last one met in
// dump order (upstream fills a BTreeMap in that order, so a shared chunk carries the file offset
// of its last user), sorted by digest, blob and chunk index as upstream's DigestWithBlobIndex
// orders them. Chunks that share that key must agree on everything but their file offset, or no
// reader could tell them apart.
func (e *encoder) chunkRecords() ([]rafs.Chunk, error) {
	type key struct{ blob, index, blk uint32 }
	m := map[key]rafs.Chunk{}
	var err error
	walkDump(e.root, func(n *encNode) {
		if !n.st.in.IsReg() || err != nil {
			return
		}
		for _, c := range n.st.in.Chunks {
			k := key{c.BlobIndex, c.Index, uint32(c.UncompressedOffset / blockSize)}
			if old, ok := m[k]; ok {
				old.FileOffset = c.FileOffset
				if old != c {
					err = fmt.Errorf("v6 encode: %s: chunk at file offset %#x and another chunk share blob %d, chunk index %d and block %d but differ", n.st.first, c.FileOffset, k.blob, k.index, k.blk)
					return
				}
			}
			m[k] = c
		}
	})
	if err != nil {
		return nil, err
	}
	out := make([]rafs.Chunk, 0, len(m))
	for _, c := range m {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := &out[i], &out[j]
		if c := bytes.Compare(a.Digest[:], b.Digest[:]); c != 0 {
			return c < 0
		}
		if a.BlobIndex != b.BlobIndex {
			return a.BlobIndex < b.BlobIndex
		}
		if a.Index != b.Index {
			return a.Index < b.Index
		}
		return a.UncompressedOffset < b.UncompressedOffset
	})
	return out, nil
}
