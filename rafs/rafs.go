// Package rafs is the in-memory model of a nydus RAFS image: the bootstrap's tree of inodes, each
// regular file's chunks, and the table of data blobs those chunks live in. The on-disk codecs
// (rafs/v5, rafs/v6), the blob layout (rafs/blob) and the builder (rafs/builder) all speak this model,
// so a v5 image and a v6 image of the same tree compare equal here.
//
// Format facts come from dragonflyoss/nydus (rafs/src/metadata/layout/*.rs, storage/src/meta/*.rs);
// see ../docs/architecture.md and the notes cited there.
package rafs

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
)

// ErrCorrupt is wrapped by every error that reports bytes that break the format's rules.
var ErrCorrupt = errors.New("corrupt rafs data")

// Corruptf returns an error that wraps ErrCorrupt with a message naming what was wrong.
func Corruptf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
}

// Superblock flags; v5 and v6 share the bits (rafs/src/metadata/mod.rs RafsSuperFlags).
const (
	FlagCompressNone     uint64 = 0x1
	FlagCompressLZ4Block uint64 = 0x2
	FlagHashBlake3       uint64 = 0x4
	FlagHashSHA256       uint64 = 0x8
	FlagExplicitUIDGID   uint64 = 0x10
	FlagHasXattr         uint64 = 0x20
	FlagCompressGzip     uint64 = 0x40
	FlagCompressZstd     uint64 = 0x80
	FlagInlinedChunkDig  uint64 = 0x100
	FlagTarfsMode        uint64 = 0x200
	FlagEncryptionNone   uint64 = 0x0100_0000
	FlagEncryptionAES128 uint64 = 0x0200_0000
)

// Chunk flags (BlobChunkFlags in rafs/src/metadata/layout/v5.rs).
const (
	ChunkCompressed uint32 = 0x1
	ChunkHole       uint32 = 0x2
	ChunkEncrypted  uint32 = 0x4
	ChunkBatch      uint32 = 0x8
	ChunkHasCRC32   uint32 = 0x10
)

// DefaultChunkSize is nydus-image's default chunk size (1 MiB).
const DefaultChunkSize = 0x100000

// MinChunkSize and MaxChunkSize bound the chunk size: a power of two in [4 KiB, 16 MiB].
const (
	MinChunkSize = 0x1000
	MaxChunkSize = 0x1000000
)

// ValidChunkSize reports whether n is a chunk size nydus accepts.
func ValidChunkSize(n uint64) bool {
	return n >= MinChunkSize && n <= MaxChunkSize && n&(n-1) == 0
}

// Compressor is a chunk compression algorithm. The numeric values are the v6 blob table's
// compression_algo codes (rafs/src/metadata/layout/v6.rs).
type Compressor uint32

const (
	CompressNone     Compressor = 0
	CompressLZ4Block Compressor = 1
	CompressGzip     Compressor = 2
	CompressZstd     Compressor = 3
)

var compressorNames = map[Compressor]string{CompressNone: "none", CompressLZ4Block: "lz4_block", CompressGzip: "gzip", CompressZstd: "zstd"}

func (c Compressor) String() string {
	if s, ok := compressorNames[c]; ok {
		return s
	}
	return fmt.Sprintf("compressor(%d)", uint32(c))
}

// ParseCompressor maps a CLI name (none, lz4_block, gzip, zstd) to a Compressor.
func ParseCompressor(s string) (Compressor, error) {
	for c, n := range compressorNames {
		if n == s {
			return c, nil
		}
	}
	return 0, fmt.Errorf("unknown compressor %q (want none, lz4_block, gzip or zstd)", s)
}

// Flag returns the superblock flag bit for c.
func (c Compressor) Flag() uint64 {
	switch c {
	case CompressLZ4Block:
		return FlagCompressLZ4Block
	case CompressGzip:
		return FlagCompressGzip
	case CompressZstd:
		return FlagCompressZstd
	default:
		return FlagCompressNone
	}
}

// CompressorFromFlags picks the compressor named by superblock flags.
func CompressorFromFlags(f uint64) (Compressor, error) {
	switch {
	case f&FlagCompressZstd != 0:
		return CompressZstd, nil
	case f&FlagCompressGzip != 0:
		return CompressGzip, nil
	case f&FlagCompressLZ4Block != 0:
		return CompressLZ4Block, nil
	case f&FlagCompressNone != 0:
		return CompressNone, nil
	}
	return 0, Corruptf("superblock flags %#x name no compressor", f)
}

// Digester is a digest algorithm. The numeric values are the v6 blob table's digest_algo codes.
type Digester uint32

const (
	DigestBlake3 Digester = 0
	DigestSHA256 Digester = 1
)

func (d Digester) String() string {
	switch d {
	case DigestBlake3:
		return "blake3"
	case DigestSHA256:
		return "sha256"
	}
	return fmt.Sprintf("digester(%d)", uint32(d))
}

// ParseDigester maps a CLI name (blake3, sha256) to a Digester.
func ParseDigester(s string) (Digester, error) {
	switch s {
	case "blake3":
		return DigestBlake3, nil
	case "sha256":
		return DigestSHA256, nil
	}
	return 0, fmt.Errorf("unknown digester %q (want blake3 or sha256)", s)
}

// Flag returns the superblock flag bit for d.
func (d Digester) Flag() uint64 {
	if d == DigestSHA256 {
		return FlagHashSHA256
	}
	return FlagHashBlake3
}

// DigesterFromFlags picks the digester named by superblock flags.
func DigesterFromFlags(f uint64) (Digester, error) {
	switch {
	case f&FlagHashSHA256 != 0:
		return DigestSHA256, nil
	case f&FlagHashBlake3 != 0:
		return DigestBlake3, nil
	}
	return 0, Corruptf("superblock flags %#x name no digester", f)
}

// Digest is a 32-byte blake3 or sha256 digest.
type Digest [32]byte

func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// IsZero reports whether d is all zeros.
func (d Digest) IsZero() bool { return d == Digest{} }

// Chunk is one chunk of a regular file: where its bytes live in which blob, and the digest of its
// uncompressed bytes. It mirrors the 80-byte chunk-info record shared by v5 and v6.
type Chunk struct {
	Digest             Digest // of the uncompressed bytes (block_id)
	BlobIndex          uint32 // index into Image.Blobs
	Flags              uint32 // Chunk* flags
	CompressedOffset   uint64 // in the blob file
	CompressedSize     uint32
	UncompressedOffset uint64 // in the blob's uncompressed view; 4 KiB aligned for v6
	UncompressedSize   uint32
	FileOffset         uint64 // offset of this chunk within its file
	Index              uint32 // chunk index within its blob
	CRC32              uint32
}

// IsCompressed reports whether the chunk's bytes are stored compressed.
func (c *Chunk) IsCompressed() bool { return c.Flags&ChunkCompressed != 0 }

// Blob describes one data blob of the image: its id (hex sha256 of the blob file, which is also the
// OCI layer digest) and, for the nydus 2.2+ layout, where its blob.meta and ToC are.
type Blob struct {
	ID               string
	ChunkSize        uint32
	ChunkCount       uint32
	Compressor       Compressor
	Digester         Digester
	Features         uint32 // BlobFeatures bits (storage/src/device.rs)
	CompressedSize   uint64 // size of the whole blob file, as nydus-image records it
	UncompressedSize uint64 // size of the uncompressed view

	// Chunk-info (blob.meta) location inside the blob file, nydus >= 2.2.
	MetaCompressor       Compressor
	MetaOffset           uint64
	MetaCompressedSize   uint64
	MetaUncompressedSize uint64
	TOCSize              uint32
	TOCDigest            Digest
	MetaDigest           Digest
	MetaSize             uint64

	// v5 blob table readahead hint.
	ReadaheadOffset uint32
	ReadaheadSize   uint32
}

// BlobFeatures bits (storage/src/device.rs BlobFeatures in dragonflyoss/nydus).
const (
	BlobFeatureAligned            uint32 = 0x1
	BlobFeatureInlinedFSMeta      uint32 = 0x2
	BlobFeatureChunkInfoV2        uint32 = 0x4
	BlobFeatureZran               uint32 = 0x8
	BlobFeatureSeparate           uint32 = 0x10
	BlobFeatureInlinedChunkDigest uint32 = 0x20
	BlobFeatureTarfs              uint32 = 0x40
	BlobFeatureBatch              uint32 = 0x80
	BlobFeatureEncrypted          uint32 = 0x100
	BlobFeatureChunkdictGenerated uint32 = 0x200
	BlobFeatureSeparatedPrefetch  uint32 = 0x400 // prefetch files' chunks in a blob of their own
	BlobFeatureExternal           uint32 = 0x800 // chunks in an external storage backend
	BlobFeatureHasTarHeader       uint32 = 0x1000_0000
	BlobFeatureHasTOC             uint32 = 0x2000_0000
	BlobFeatureCapTarTOC          uint32 = 0x4000_0000
	BlobFeatureV5NoExtBlobTable   uint32 = 0x8000_0000
)

// Xattr is one extended attribute.
type Xattr struct {
	Name  string
	Value []byte
}

// Inode holds the metadata of one filesystem object. Hard links are several Nodes sharing one *Inode.
type Inode struct {
	Ino       uint64 // stable inode number; hard links share it
	Mode      uint32 // permission bits and S_IFMT file type, as in stat(2)
	UID, GID  uint32
	ProjID    uint32
	Size      uint64 // bytes for regular files, target length for symlinks, synthetic for dirs
	Blocks    uint64 // 512-byte blocks, as the codec stores them
	Nlink     uint32
	Rdev      uint64 // Linux dev_t (unix.Mkdev) for char/block devices
	Mtime     uint64 // seconds
	MtimeNsec uint32
	Symlink   string  // target, for symlinks
	Xattrs    []Xattr // sorted by name
	Chunks    []Chunk // regular files: in file-offset order; gaps are holes
	HasHole   bool
	Digest    Digest // v5 Merkle digest (zero for v6 images)
}

// Type returns the file-type bits of Mode.
func (i *Inode) Type() fs.FileMode { return ModeType(i.Mode) }

// IsDir, IsReg, IsSymlink are shorthands on the file type.
func (i *Inode) IsDir() bool     { return i.Mode&SIFMT == SIFDIR }
func (i *Inode) IsReg() bool     { return i.Mode&SIFMT == SIFREG }
func (i *Inode) IsSymlink() bool { return i.Mode&SIFMT == SIFLNK }

// Xattr returns the value of xattr name and whether it is set.
func (i *Inode) Xattr(name string) ([]byte, bool) {
	for _, x := range i.Xattrs {
		if x.Name == name {
			return x.Value, true
		}
	}
	return nil, false
}

// S_IFMT constants (stat(2)); spelled out so the model does not depend on the host OS.
const (
	SIFMT   uint32 = 0o170000
	SIFSOCK uint32 = 0o140000
	SIFLNK  uint32 = 0o120000
	SIFREG  uint32 = 0o100000
	SIFBLK  uint32 = 0o060000
	SIFDIR  uint32 = 0o040000
	SIFCHR  uint32 = 0o020000
	SIFIFO  uint32 = 0o010000
)

// ModeType converts the S_IFMT bits of a stat mode into an fs.FileMode type.
func ModeType(mode uint32) fs.FileMode {
	switch mode & SIFMT {
	case SIFDIR:
		return fs.ModeDir
	case SIFLNK:
		return fs.ModeSymlink
	case SIFCHR:
		return fs.ModeDevice | fs.ModeCharDevice
	case SIFBLK:
		return fs.ModeDevice
	case SIFIFO:
		return fs.ModeNamedPipe
	case SIFSOCK:
		return fs.ModeSocket
	}
	return 0
}

// Node is one directory entry: a name in a directory, pointing at an inode. Children are kept
// sorted by name (byte order), which is the order both codecs store and the Merkle rule hashes.
type Node struct {
	Name     string
	Inode    *Inode
	Parent   *Node
	Children []*Node
}

// Path returns the absolute path of n inside the image ("/" for the root).
func (n *Node) Path() string {
	if n.Parent == nil {
		return "/"
	}
	var parts []string
	for p := n; p.Parent != nil; p = p.Parent {
		parts = append(parts, p.Name)
	}
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	return "/" + strings.Join(parts, "/")
}

// Child returns the child named name, using binary search over the sorted children.
func (n *Node) Child(name string) *Node {
	i := sort.Search(len(n.Children), func(i int) bool { return n.Children[i].Name >= name })
	if i < len(n.Children) && n.Children[i].Name == name {
		return n.Children[i]
	}
	return nil
}

// AddChild inserts c (keeping the order) or replaces an existing child of the same name.
func (n *Node) AddChild(c *Node) {
	c.Parent = n
	i := sort.Search(len(n.Children), func(i int) bool { return n.Children[i].Name >= c.Name })
	if i < len(n.Children) && n.Children[i].Name == c.Name {
		n.Children[i] = c
		return
	}
	n.Children = append(n.Children, nil)
	copy(n.Children[i+1:], n.Children[i:])
	n.Children[i] = c
}

// RemoveChild deletes the child named name, if present.
func (n *Node) RemoveChild(name string) {
	i := sort.Search(len(n.Children), func(i int) bool { return n.Children[i].Name >= name })
	if i < len(n.Children) && n.Children[i].Name == name {
		n.Children = append(n.Children[:i], n.Children[i+1:]...)
	}
}

// Image is a whole RAFS image: its tree and the blobs its chunks point into.
type Image struct {
	Version   int    // 5 or 6
	Flags     uint64 // superblock flags as read (or as the encoder will write them)
	ChunkSize uint32
	Compressor
	Digester
	Blobs    []*Blob
	Root     *Node
	Prefetch []string // absolute paths from the prefetch table (a directory means its whole subtree)
}

// Walk visits every node in depth-first pre-order, children in name order. Returning fs.SkipDir from
// fn for a directory skips its children.
func (img *Image) Walk(fn func(p string, n *Node) error) error {
	var walk func(p string, n *Node) error
	walk = func(p string, n *Node) error {
		if err := fn(p, n); err != nil {
			if errors.Is(err, fs.SkipDir) {
				return nil
			}
			return err
		}
		for _, c := range n.Children {
			if err := walk(path.Join(p, c.Name), c); err != nil {
				return err
			}
		}
		return nil
	}
	if img.Root == nil {
		return Corruptf("image has no root")
	}
	return walk("/", img.Root)
}

// Lookup returns the node at absolute path p, or nil.
func (img *Image) Lookup(p string) *Node {
	n := img.Root
	for _, part := range strings.Split(strings.Trim(path.Clean("/"+p), "/"), "/") {
		if part == "" {
			continue
		}
		if n = n.Child(part); n == nil {
			return nil
		}
	}
	return n
}

// BlobByID returns the index of the blob with the given id, or -1.
func (img *Image) BlobByID(id string) int {
	for i, b := range img.Blobs {
		if b.ID == id {
			return i
		}
	}
	return -1
}

// ChunkReader returns the verified, uncompressed bytes of one chunk of a blob. The local blob
// directory (rafs/blob), the peer's store and fetcher, and tests all implement it; unpack, check and
// the FUSE filesystem consume it. buf, when not nil, is memory the result may be decoded into
// (when its capacity suffices); a result in buf belongs to the caller, who may reuse it, so a
// reader keeps no reference to it.
type ChunkReader interface {
	ReadChunk(ctx context.Context, blob *Blob, c *Chunk, buf []byte) ([]byte, error)
}
