package v6

import (
	"errors"
	"fmt"
	"math"
	"path"
	"sort"
	"strings"

	"github.com/dfnydus/dfnydus/rafs"
)

// maxFileSlots bounds the chunk addresses of one file (256 MiB of addresses; 32 TiB at the default
// 1 MiB chunk size) so a sparse model cannot make Encode allocate without limit.
const maxFileSlots = 1 << 25

// maxNameLen is EROFS_NAME_LEN.
const maxNameLen = 255

// Encode writes img as a RAFS v6 bootstrap laid out the way nydus-image (builder/src/core/v6.rs,
// v6_dump) lays it out; the same model always yields the same bytes. Rules worth knowing:
//
//   - Every inode is written in the 64-byte extended form, as nydus-image does for directory
//     sources, so uid/gid, mtime and nsec are kept exactly. i_ino is Inode.Ino (it must fit 32
//     bits); nydusd and the kernel identify inodes by nid and only report i_ino.
//   - Derived fields are computed, not copied: a directory's size is the byte size of its dirents,
//     a symlink's the length of its target, nlink is 2 + subdirectories for a directory and the
//     number of names for anything else; Inode.Blocks, ProjID, Digest and HasHole are ignored.
//   - Several names sharing one *rafs.Inode become one EROFS inode (a hard link) for any
//     non-directory type; upstream links only regular files and duplicates other types.
//   - A slot of a regular file without a chunk (a hole, Inode.Chunks has a gap) gets the EROFS
//     null block address, which the kernel reads as zeros; nydusd itself has no v6 holes.
//   - Superblock flags are img.Flags with the compressor and digester bits set from img's
//     Compressor and Digester, HAS_XATTR set when any inode has xattrs and INLINED_CHUNK_DIGEST set
//     when every blob has the inlined-chunk-digest feature (as upstream derives them).
//   - The prefetch table holds the nids of img.Prefetch, in order; like upstream it is only
//     written when the image has at least one blob.
//   - Chunk records are deduplicated by what a chunk address names (blob, chunk index, block) and
//     sorted by (digest, blob, chunk index); upstream deduplicates by (digest, blob), which is the
//     same for any image whose chunks are deduplicated by digest, as nydus-image builds them.
//   - Device slots are aligned to 512 KiB as nydus >= 2.3 does (2.2 aligned to 2 MiB).
//
// Fields v6 does not store are dropped: Image.Version, Inode.ProjID and Digest, Blob.Readahead*;
// a blob whose ChunkSize is 0 is written with the image's chunk size. Blobs must otherwise satisfy
// the checks Decode applies, so that Encode never writes a bootstrap Decode refuses.
//
// Chunk UncompressedOffsets must be 4 KiB aligned: they become EROFS block addresses.
func Encode(img *rafs.Image) ([]byte, error) {
	e := &encoder{img: img, states: map[*rafs.Inode]*inodeState{}}
	if err := e.validateImage(); err != nil {
		return nil, err
	}
	root, err := e.buildTree(img.Root, "/", nil)
	if err != nil {
		return nil, err
	}
	e.root = root
	for _, st := range e.order {
		if err := e.prepareInode(st); err != nil {
			return nil, err
		}
	}
	e.alloc = newMetaAllocator()
	e.layoutDir(root)
	return e.write()
}

// inodeState is what Encode knows about one model inode (shared by all its names).
type inodeState struct {
	in     *rafs.Inode
	first  string // path of its first name, for error messages
	refs   uint32
	nlink  uint32
	xattrs []byte
	icount uint16
	isize  uint64 // inode core + xattr body
	size   uint64 // i_size
	u      uint32 // i_u for regular files and special files
	addrs  []chunkAddr
	placed bool
	off    uint64 // build offset of the inode
	data   uint64 // build offset of whole data blocks (dirs and symlinks)
	layout uint16
	node   *encNode // the directory node, for dirs
}

// encNode is one name in the tree, children sorted by name.
type encNode struct {
	name     string
	st       *inodeState
	parent   *encNode
	children []*encNode
}

type encoder struct {
	img    *rafs.Image
	states map[*rafs.Inode]*inodeState
	order  []*inodeState // inodes in first-seen order
	nodes  uint64
	root   *encNode
	alloc  *metaAllocator
}

func (e *encoder) validateImage() error {
	img := e.img
	if img.Root == nil || img.Root.Inode == nil || !img.Root.Inode.IsDir() {
		return errors.New("v6 encode: image root is missing or not a directory")
	}
	if !rafs.ValidChunkSize(uint64(img.ChunkSize)) {
		return fmt.Errorf("v6 encode: chunk size %#x is not a power of two in [4 KiB, 16 MiB]", img.ChunkSize)
	}
	if img.Flags&rafs.FlagTarfsMode != 0 {
		return errors.New("v6 encode: tarfs mode is not supported")
	}
	if img.Compressor > rafs.CompressZstd || img.Digester > rafs.DigestSHA256 {
		return fmt.Errorf("v6 encode: unknown compressor %v or digester %v", img.Compressor, img.Digester)
	}
	if len(img.Blobs) > maxBlobs {
		return fmt.Errorf("v6 encode: %d blobs, at most %d fit the chunk address format", len(img.Blobs), maxBlobs)
	}
	for i, b := range img.Blobs {
		switch {
		case b == nil:
			return fmt.Errorf("v6 encode: blob %d is nil", i)
		case b.ID == "" || len(b.ID) > blobIDLen || strings.IndexByte(b.ID, 0) >= 0:
			return fmt.Errorf("v6 encode: blob %d id %q must be 1..%d bytes without NUL", i, b.ID, blobIDLen)
		case b.ChunkSize != 0 && !rafs.ValidChunkSize(uint64(b.ChunkSize)):
			return fmt.Errorf("v6 encode: blob %d chunk size %#x is not a power of two in [4 KiB, 16 MiB]", i, b.ChunkSize)
		case b.Compressor > rafs.CompressZstd || b.MetaCompressor > rafs.CompressZstd || b.Digester > rafs.DigestSHA256:
			return fmt.Errorf("v6 encode: blob %d has an unknown compressor or digester", i)
		case b.ChunkCount > maxChunksPerBlob:
			return fmt.Errorf("v6 encode: blob %d has %d chunks, more than %d", i, b.ChunkCount, maxChunksPerBlob)
		case b.UncompressedSize > maxBlobUncompressed || b.CompressedSize > maxBlobCompressed:
			return fmt.Errorf("v6 encode: blob %d sizes %d/%d exceed the format limits", i, b.CompressedSize, b.UncompressedSize)
		case b.MetaOffset+b.MetaCompressedSize < b.MetaOffset || b.MetaCompressedSize > b.MetaUncompressedSize:
			return fmt.Errorf("v6 encode: blob %d chunk-info range is invalid", i)
		case b.UncompressedSize/blockSize > math.MaxUint32:
			return fmt.Errorf("v6 encode: blob %d uncompressed size %d is too big for the device table", i, b.UncompressedSize)
		}
	}
	return nil
}

// buildTree copies the model tree, sorting children and checking names and types.
// p is the node's path (the model's Parent links are not relied upon).
func (e *encoder) buildTree(n *rafs.Node, p string, up *encNode) (*encNode, error) {
	if n.Inode == nil {
		return nil, fmt.Errorf("v6 encode: %s has no inode", p)
	}
	if up != nil {
		if err := checkName(n.Name); err != nil {
			return nil, fmt.Errorf("v6 encode: %s: %w", p, err)
		}
	}
	st, seen := e.states[n.Inode]
	if seen && n.Inode.IsDir() {
		return nil, fmt.Errorf("v6 encode: directory inode of %s is also reachable as %s (directory hard link or cycle)", st.first, p)
	}
	if !seen {
		st = &inodeState{in: n.Inode, first: p}
		e.states[n.Inode] = st
		e.order = append(e.order, st)
	}
	st.refs++
	e.nodes++
	en := &encNode{name: n.Name, st: st, parent: up}
	if !n.Inode.IsDir() {
		if len(n.Children) > 0 {
			return nil, fmt.Errorf("v6 encode: %s is not a directory but has children", p)
		}
		return en, nil
	}
	st.node = en
	kids := append([]*rafs.Node(nil), n.Children...)
	for _, k := range kids {
		if k == nil {
			return nil, fmt.Errorf("v6 encode: %s has a nil child", p)
		}
	}
	sort.SliceStable(kids, func(i, j int) bool { return kids[i].Name < kids[j].Name })
	subdirs := uint32(0)
	for i, k := range kids {
		if i > 0 && kids[i-1].Name == k.Name {
			return nil, fmt.Errorf("v6 encode: %s has two children named %q", p, k.Name)
		}
		c, err := e.buildTree(k, path.Join(p, k.Name), en)
		if err != nil {
			return nil, err
		}
		if c.st.in.IsDir() {
			subdirs++
		}
		en.children = append(en.children, c)
	}
	st.nlink = 2 + subdirs
	return en, nil
}

func checkName(name string) error {
	switch {
	case name == "" || name == "." || name == "..":
		return fmt.Errorf("invalid name %q", name)
	case len(name) > maxNameLen:
		return fmt.Errorf("name of %d bytes exceeds %d", len(name), maxNameLen)
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("name %q contains '/' or NUL", name)
	}
	return nil
}

// lookup finds the node at an absolute path.
func (e *encoder) lookup(p string) *encNode {
	n := e.root
	for _, part := range strings.Split(strings.Trim(path.Clean("/"+p), "/"), "/") {
		if part == "" {
			continue
		}
		i := sort.Search(len(n.children), func(i int) bool { return n.children[i].name >= part })
		if i == len(n.children) || n.children[i].name != part {
			return nil
		}
		n = n.children[i]
	}
	return n
}
