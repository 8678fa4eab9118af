package v5

import (
	"encoding/binary"

	"github.com/dfnydus/dfnydus/rafs"
)

// On-disk sizes and limits (rafs/src/metadata/layout/v5.rs, rafs/src/metadata/mod.rs).
const (
	superMagic       = 0x5241_4653 // "SFAR" on disk
	superVersion     = 0x500       // RAFS_SUPER_VERSION_V5
	superblockSize   = 8192        // RAFSV5_SUPERBLOCK_SIZE
	inodeHeaderSize  = 128         // size_of::<RafsV5Inode>()
	chunkRecordSize  = 80          // size_of::<RafsV5ChunkInfo>()
	extBlobEntrySize = 64          // RAFSV5_EXT_BLOB_ENTRY_SIZE
	xattrHeaderSize  = 8           // RafsV5XAttrsTable: u64 content size
	maxMetadataSize  = 0x8000_0000 // RAFS_MAX_METADATA_SIZE
	rootIno          = 1           // RAFS_V5_ROOT_INODE
	rootName         = "/"         // the builder names the root inode "/"

	maxNameLen       = 255    // RAFS_MAX_NAME
	maxSymlinkLen    = 0xffff // i_symlink_size is a u16
	maxXattrNameLen  = 255    // RafsXAttrs::add
	maxXattrValueLen = 0x10000
	maxMtimeNsec     = 999_999_999
	modeMask         = 0o177777 // S_IFMT and permission bits; nothing above
)

// Inode flags (RafsInodeFlags in rafs/src/metadata/inode.rs).
const (
	inodeFlagSymlink  uint64 = 0x1
	inodeFlagHardlink uint64 = 0x2
	inodeFlagXattr    uint64 = 0x4
	inodeFlagHasHole  uint64 = 0x8
	knownInodeFlags          = inodeFlagSymlink | inodeFlagHardlink | inodeFlagXattr | inodeFlagHasHole
)

// Superblock flag groups (RafsSuperFlags in rafs/src/metadata/mod.rs). Bits 0x0400_0000 and up are
// "reserved for future compatible changes" and accepted as they are.
const (
	compressionFlags = rafs.FlagCompressNone | rafs.FlagCompressLZ4Block | rafs.FlagCompressGzip | rafs.FlagCompressZstd
	hashFlags        = rafs.FlagHashBlake3 | rafs.FlagHashSHA256
	knownSuperFlags  = 0x3ff | 0xff00_0000
	knownChunkFlags  = rafs.ChunkCompressed | rafs.ChunkHole | rafs.ChunkEncrypted | rafs.ChunkBatch | rafs.ChunkHasCRC32
)

var le = binary.LittleEndian

// align8 rounds n up to the 8-byte RAFS v5 alignment. Callers pass values far below 2^63.
func align8(n uint64) uint64 { return (n + 7) &^ 7 }

// superblock is RafsV5SuperBlock without its reserved tail.
type superblock struct {
	magic               uint32 // 0
	version             uint32 // 4
	sbSize              uint32 // 8
	blockSize           uint32 // 12: the chunk size
	flags               uint64 // 16
	inodesCount         uint64 // 24: unique inodes (hard links count once)
	inodeTableOffset    uint64 // 32
	prefetchTableOffset uint64 // 40
	blobTableOffset     uint64 // 48
	inodeTableEntries   uint32 // 56
	prefetchEntries     uint32 // 60
	blobTableSize       uint32 // 64: bytes
	extBlobEntries      uint32 // 68
	extBlobTableOffset  uint64 // 72
}

func (sb *superblock) unmarshal(b []byte) {
	sb.magic = le.Uint32(b[0:])
	sb.version = le.Uint32(b[4:])
	sb.sbSize = le.Uint32(b[8:])
	sb.blockSize = le.Uint32(b[12:])
	sb.flags = le.Uint64(b[16:])
	sb.inodesCount = le.Uint64(b[24:])
	sb.inodeTableOffset = le.Uint64(b[32:])
	sb.prefetchTableOffset = le.Uint64(b[40:])
	sb.blobTableOffset = le.Uint64(b[48:])
	sb.inodeTableEntries = le.Uint32(b[56:])
	sb.prefetchEntries = le.Uint32(b[60:])
	sb.blobTableSize = le.Uint32(b[64:])
	sb.extBlobEntries = le.Uint32(b[68:])
	sb.extBlobTableOffset = le.Uint64(b[72:])
}

func (sb *superblock) marshal(b []byte) {
	le.PutUint32(b[0:], sb.magic)
	le.PutUint32(b[4:], sb.version)
	le.PutUint32(b[8:], sb.sbSize)
	le.PutUint32(b[12:], sb.blockSize)
	le.PutUint64(b[16:], sb.flags)
	le.PutUint64(b[24:], sb.inodesCount)
	le.PutUint64(b[32:], sb.inodeTableOffset)
	le.PutUint64(b[40:], sb.prefetchTableOffset)
	le.PutUint64(b[48:], sb.blobTableOffset)
	le.PutUint32(b[56:], sb.inodeTableEntries)
	le.PutUint32(b[60:], sb.prefetchEntries)
	le.PutUint32(b[64:], sb.blobTableSize)
	le.PutUint32(b[68:], sb.extBlobEntries)
	le.PutUint64(b[72:], sb.extBlobTableOffset)
}

// inodeHeader is the fixed 128-byte part of an inode record (RafsV5Inode).
type inodeHeader struct {
	digest      rafs.Digest // 0
	parent      uint64      // 32: parent directory's inode number, 0 for the root
	ino         uint64      // 40: hard links repeat the first link's number
	uid         uint32      // 48
	gid         uint32      // 52
	projid      uint32      // 56
	mode        uint32      // 60
	size        uint64      // 64
	blocks      uint64      // 72
	flags       uint64      // 80
	nlink       uint32      // 88
	childIndex  uint32      // 92: directories: inode number of the first child
	childCount  uint32      // 96: directories: children; regular files: chunks
	nameSize    uint16      // 100
	symlinkSize uint16      // 102
	rdev        uint32      // 104
	mtimeNsec   uint32      // 108
	mtime       uint64      // 112
	// 120..128 reserved
}

func (h *inodeHeader) unmarshal(b []byte) {
	copy(h.digest[:], b[0:32])
	h.parent = le.Uint64(b[32:])
	h.ino = le.Uint64(b[40:])
	h.uid = le.Uint32(b[48:])
	h.gid = le.Uint32(b[52:])
	h.projid = le.Uint32(b[56:])
	h.mode = le.Uint32(b[60:])
	h.size = le.Uint64(b[64:])
	h.blocks = le.Uint64(b[72:])
	h.flags = le.Uint64(b[80:])
	h.nlink = le.Uint32(b[88:])
	h.childIndex = le.Uint32(b[92:])
	h.childCount = le.Uint32(b[96:])
	h.nameSize = le.Uint16(b[100:])
	h.symlinkSize = le.Uint16(b[102:])
	h.rdev = le.Uint32(b[104:])
	h.mtimeNsec = le.Uint32(b[108:])
	h.mtime = le.Uint64(b[112:])
}

func (h *inodeHeader) marshal(b []byte) {
	copy(b[0:32], h.digest[:])
	le.PutUint64(b[32:], h.parent)
	le.PutUint64(b[40:], h.ino)
	le.PutUint32(b[48:], h.uid)
	le.PutUint32(b[52:], h.gid)
	le.PutUint32(b[56:], h.projid)
	le.PutUint32(b[60:], h.mode)
	le.PutUint64(b[64:], h.size)
	le.PutUint64(b[72:], h.blocks)
	le.PutUint64(b[80:], h.flags)
	le.PutUint32(b[88:], h.nlink)
	le.PutUint32(b[92:], h.childIndex)
	le.PutUint32(b[96:], h.childCount)
	le.PutUint16(b[100:], h.nameSize)
	le.PutUint16(b[102:], h.symlinkSize)
	le.PutUint32(b[104:], h.rdev)
	le.PutUint32(b[108:], h.mtimeNsec)
	le.PutUint64(b[112:], h.mtime)
}
