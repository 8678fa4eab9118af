package v5

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/dfnydus/dfnydus/rafs"
)

// Encode serialises img as a RAFS v5 bootstrap, laid out as nydus-image lays it out: inode numbers
// handed out directory by directory (root 1, each directory's children consecutive and sorted by
// name, subdirectories in name order), records in inode-number order, tables before the records.
// The same model always gives the same bytes.
//
// Encode first checks the whole model and returns an error without touching it if RAFS v5 cannot
// represent it (for example a hard-linked directory or symlink, an xattr outside the user.,
// security., trusted. and system.posix_acl_* namespaces, a device number above 32 bits, chunks
// that overlap). It then normalises img to what it writes, so that Decode of the result equals
// img:
//   - Inode.Ino, Inode.Nlink (2 + subdirectories for a directory, the number of links for a file),
//     Inode.Blocks (512-byte units of size plus xattrs), the synthetic size of directories
//     (round_up_4k of 8 + name length per child) and the size of symlinks (target length);
//   - Inode.HasHole, set whenever the chunks are not the dense chunk-size layout readers assume;
//   - Inode.Xattrs sorted by name, Inode.Digest set to the Merkle digest computed with img.Digester;
//   - img.Flags: the compressor, digester and HAS_XATTR bits derived from the model; the other
//     known bits kept as they are, except that EXPLICIT_UID_GID is set when any inode has a
//     non-zero uid or gid (readers ignore stored ids without it) and, as nydus-image does by
//     default, when img.Flags is 0 (a model that was never read from a bootstrap);
//   - img.Prefetch paths in canonical form (a hard link is named by its first link).
//
// Blobs keep their fields; v5 has no place for a blob's meta/ToC location, and a blob's chunk
// size, compressor and digester are the image's.
func Encode(img *rafs.Image) ([]byte, error) {
	e := &encoder{img: img, links: make(map[*rafs.Inode]uint32)}
	if err := e.checkImage(); err != nil {
		return nil, err
	}
	if err := e.number(); err != nil {
		return nil, err
	}
	for _, slot := range e.firstSlot {
		if err := e.checkInode(slot); err != nil {
			return nil, err
		}
	}
	prefetch, err := e.prefetchInodes()
	if err != nil {
		return nil, err
	}
	size, err := e.layout(len(prefetch))
	if err != nil {
		return nil, err
	}
	// Nothing below fails: normalise the model, then write it.
	e.derive()
	for i := range prefetch {
		img.Prefetch[i] = e.path(prefetch[i])
	}
	return e.write(size, prefetch), nil
}

// encoder holds the inode table being built. Slices indexed by slot hold inode number slot+1.
type encoder struct {
	img        *rafs.Image
	flags      uint64
	nodes      []*rafs.Node // table order
	parents    []uint32     // parent directory's inode number, 0 for the root
	firstChild []uint32     // directories: inode number of the first child
	subdirs    []uint32     // directories: number of subdirectories
	offsets    []uint64     // byte offset of each record
	firstSlot  []uint32     // slot of each distinct inode's first link, in order
	links      map[*rafs.Inode]uint32
	blobTable  []byte
	extEntries int
}

func (e *encoder) errorf(slot uint32, format string, args ...any) error {
	return fmt.Errorf("v5: encode %s: %s", e.path(slot), fmt.Sprintf(format, args...))
}

// path returns the absolute path of the node in slot.
func (e *encoder) path(slot uint32) string {
	var parts []string
	for s := slot; s != 0; s = e.parents[s] - 1 {
		parts = append(parts, e.nodes[s].Name)
	}
	slices.Reverse(parts)
	return "/" + strings.Join(parts, "/")
}

// checkImage checks the image-wide settings and the blobs, and works out the superblock flags.
func (e *encoder) checkImage() error {
	img := e.img
	switch {
	case img == nil || img.Root == nil:
		return fmt.Errorf("v5: encode: image has no root")
	case !rafs.ValidChunkSize(uint64(img.ChunkSize)):
		return fmt.Errorf("v5: encode: chunk size %#x is not a power of two in [%#x, %#x]", img.ChunkSize, rafs.MinChunkSize, rafs.MaxChunkSize)
	case img.Compressor > rafs.CompressZstd:
		return fmt.Errorf("v5: encode: unknown compressor %v", img.Compressor)
	case img.Digester > rafs.DigestSHA256:
		return fmt.Errorf("v5: encode: unknown digester %v", img.Digester)
	}
	e.flags = img.Flags &^ (compressionFlags | hashFlags | rafs.FlagHasXattr)
	if e.flags&^knownSuperFlags != 0 {
		return fmt.Errorf("v5: encode: image flags %#x have bits RAFS does not define", img.Flags)
	}
	if img.Flags == 0 {
		// A model never read from a bootstrap (those always name a compressor): take nydus-image's
		// default, explicit_uidgid = !repeatable (src/bin/nydus-image/main.rs).
		e.flags = rafs.FlagExplicitUIDGID
	}
	e.flags |= img.Compressor.Flag() | img.Digester.Flag()
	for i, b := range img.Blobs {
		if err := checkBlob(i, b, img.ChunkSize); err != nil {
			return fmt.Errorf("v5: encode: %w", err)
		}
	}
	e.blobTable = encodeBlobTable(img.Blobs)
	if needExtBlobTable(img.Blobs) {
		e.extEntries = len(img.Blobs)
	}
	return nil
}

// number hands out inode numbers as nydus-image's build_rafs does (builder/src/core/bootstrap.rs):
// a directory's children get consecutive numbers, then its subdirectories are numbered in order,
// depth first. It also checks the tree's shape: names, order, hard links.
func (e *encoder) number() error {
	root := e.img.Root
	if root.Inode == nil || !root.Inode.IsDir() {
		return fmt.Errorf("v5: encode: root is not a directory")
	}
	e.add(root, 0)
	seen := map[*rafs.Node]bool{root: true}
	stack := []uint32{0}
	for len(stack) > 0 {
		p := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		dir := e.nodes[p]
		e.firstChild[p] = uint32(len(e.nodes) + 1)
		mark := len(stack)
		for i, c := range dir.Children {
			if c == nil || c.Inode == nil || seen[c] {
				return e.errorf(p, "child %d is nil, has no inode, or appears twice in the tree", i)
			}
			if err := checkName(c.Name); err != nil {
				return e.errorf(p, "child %d: %v", i, err)
			}
			if i > 0 && dir.Children[i-1].Name >= c.Name {
				return e.errorf(p, "children %q and %q are not in strictly increasing name order", dir.Children[i-1].Name, c.Name)
			}
			if len(e.nodes) >= math.MaxUint32 {
				return e.errorf(p, "more than %d inodes", uint32(math.MaxUint32))
			}
			if e.links[c.Inode] > 0 && !c.Inode.IsReg() {
				first := e.firstSlot[slices.IndexFunc(e.firstSlot, func(s uint32) bool { return e.nodes[s].Inode == c.Inode })]
				return e.errorf(p, "child %q shares its inode with %s, but RAFS v5 hard links must be regular files", c.Name, e.path(first))
			}
			seen[c] = true
			slot := e.add(c, p+1)
			switch {
			case c.Inode.IsDir():
				e.subdirs[p]++
				stack = append(stack, slot)
			case len(c.Children) > 0:
				return e.errorf(slot, "is not a directory but has %d children", len(c.Children))
			}
		}
		slices.Reverse(stack[mark:])
	}
	return nil
}

// add appends n to the inode table with the given parent inode number and returns its slot.
func (e *encoder) add(n *rafs.Node, parent uint32) uint32 {
	slot := uint32(len(e.nodes))
	e.nodes = append(e.nodes, n)
	e.parents = append(e.parents, parent)
	e.firstChild = append(e.firstChild, 0)
	e.subdirs = append(e.subdirs, 0)
	if e.links[n.Inode] == 0 {
		e.firstSlot = append(e.firstSlot, slot)
	}
	e.links[n.Inode]++
	return slot
}

// checkInode checks the inode first linked at slot against what RAFS v5 can store.
func (e *encoder) checkInode(slot uint32) error {
	in := e.nodes[slot].Inode
	if err := checkMode(in.Mode); err != nil {
		return e.errorf(slot, "%v", err)
	}
	switch {
	case in.MtimeNsec > maxMtimeNsec:
		return e.errorf(slot, "mtime nanoseconds %d exceed %d", in.MtimeNsec, maxMtimeNsec)
	case !in.IsSymlink() && in.Symlink != "":
		return e.errorf(slot, "mode %#o with a symlink target", in.Mode)
	case !in.IsReg() && (len(in.Chunks) > 0 || in.HasHole):
		return e.errorf(slot, "mode %#o with chunks or a hole", in.Mode)
	}
	if in.IsSymlink() {
		if err := checkSymlink(in.Symlink); err != nil {
			return e.errorf(slot, "%v", err)
		}
	}
	if _, err := rdevToDisk(in.Rdev); err != nil {
		return e.errorf(slot, "%v", err)
	}
	xs := in.Xattrs
	if !slices.IsSortedFunc(xs, compareXattrs) {
		xs = slices.SortedStableFunc(slices.Values(xs), compareXattrs)
	}
	for _, x := range xs {
		if err := checkXattr(x.Name, x.Value); err != nil {
			return e.errorf(slot, "%v", err)
		}
	}
	if err := checkXattrsSorted(xs); err != nil {
		return e.errorf(slot, "%v", err)
	}
	if in.IsReg() {
		if uint64(len(in.Chunks)) > math.MaxUint32 {
			return e.errorf(slot, "%d chunks", len(in.Chunks))
		}
		if err := checkChunks(in.Chunks, in.Size, e.img.ChunkSize, e.img.Compressor, e.img.Blobs); err != nil {
			return e.errorf(slot, "%v", err)
		}
	}
	return nil
}

func compareXattrs(a, b rafs.Xattr) int { return strings.Compare(a.Name, b.Name) }

// prefetchInodes resolves the prefetch paths to inode numbers, as the builder stores them.
func (e *encoder) prefetchInodes() ([]uint32, error) {
	inos := make([]uint32, 0, len(e.img.Prefetch))
	slotOf := make(map[*rafs.Inode]uint32, len(e.firstSlot))
	for _, s := range e.firstSlot {
		slotOf[e.nodes[s].Inode] = s
	}
	for _, p := range e.img.Prefetch {
		n := e.img.Lookup(p)
		if n == nil || n.Inode == nil {
			return nil, fmt.Errorf("v5: encode: prefetch path %q is not in the image", p)
		}
		s, ok := slotOf[n.Inode]
		if !ok {
			return nil, fmt.Errorf("v5: encode: prefetch path %q resolves outside the tree", p)
		}
		inos = append(inos, s)
	}
	return inos, nil
}

// derive normalises the model to what will be written: see Encode.
func (e *encoder) derive() {
	cs := uint64(e.img.ChunkSize)
	explicitIDs := false
	hasXattr := false
	for _, slot := range e.firstSlot {
		n := e.nodes[slot]
		in := n.Inode
		in.Ino = uint64(slot) + 1
		if !slices.IsSortedFunc(in.Xattrs, compareXattrs) {
			slices.SortStableFunc(in.Xattrs, compareXattrs)
		}
		switch {
		case in.IsDir():
			in.Nlink = 2 + e.subdirs[slot]
			var entries uint64
			for _, c := range n.Children {
				entries += uint64(len(c.Name)) + 8 // RAFS_V5_VIRTUAL_ENTRY_SIZE
			}
			in.Size = max(4096, (entries+4095)&^4095)
		case in.IsReg():
			in.Nlink = e.links[in]
			in.HasHole = in.HasHole || !denseChunks(in.Chunks, in.Size, uint32(cs))
		case in.IsSymlink():
			in.Nlink = 1
			in.Size = uint64(len(in.Symlink))
		default:
			in.Nlink = 1
		}
		// v5_set_inode_blocks: 512-byte blocks of the size plus the aligned xattr table.
		xa := align8(xattrTableSize(in.Xattrs))
		in.Blocks = in.Size>>9 + (in.Size&511+xa+511)>>9
		explicitIDs = explicitIDs || in.UID != 0 || in.GID != 0
		hasXattr = hasXattr || len(in.Xattrs) > 0
	}
	// Merkle digests, children first: a child always has a larger inode number than its parent.
	done := make(map[*rafs.Inode]bool, len(e.firstSlot))
	for s := len(e.nodes) - 1; s >= 0; s-- {
		n := e.nodes[s]
		if n.Inode.IsDir() || !done[n.Inode] {
			n.Inode.Digest = nodeDigest(e.img.Digester, n)
			done[n.Inode] = true
		}
	}
	if explicitIDs {
		e.flags |= rafs.FlagExplicitUIDGID
	}
	if hasXattr {
		e.flags |= rafs.FlagHasXattr
	}
	e.img.Flags = e.flags
}
