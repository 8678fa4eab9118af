package v6

import (
	"bytes"
	"encoding/binary"

	"github.com/dfnydus/dfnydus/rafs"
)

// On-disk constants. Sources: rafs/src/metadata/layout/v6.rs in dragonflyoss/nydus and the Linux
// EROFS on-disk format (fs/erofs/erofs_fs.h).
const (
	blockBits = 12
	blockSize = 1 << blockBits // EROFS logical block size nydus uses (4 KiB)

	superOffset      = 1024
	superSize        = 128
	extSuperOffset   = superOffset + superSize // 1152
	extSuperSize     = 256
	devTableOffset   = extSuperOffset + extSuperSize // 1408
	devSlotSize      = 128
	devSlotOffUnits  = devTableOffset / devSlotSize // s_devt_slotoff = 11
	blobEntrySize    = 256
	chunkRecordSize  = 80
	chunkAddrSize    = 8
	direntSize       = 12
	slotBits         = 5
	slotSize         = 1 << slotBits // nid unit: inode offset = meta_blkaddr*4096 + nid*32
	compactInodeSize = 32
	extInodeSize     = 64
	xattrHeaderSize  = 12
	xattrEntrySize   = 4
	prefetchEntrySz  = 4
	blobIDLen        = 64

	erofsMagic                 = 0xE0F5E1E2
	featureCompatRafsV6        = 0x4000_0000
	featureIncompatChunkedFile = 0x0000_0004
	featureIncompatDeviceTable = 0x0000_0008

	// i_format: bit 0 is the inode version, bits 1..3 the data layout.
	formatExtended   = 1
	layoutFlatPlain  = 0
	layoutFlatInline = 2
	layoutChunkBased = 4

	// Chunk-based inodes: i_u holds the chunk format.
	chunkFormatIndexes  = 0x0020
	chunkFormatBitsMask = 0x001f
	nullAddr            = 0xFFFF_FFFF // EROFS_NULL_ADDR: an unmapped (hole) chunk

	// maxBlobs: a chunk address stores blob index + 1 in one byte and upstream asserts
	// blob_idx < u8::MAX.
	maxBlobs            = 254
	maxChunksPerBlob    = 1 << 24 // RAFS_MAX_CHUNKS_PER_BLOB (storage/src/lib.rs)
	maxCIIndex          = 1<<24 - 1
	maxBlobUncompressed = 1 << 44  // BLOB_MAX_SIZE_UNCOMPRESSED
	maxBlobCompressed   = 1 << 40  // BLOB_MAX_SIZE_COMPRESSED
	mappedBlkAlign      = 0x8_0000 // V6_BLOCK_SEG_ALIGNMENT in builder/src/core/v6.rs
)

// EROFS dirent file types (EROFS_FT_*).
const (
	ftUnknown = iota
	ftReg
	ftDir
	ftChr
	ftBlk
	ftFifo
	ftSock
	ftSymlink
)

var le = binary.LittleEndian

// fileType maps S_IFMT bits to the EROFS dirent file type (RafsV6Dirent::file_type).
func fileType(mode uint32) uint8 {
	switch mode & rafs.SIFMT {
	case rafs.SIFREG:
		return ftReg
	case rafs.SIFDIR:
		return ftDir
	case rafs.SIFCHR:
		return ftChr
	case rafs.SIFBLK:
		return ftBlk
	case rafs.SIFIFO:
		return ftFifo
	case rafs.SIFSOCK:
		return ftSock
	case rafs.SIFLNK:
		return ftSymlink
	}
	return ftUnknown
}

// superBlock is the 128-byte EROFS superblock at offset 1024 (RafsV6SuperBlock).
type superBlock struct {
	magic           uint32
	checksum        uint32
	featureCompat   uint32
	blkSzBits       uint8
	extSlots        uint8
	rootNid         uint16
	inos            uint64
	buildTime       uint64
	buildTimeNsec   uint32
	blocks          uint32
	metaBlkAddr     uint32
	xattrBlkAddr    uint32
	featureIncompat uint32
	u               uint16
	extraDevices    uint16
	devtSlotOff     uint16
}

func (s *superBlock) unmarshal(b []byte) {
	s.magic = le.Uint32(b[0:])
	s.checksum = le.Uint32(b[4:])
	s.featureCompat = le.Uint32(b[8:])
	s.blkSzBits = b[12]
	s.extSlots = b[13]
	s.rootNid = le.Uint16(b[14:])
	s.inos = le.Uint64(b[16:])
	s.buildTime = le.Uint64(b[24:])
	s.buildTimeNsec = le.Uint32(b[32:])
	s.blocks = le.Uint32(b[36:])
	s.metaBlkAddr = le.Uint32(b[40:])
	s.xattrBlkAddr = le.Uint32(b[44:])
	// [48,64) uuid and [64,80) volume name are not modelled.
	s.featureIncompat = le.Uint32(b[80:])
	s.u = le.Uint16(b[84:])
	s.extraDevices = le.Uint16(b[86:])
	s.devtSlotOff = le.Uint16(b[88:])
}

func (s *superBlock) marshal(b []byte) {
	le.PutUint32(b[0:], s.magic)
	le.PutUint32(b[4:], s.checksum)
	le.PutUint32(b[8:], s.featureCompat)
	b[12] = s.blkSzBits
	b[13] = s.extSlots
	le.PutUint16(b[14:], s.rootNid)
	le.PutUint64(b[16:], s.inos)
	le.PutUint64(b[24:], s.buildTime)
	le.PutUint32(b[32:], s.buildTimeNsec)
	le.PutUint32(b[36:], s.blocks)
	le.PutUint32(b[40:], s.metaBlkAddr)
	le.PutUint32(b[44:], s.xattrBlkAddr)
	le.PutUint32(b[80:], s.featureIncompat)
	le.PutUint16(b[84:], s.u)
	le.PutUint16(b[86:], s.extraDevices)
	le.PutUint16(b[88:], s.devtSlotOff)
}

// extSuperBlock is the 256-byte RAFS extended superblock at offset 1152 (RafsV6SuperBlockExt).
type extSuperBlock struct {
	flags               uint64
	blobTableOffset     uint64
	blobTableSize       uint32
	chunkSize           uint32
	chunkTableOffset    uint64
	chunkTableSize      uint64
	prefetchTableOffset uint64
	prefetchTableSize   uint32
}

func (e *extSuperBlock) unmarshal(b []byte) {
	e.flags = le.Uint64(b[0:])
	e.blobTableOffset = le.Uint64(b[8:])
	e.blobTableSize = le.Uint32(b[16:])
	e.chunkSize = le.Uint32(b[20:])
	e.chunkTableOffset = le.Uint64(b[24:])
	e.chunkTableSize = le.Uint64(b[32:])
	e.prefetchTableOffset = le.Uint64(b[40:])
	e.prefetchTableSize = le.Uint32(b[48:])
}

func (e *extSuperBlock) marshal(b []byte) {
	le.PutUint64(b[0:], e.flags)
	le.PutUint64(b[8:], e.blobTableOffset)
	le.PutUint32(b[16:], e.blobTableSize)
	le.PutUint32(b[20:], e.chunkSize)
	le.PutUint64(b[24:], e.chunkTableOffset)
	le.PutUint64(b[32:], e.chunkTableSize)
	le.PutUint64(b[40:], e.prefetchTableOffset)
	le.PutUint32(b[48:], e.prefetchTableSize)
}

// deviceSlot is one 128-byte EROFS device table entry (RafsV6Device / erofs_deviceslot).
type deviceSlot struct {
	tag           string // blob id
	blocks        uint32
	mappedBlkAddr uint32
}

func (d *deviceSlot) unmarshal(b []byte) {
	d.tag = cString(b[:blobIDLen])
	d.blocks = le.Uint32(b[64:])
	d.mappedBlkAddr = le.Uint32(b[68:])
}

func (d *deviceSlot) marshal(b []byte) {
	copy(b[:blobIDLen], d.tag)
	le.PutUint32(b[64:], d.blocks)
	le.PutUint32(b[68:], d.mappedBlkAddr)
}

// Blob table entry (RafsV6Blob, 256 bytes) field offsets.
const (
	beBlobIndex      = 64
	beChunkSize      = 68
	beChunkCount     = 72
	beCompressor     = 76
	beDigester       = 80
	beFeatures       = 84
	beCompressedSize = 88
	beUncompSize     = 96
	beTOCSize        = 104
	beCICompressor   = 108
	beCIOffset       = 112
	beCICompSize     = 120
	beCIUncompSize   = 128
	beTOCDigest      = 136
	beMetaDigest     = 168
	beMetaSize       = 200
	beCipherIV       = 208
	beCipherAlgo     = 216
)

// marshalBlob writes a blob table entry; a blob without a chunk size gets the image's.
func marshalBlob(b []byte, index int, bl *rafs.Blob, imageChunkSize uint32) {
	chunkSize := bl.ChunkSize
	if chunkSize == 0 {
		chunkSize = imageChunkSize
	}
	copy(b[:blobIDLen], bl.ID)
	le.PutUint32(b[beBlobIndex:], uint32(index))
	le.PutUint32(b[beChunkSize:], chunkSize)
	le.PutUint32(b[beChunkCount:], bl.ChunkCount)
	le.PutUint32(b[beCompressor:], uint32(bl.Compressor))
	le.PutUint32(b[beDigester:], uint32(bl.Digester))
	le.PutUint32(b[beFeatures:], bl.Features)
	le.PutUint64(b[beCompressedSize:], bl.CompressedSize)
	le.PutUint64(b[beUncompSize:], bl.UncompressedSize)
	le.PutUint32(b[beTOCSize:], bl.TOCSize)
	le.PutUint32(b[beCICompressor:], uint32(bl.MetaCompressor))
	le.PutUint64(b[beCIOffset:], bl.MetaOffset)
	le.PutUint64(b[beCICompSize:], bl.MetaCompressedSize)
	le.PutUint64(b[beCIUncompSize:], bl.MetaUncompressedSize)
	copy(b[beTOCDigest:beTOCDigest+32], bl.TOCDigest[:])
	copy(b[beMetaDigest:beMetaDigest+32], bl.MetaDigest[:])
	le.PutUint64(b[beMetaSize:], bl.MetaSize)
	// cipher_iv and cipher_algo stay zero: the model has no encrypted blobs.
}

// diskInode is the union of the compact (32 B) and extended (64 B) EROFS inodes
// (RafsV6InodeCompact / RafsV6InodeExtended).
type diskInode struct {
	format      uint16
	xattrICount uint16
	mode        uint16
	nlink       uint32
	size        uint64
	u           uint32 // raw_blkaddr, rdev or chunk format
	ino         uint32
	uid, gid    uint32
	mtime       uint64
	mtimeNsec   uint32
}

func (i *diskInode) extended() bool { return i.format&formatExtended != 0 }
func (i *diskInode) layout() uint16 { return i.format >> 1 & 0x7 }

// isize is the size of the inode core.
func (i *diskInode) isize() uint64 {
	if i.extended() {
		return extInodeSize
	}
	return compactInodeSize
}

// xattrSize is the size of the inline xattr body that follows the inode core.
func (i *diskInode) xattrSize() uint64 {
	if i.xattrICount == 0 {
		return 0
	}
	return xattrHeaderSize + uint64(i.xattrICount-1)*xattrEntrySize
}

// unmarshalCompact reads a compact inode. EROFS derives its mtime from the superblock build time
// plus the 32-bit i_mtime at offset 12 (reserved, zero, in nydus-built images).
func (i *diskInode) unmarshalCompact(b []byte, buildTime uint64, buildNsec uint32) {
	i.format = le.Uint16(b[0:])
	i.xattrICount = le.Uint16(b[2:])
	i.mode = le.Uint16(b[4:])
	i.nlink = uint32(le.Uint16(b[6:]))
	i.size = uint64(le.Uint32(b[8:]))
	i.mtime = buildTime + uint64(le.Uint32(b[12:]))
	i.mtimeNsec = buildNsec
	i.u = le.Uint32(b[16:])
	i.ino = le.Uint32(b[20:])
	i.uid = uint32(le.Uint16(b[24:]))
	i.gid = uint32(le.Uint16(b[26:]))
}

func (i *diskInode) unmarshalExtended(b []byte) {
	i.format = le.Uint16(b[0:])
	i.xattrICount = le.Uint16(b[2:])
	i.mode = le.Uint16(b[4:])
	i.size = le.Uint64(b[8:])
	i.u = le.Uint32(b[16:])
	i.ino = le.Uint32(b[20:])
	i.uid = le.Uint32(b[24:])
	i.gid = le.Uint32(b[28:])
	i.mtime = le.Uint64(b[32:])
	i.mtimeNsec = le.Uint32(b[40:])
	i.nlink = le.Uint32(b[44:])
}

// marshalExtended writes the 64-byte extended inode, the only form Encode emits.
func (i *diskInode) marshalExtended(b []byte) {
	le.PutUint16(b[0:], i.format)
	le.PutUint16(b[2:], i.xattrICount)
	le.PutUint16(b[4:], i.mode)
	le.PutUint64(b[8:], i.size)
	le.PutUint32(b[16:], i.u)
	le.PutUint32(b[20:], i.ino)
	le.PutUint32(b[24:], i.uid)
	le.PutUint32(b[28:], i.gid)
	le.PutUint64(b[32:], i.mtime)
	le.PutUint32(b[40:], i.mtimeNsec)
	le.PutUint32(b[44:], i.nlink)
}

// chunkAddr is an 8-byte chunk index of a chunk-based inode (RafsV6InodeChunkAddr): the low byte
// of hi is the EROFS device id (blob index + 1), the high byte of hi and all of lo form the 24-bit
// index into the blob's chunk-info array, and blkAddr is the uncompressed offset / 4096.
type chunkAddr struct {
	lo, hi  uint16
	blkAddr uint32
}

func (c chunkAddr) deviceID() uint32 { return uint32(c.hi & 0xff) }
func (c chunkAddr) ciIndex() uint32  { return uint32(c.hi>>8)<<16 | uint32(c.lo) }

func newChunkAddr(blobIndex, ciIndex, blkAddr uint32) chunkAddr {
	return chunkAddr{
		lo:      uint16(ciIndex),
		hi:      uint16(ciIndex>>8)&0xff00 | uint16(blobIndex+1)&0xff,
		blkAddr: blkAddr,
	}
}

func (c *chunkAddr) unmarshal(b []byte) {
	c.lo = le.Uint16(b[0:])
	c.hi = le.Uint16(b[2:])
	c.blkAddr = le.Uint32(b[4:])
}

func (c chunkAddr) marshal(b []byte) {
	le.PutUint16(b[0:], c.lo)
	le.PutUint16(b[2:], c.hi)
	le.PutUint32(b[4:], c.blkAddr)
}

// cString returns b up to its first NUL byte.
func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

func roundUp(x, align uint64) uint64   { return (x + align - 1) / align * align }
func roundDown(x, align uint64) uint64 { return x / align * align }
