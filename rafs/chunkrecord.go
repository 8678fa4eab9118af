package rafs

import "encoding/binary"

// ChunkRecordSize is the size of the on-disk chunk-info record v5 and v6 share (RafsV5ChunkInfo in
// rafs/src/metadata/layout/v5.rs): v5 stores one per file chunk, v6 one per distinct chunk.
const ChunkRecordSize = 80

// UnmarshalChunkRecord decodes one 80-byte chunk-info record (little-endian).
func UnmarshalChunkRecord(b []byte) Chunk {
	le := binary.LittleEndian
	var c Chunk
	copy(c.Digest[:], b[0:32])
	c.BlobIndex = le.Uint32(b[32:])
	c.Flags = le.Uint32(b[36:])
	c.CompressedSize = le.Uint32(b[40:])
	c.UncompressedSize = le.Uint32(b[44:])
	c.CompressedOffset = le.Uint64(b[48:])
	c.UncompressedOffset = le.Uint64(b[56:])
	c.FileOffset = le.Uint64(b[64:])
	c.Index = le.Uint32(b[72:])
	c.CRC32 = le.Uint32(b[76:])
	return c
}

// MarshalChunkRecord encodes c into the 80 bytes of b.
func MarshalChunkRecord(b []byte, c *Chunk) {
	le := binary.LittleEndian
	copy(b[0:32], c.Digest[:])
	le.PutUint32(b[32:], c.BlobIndex)
	le.PutUint32(b[36:], c.Flags)
	le.PutUint32(b[40:], c.CompressedSize)
	le.PutUint32(b[44:], c.UncompressedSize)
	le.PutUint64(b[48:], c.CompressedOffset)
	le.PutUint64(b[56:], c.UncompressedOffset)
	le.PutUint64(b[64:], c.FileOffset)
	le.PutUint32(b[72:], c.Index)
	le.PutUint32(b[76:], c.CRC32)
}
