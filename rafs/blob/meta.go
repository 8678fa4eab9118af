package blob

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/dfnydus/dfnydus/rafs"
)

// blob.meta header (storage/src/meta/mod.rs BlobCompressionContextHeader, 4096 bytes):
// magic u32, features u32, ci_compressor u32, ci_entries u32, ci_offset u64,
// ci_compressed_size u64, ci_uncompressed_size u64, ci_zran_offset u64, ci_zran_size u64,
// ci_zran_count u32, reserved, magic2 u32 in the last 4 bytes.
const (
	MetaHeaderSize = 0x1000
	metaMagic      = 0xb10bb10b
	ciV1Size       = 16
	ciV2Size       = 24
)

// MetaHeader is the decoded blob.meta header: where the chunk-info array is and how it is stored.
type MetaHeader struct {
	Features           uint32          // Feature* bits
	CICompressor       rafs.Compressor // how the chunk-info array is stored
	CIEntries          uint32          // number of chunk infos (= chunks)
	CIOffset           uint64          // file offset of the stored chunk-info array
	CICompressedSize   uint64
	CIUncompressedSize uint64
	ZranOffset         uint64 // ZRAN/batch context, inside the uncompressed array
	ZranSize           uint64
	ZranCount          uint32
}

func (h *MetaHeader) encode() []byte {
	b := make([]byte, MetaHeaderSize)
	le := binary.LittleEndian
	le.PutUint32(b[0:], metaMagic)
	le.PutUint32(b[4:], h.Features)
	le.PutUint32(b[8:], uint32(h.CICompressor))
	le.PutUint32(b[12:], h.CIEntries)
	le.PutUint64(b[16:], h.CIOffset)
	le.PutUint64(b[24:], h.CICompressedSize)
	le.PutUint64(b[32:], h.CIUncompressedSize)
	le.PutUint64(b[40:], h.ZranOffset)
	le.PutUint64(b[48:], h.ZranSize)
	le.PutUint32(b[56:], h.ZranCount)
	le.PutUint32(b[MetaHeaderSize-4:], metaMagic)
	return b
}

// decodeMetaHeader decodes b (MetaHeaderSize bytes) and applies the checks of nydusd's
// BlobCompressionContextInfo::validate_header that need nothing but the header.
func decodeMetaHeader(b []byte) (MetaHeader, error) {
	var h MetaHeader
	le := binary.LittleEndian
	if m1, m2 := le.Uint32(b[0:]), le.Uint32(b[MetaHeaderSize-4:]); m1 != metaMagic || m2 != metaMagic {
		return h, rafs.Corruptf("blob.meta header magic %#x/%#x, want %#x", m1, m2, uint32(metaMagic))
	}
	h.Features = le.Uint32(b[4:])
	comp := le.Uint32(b[8:])
	if comp > uint32(rafs.CompressZstd) {
		return h, rafs.Corruptf("blob.meta header: unknown chunk-info compressor %d", comp)
	}
	h.CICompressor = rafs.Compressor(comp)
	h.CIEntries = le.Uint32(b[12:])
	h.CIOffset = le.Uint64(b[16:])
	h.CICompressedSize = le.Uint64(b[24:])
	h.CIUncompressedSize = le.Uint64(b[32:])
	h.ZranOffset = le.Uint64(b[40:])
	h.ZranSize = le.Uint64(b[48:])
	h.ZranCount = le.Uint32(b[56:])

	if h.CIEntries == 0 || h.CIEntries > MaxChunks {
		return h, rafs.Corruptf("blob.meta header: %d chunk infos (want 1..%d)", h.CIEntries, MaxChunks)
	}
	if h.CICompressor == rafs.CompressNone && h.CICompressedSize != h.CIUncompressedSize {
		return h, rafs.Corruptf("blob.meta header: raw chunk-info array but sizes %d != %d",
			h.CICompressedSize, h.CIUncompressedSize)
	}
	n := uint64(h.CIEntries)
	v2 := h.Features&FeatureChunkInfoV2 != 0
	extra := h.Features&(FeatureZran|FeatureBatch) != 0
	switch {
	case v2 && extra:
		if h.CIUncompressedSize < n*ciV2Size || h.ZranOffset < n*ciV2Size ||
			h.ZranOffset+h.ZranSize < h.ZranOffset || h.ZranOffset+h.ZranSize > h.CIUncompressedSize {
			return h, rafs.Corruptf("blob.meta header: zran/batch context [%d, +%d) does not fit %d bytes of %d v2 chunk infos",
				h.ZranOffset, h.ZranSize, h.CIUncompressedSize, n)
		}
	case v2:
		if h.CIUncompressedSize != n*ciV2Size {
			return h, rafs.Corruptf("blob.meta header: %d bytes for %d v2 chunk infos", h.CIUncompressedSize, n)
		}
	case extra:
		return h, rafs.Corruptf("blob.meta header: features %#x need chunk-info v2", h.Features)
	default:
		if h.CIUncompressedSize != n*ciV1Size {
			return h, rafs.Corruptf("blob.meta header: %d bytes for %d v1 chunk infos", h.CIUncompressedSize, n)
		}
	}
	return h, nil
}

// entrySize is the size of one chunk info under h's features.
func (h *MetaHeader) entrySize() int {
	if h.Features&FeatureChunkInfoV2 != 0 {
		return ciV2Size
	}
	return ciV1Size
}

// V2 chunk-info flags (storage/src/meta/chunk_info_v2.rs CHUNK_V2_FLAG_*, the top byte of
// uncomp_info).
const (
	CIV2Compressed uint8 = 0x1
	CIV2Zran       uint8 = 0x2
	CIV2Batch      uint8 = 0x4
	CIV2Encrypted  uint8 = 0x8
	CIV2HasCRC32   uint8 = 0x10
)

// ChunkInfo is one decoded blob.meta entry: where a chunk's bytes are, compressed and not.
type ChunkInfo struct {
	CompressedOffset   uint64
	CompressedSize     uint32
	UncompressedOffset uint64
	UncompressedSize   uint32
	Compressed         bool
	V2Flags            uint8  // v2 only: CIV2* bits (Compressed mirrors CIV2Compressed)
	Data               uint64 // v2 only: zran/batch context, or the CRC32 when CIV2HasCRC32
}

// Chunk converts ci into the chunk record it describes, given the chunk's index and digest.
func (ci *ChunkInfo) Chunk(index uint32, digest rafs.Digest) rafs.Chunk {
	c := rafs.Chunk{
		Digest:             digest,
		CompressedOffset:   ci.CompressedOffset,
		CompressedSize:     ci.CompressedSize,
		UncompressedOffset: ci.UncompressedOffset,
		UncompressedSize:   ci.UncompressedSize,
		Index:              index,
	}
	if ci.Compressed {
		c.Flags |= rafs.ChunkCompressed
	}
	if ci.V2Flags&CIV2Encrypted != 0 {
		c.Flags |= rafs.ChunkEncrypted
	}
	if ci.V2Flags&CIV2Batch != 0 {
		c.Flags |= rafs.ChunkBatch
	}
	if ci.V2Flags&CIV2HasCRC32 != 0 {
		c.Flags |= rafs.ChunkHasCRC32
		c.CRC32 = uint32(ci.Data)
	}
	return c
}

// Chunk-info v1 bit layout (storage/src/meta/chunk_info_v1.rs), with s = size-1 (24 bits):
// uncomp_info: bits 44..63 s[0:20], bits 12..43 the 4 KiB-aligned offset, bits 8..11 s[20:24];
// comp_info:   bits 44..63 s[0:20], bits 40..43 s[20:24], bits 0..39 the offset.
const (
	v1CompOffsetMask   = 0xff_ffff_ffff
	v1UncompOffsetMask = 0xfff_ffff_f000
	v1SizeLowMask      = 0x0f_ffff
	v1SizeHighMask     = 0xf0_0000
	v1SizeLowShift     = 44
)

// encodeV1 appends ci as a v1 entry. v1 has no flags: a chunk counts as compressed exactly when
// its sizes differ, so a compressed chunk must have shrunk.
func appendV1(dst []byte, ci *ChunkInfo) ([]byte, error) {
	switch {
	case ci.CompressedSize == 0 || ci.CompressedSize > rafs.MaxChunkSize ||
		ci.UncompressedSize == 0 || ci.UncompressedSize > rafs.MaxChunkSize:
		return dst, fmt.Errorf("chunk-info v1: sizes %d/%d out of range", ci.CompressedSize, ci.UncompressedSize)
	case ci.CompressedOffset&^v1CompOffsetMask != 0:
		return dst, fmt.Errorf("chunk-info v1: compressed offset %#x needs more than 40 bits", ci.CompressedOffset)
	case ci.UncompressedOffset&^v1UncompOffsetMask != 0:
		return dst, fmt.Errorf("chunk-info v1: uncompressed offset %#x is not 4 KiB aligned below 2^44", ci.UncompressedOffset)
	case ci.Compressed != (ci.CompressedSize != ci.UncompressedSize):
		return dst, fmt.Errorf("chunk-info v1: compressed=%v but sizes %d/%d", ci.Compressed, ci.CompressedSize, ci.UncompressedSize)
	}
	us, cs := uint64(ci.UncompressedSize-1), uint64(ci.CompressedSize-1)
	uncomp := (us&v1SizeLowMask)<<v1SizeLowShift | ci.UncompressedOffset | (us&v1SizeHighMask)>>12
	comp := (cs&v1SizeLowMask)<<v1SizeLowShift | (cs&v1SizeHighMask)<<20 | ci.CompressedOffset
	dst = binary.LittleEndian.AppendUint64(dst, uncomp)
	return binary.LittleEndian.AppendUint64(dst, comp), nil
}

func decodeV1(b []byte) ChunkInfo {
	uncomp := binary.LittleEndian.Uint64(b[0:])
	comp := binary.LittleEndian.Uint64(b[8:])
	ci := ChunkInfo{
		UncompressedOffset: uncomp & v1UncompOffsetMask,
		UncompressedSize:   uint32((uncomp&0xf00)<<12|uncomp>>v1SizeLowShift) + 1,
		CompressedOffset:   comp & v1CompOffsetMask,
		CompressedSize:     uint32((comp&0xf00_0000_0000)>>20|comp>>v1SizeLowShift) + 1,
	}
	ci.Compressed = ci.CompressedSize != ci.UncompressedSize
	return ci
}

// Chunk-info v2 bit layout (chunk_info_v2.rs): uncomp_info = offset>>12 (bits 0..31) |
// (size-1) (bits 32..55) | flags (bits 56..63); comp_info = offset (bits 0..39) | size (40..63,
// not minus one); data u64.
func decodeV2(b []byte) ChunkInfo {
	uncomp := binary.LittleEndian.Uint64(b[0:])
	comp := binary.LittleEndian.Uint64(b[8:])
	flags := uint8(uncomp >> 56)
	return ChunkInfo{
		UncompressedOffset: (uncomp & 0xffff_ffff) << 12,
		UncompressedSize:   uint32((uncomp>>32)&0xff_ffff) + 1,
		CompressedOffset:   comp & 0xff_ffff_ffff,
		CompressedSize:     uint32(comp >> 40),
		Compressed:         flags&CIV2Compressed != 0,
		V2Flags:            flags,
		Data:               binary.LittleEndian.Uint64(b[16:]),
	}
}

// validate applies nydusd's per-chunk checks (BlobMetaChunkInfo::validate in chunk_info_v1.rs and
// chunk_info_v2.rs): the chunk lies inside the chunk data (dataSize; skipped for SEPARATE blobs,
// whose data is another file) and inside the 4 KiB-rounded uncompressed view, and a chunk stored
// raw has equal sizes.
func (ci *ChunkInfo) validate(i int, features uint32, dataSize, uncompressedSize uint64) error {
	if features&FeatureSeparate == 0 {
		if end := ci.CompressedOffset + uint64(ci.CompressedSize); end > dataSize {
			return rafs.Corruptf("chunk info %d: compressed [%d, +%d) runs past the chunk data (%d bytes)",
				i, ci.CompressedOffset, ci.CompressedSize, dataSize)
		}
		if ci.CompressedSize == 0 && ci.V2Flags&CIV2Batch == 0 {
			return rafs.Corruptf("chunk info %d: compressed size 0", i)
		}
	}
	if end := ci.UncompressedOffset + uint64(ci.UncompressedSize); end > roundUp4K(uncompressedSize) {
		return rafs.Corruptf("chunk info %d: uncompressed [%d, +%d) runs past the uncompressed view (%d bytes)",
			i, ci.UncompressedOffset, ci.UncompressedSize, uncompressedSize)
	}
	if !ci.Compressed && ci.V2Flags&CIV2Encrypted == 0 && ci.CompressedSize != ci.UncompressedSize {
		return rafs.Corruptf("chunk info %d: stored raw but sizes %d != %d", i, ci.CompressedSize, ci.UncompressedSize)
	}
	if ci.V2Flags&CIV2HasCRC32 != 0 && uint32(ci.Data) == 0 {
		return rafs.Corruptf("chunk info %d: CRC32 flag with zero CRC", i)
	}
	if ci.V2Flags&CIV2Zran != 0 && features&FeatureZran == 0 {
		return rafs.Corruptf("chunk info %d: ZRAN chunk in a non-ZRAN blob", i)
	}
	if ci.V2Flags&CIV2Batch != 0 && features&FeatureBatch == 0 {
		return rafs.Corruptf("chunk info %d: batch chunk in a non-batch blob", i)
	}
	return nil
}

// roundUp4K rounds n up to a multiple of 4 KiB, saturating instead of wrapping.
func roundUp4K(n uint64) uint64 {
	if n > math.MaxUint64-0xfff {
		return math.MaxUint64 &^ 0xfff
	}
	return (n + 0xfff) &^ 0xfff
}
