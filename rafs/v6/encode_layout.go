package v6

// metaAllocator places inodes and their inline data in the meta area exactly as nydus-image does,
// so that the output matches upstream byte for byte. It mirrors BootstrapContext's offset,
// align_offset, allocate_available_block and append_available_block (builder/src/core/context.rs)
// and Node::v6_set_offset, v6_set_dir_offset and v6_set_offset_with_tail (builder/src/core/v6.rs).
//
// Offsets here are "build" offsets: the root directory lands at 4096 and the whole area is later
// shifted to meta_blkaddr*4096 + 4096 (v6_dump's meta_offset), which leaves nids unchanged.
type metaAllocator struct {
	offset uint64
	// avail[i] lists (FIFO) blocks that have exactly i*32..i*32+31 bytes free at their end.
	avail [blockSize / slotSize][]uint64
}

func newMetaAllocator() *metaAllocator { return &metaAllocator{offset: blockSize} }

func (a *metaAllocator) align(n uint64) { a.offset = roundUp(a.offset, n) }

// allocateAvailable reuses the tail of an earlier, partly used block for size bytes (which must be
// less than a block); it returns 0 when no such block has room.
func (a *metaAllocator) allocateAvailable(size uint64) uint64 {
	if size >= blockSize {
		return 0
	}
	minIdx := (size + slotSize - 1) / slotSize
	for idx := minIdx; idx < blockSize/slotSize; idx++ {
		q := a.avail[idx]
		if len(q) == 0 {
			continue
		}
		off := q[0] + blockSize - idx*slotSize
		a.avail[idx] = q[1:]
		a.appendAvailable(off + minIdx*slotSize)
		return off
	}
	return 0
}

// appendAvailable records the block containing off as having its bytes from off on free.
func (a *metaAllocator) appendAvailable(off uint64) {
	if off%blockSize != 0 {
		idx := (blockSize - off%blockSize) / slotSize
		a.avail[idx] = append(a.avail[idx], roundDown(off, blockSize))
	}
}

// placeWithTail places a directory or symlink: inode size isize (core + xattrs) and dataSize bytes
// of dirents or target. When the last partial block of data fits next to the inode it is inlined
// (FLAT_INLINE) and only whole blocks go to dataOff; otherwise all data goes to block-aligned
// dataOff (FLAT_PLAIN).
func (a *metaAllocator) placeWithTail(isize, dataSize uint64) (off, dataOff uint64, layout uint16) {
	tail := dataSize % blockSize
	if tail != 0 && isize+tail <= blockSize {
		off = a.allocateAvailable(isize + tail)
		if off == 0 {
			if blockSize-a.offset%blockSize < isize+tail {
				a.appendAvailable(a.offset)
				a.align(blockSize)
			}
			off = a.offset
			a.offset += isize + tail
		}
		if dataSize != tail {
			a.appendAvailable(a.offset)
			a.align(blockSize)
		}
		dataOff = a.offset
		a.offset += roundDown(dataSize, blockSize)
		a.align(slotSize)
		return off, dataOff, layoutFlatInline
	}
	off = a.allocateAvailable(isize)
	if off == 0 {
		off = a.offset
		a.offset += isize
	}
	a.appendAvailable(a.offset)
	a.align(blockSize)
	dataOff = a.offset
	a.offset += dataSize
	a.align(blockSize)
	a.align(slotSize)
	return off, dataOff, layoutFlatPlain
}

// placeChunked places a regular file: inode, xattrs, then its 8-byte aligned chunk addresses.
func (a *metaAllocator) placeChunked(isize, slots uint64) uint64 {
	total := roundUp(isize, chunkAddrSize) + slots*chunkAddrSize
	off := a.allocateAvailable(total)
	if off == 0 {
		off = a.offset
		a.offset += total
	}
	a.align(slotSize)
	return off
}

// placePlain places an inode without data (devices, fifos, sockets).
func (a *metaAllocator) placePlain(isize uint64) uint64 {
	off := a.offset
	a.offset += isize
	a.align(slotSize)
	return off
}

// layoutDir assigns build offsets in upstream's order (Bootstrap::build_rafs): a directory, then
// its non-directory children in name order, then each child directory recursively.
func (e *encoder) layoutDir(n *encNode) {
	st := n.st
	st.off, st.data, st.layout = e.alloc.placeWithTail(st.isize, st.size)
	st.placed = true
	var dirs []*encNode
	for _, c := range n.children {
		cs := c.st
		switch {
		case cs.in.IsDir():
			dirs = append(dirs, c)
		case cs.placed: // another name of an inode laid out already
			e.alloc.align(slotSize)
		case cs.in.IsReg():
			cs.off = e.alloc.placeChunked(cs.isize, uint64(len(cs.addrs)))
			cs.layout = layoutChunkBased
			cs.placed = true
		case cs.in.IsSymlink():
			cs.off, cs.data, cs.layout = e.alloc.placeWithTail(cs.isize, cs.size)
			cs.placed = true
		default:
			cs.off = e.alloc.placePlain(cs.isize)
			cs.layout = layoutFlatPlain
			cs.placed = true
		}
	}
	for _, d := range dirs {
		e.layoutDir(d)
	}
}

// walkDump visits nodes in upstream's dump order (Tree::walk_bfs): the root, then for each
// directory its children in name order followed by each child directory's subtree.
func walkDump(root *encNode, fn func(*encNode)) {
	fn(root)
	var walk func(n *encNode)
	walk = func(n *encNode) {
		for _, c := range n.children {
			fn(c)
		}
		for _, c := range n.children {
			if c.st.in.IsDir() {
				walk(c)
			}
		}
	}
	walk(root)
}
