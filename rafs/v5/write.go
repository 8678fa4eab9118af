package v5

import (
	"fmt"

	"github.com/dfnydus/dfnydus/rafs"
)

// recordSize is the size of the record of the node in slot.
func (e *encoder) recordSize(slot uint32) uint64 {
	n := e.nodes[slot]
	name := uint64(len(n.Name))
	if slot == 0 {
		name = uint64(len(rootName))
	}
	size := inodeHeaderSize + align8(name) + align8(uint64(len(n.Inode.Symlink)))
	if len(n.Inode.Xattrs) > 0 {
		size += xattrHeaderSize + align8(xattrTableSize(n.Inode.Xattrs))
	}
	if n.Inode.IsReg() {
		size += chunkRecordSize * uint64(len(n.Inode.Chunks))
	}
	return size
}

// layout places the tables and records (builder/src/core/v5.rs v5_dump) and returns the total size.
func (e *encoder) layout(prefetch int) (uint64, error) {
	off := uint64(superblockSize) + align8(4*uint64(len(e.nodes))) + align8(4*uint64(prefetch)) +
		uint64(len(e.blobTable)) + extBlobEntrySize*uint64(e.extEntries)
	e.offsets = make([]uint64, len(e.nodes))
	for s := range e.nodes {
		e.offsets[s] = off
		if off += e.recordSize(uint32(s)); off > maxMetadataSize {
			return 0, fmt.Errorf("v5: encode: bootstrap would exceed %d bytes", uint64(maxMetadataSize))
		}
	}
	return off, nil
}

// write lays the bootstrap out into a buffer of the given size.
func (e *encoder) write(size uint64, prefetch []uint32) []byte {
	buf := make([]byte, size)
	inodeTableSize := align8(4 * uint64(len(e.nodes)))
	prefetchOff := superblockSize + inodeTableSize
	blobOff := prefetchOff + align8(4*uint64(len(prefetch)))
	extOff := blobOff + uint64(len(e.blobTable))
	sb := superblock{
		magic:               superMagic,
		version:             superVersion,
		sbSize:              superblockSize,
		blockSize:           e.img.ChunkSize,
		flags:               e.flags,
		inodesCount:         uint64(len(e.firstSlot)),
		inodeTableOffset:    superblockSize,
		prefetchTableOffset: prefetchOff,
		blobTableOffset:     blobOff,
		inodeTableEntries:   uint32(len(e.nodes)),
		prefetchEntries:     uint32(len(prefetch)),
		blobTableSize:       uint32(len(e.blobTable)),
		extBlobEntries:      uint32(e.extEntries),
		extBlobTableOffset:  extOff,
	}
	sb.marshal(buf)
	for s, off := range e.offsets {
		le.PutUint32(buf[superblockSize+4*uint64(s):], uint32(off>>3))
	}
	for i, ino := range prefetch {
		le.PutUint32(buf[prefetchOff+4*uint64(i):], ino+1)
	}
	copy(buf[blobOff:], e.blobTable)
	for i := range e.extEntries {
		b := e.img.Blobs[i]
		ext := buf[extOff+extBlobEntrySize*uint64(i):]
		le.PutUint32(ext[0:], b.ChunkCount)
		le.PutUint32(ext[4:], b.Features)
		le.PutUint64(ext[8:], b.UncompressedSize)
		le.PutUint64(ext[16:], b.CompressedSize)
	}
	for s := range e.nodes {
		e.writeRecord(buf[e.offsets[s]:], uint32(s))
	}
	return buf
}

// writeRecord writes the record of the node in slot (RafsV5InodeWrapper::store, store_v5 for the
// xattrs, then the chunk records).
func (e *encoder) writeRecord(b []byte, slot uint32) {
	n := e.nodes[slot]
	in := n.Inode
	name := n.Name
	if slot == 0 {
		name = rootName
	}
	rdev, _ := rdevToDisk(in.Rdev) // checked by checkInode
	h := inodeHeader{
		digest:      in.Digest,
		parent:      uint64(e.parents[slot]),
		ino:         in.Ino,
		uid:         in.UID,
		gid:         in.GID,
		projid:      in.ProjID,
		mode:        in.Mode,
		size:        in.Size,
		blocks:      in.Blocks,
		nlink:       in.Nlink,
		nameSize:    uint16(len(name)),
		symlinkSize: uint16(len(in.Symlink)),
		rdev:        rdev,
		mtimeNsec:   in.MtimeNsec,
		mtime:       in.Mtime,
	}
	switch {
	case in.IsDir():
		h.childIndex = e.firstChild[slot]
		h.childCount = uint32(len(n.Children))
	case in.IsReg():
		h.childCount = uint32(len(in.Chunks))
	case in.IsSymlink():
		h.flags |= inodeFlagSymlink
	}
	if len(in.Xattrs) > 0 {
		h.flags |= inodeFlagXattr
	}
	if in.HasHole {
		h.flags |= inodeFlagHasHole
	}
	h.marshal(b)
	p := uint64(inodeHeaderSize)
	copy(b[p:], name)
	p += align8(uint64(len(name)))
	copy(b[p:], in.Symlink)
	p += align8(uint64(len(in.Symlink)))
	if len(in.Xattrs) > 0 {
		le.PutUint64(b[p:], xattrTableSize(in.Xattrs))
		q := p + xattrHeaderSize
		for _, x := range in.Xattrs {
			le.PutUint32(b[q:], uint32(len(x.Name)+1+len(x.Value)))
			q += 4
			q += uint64(copy(b[q:], x.Name)) + 1
			q += uint64(copy(b[q:], x.Value))
		}
		p += xattrHeaderSize + align8(xattrTableSize(in.Xattrs))
	}
	if in.IsReg() {
		for i := range in.Chunks {
			rafs.MarshalChunkRecord(b[p:], &in.Chunks[i])
			p += chunkRecordSize
		}
	}
}
