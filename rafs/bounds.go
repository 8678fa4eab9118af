package rafs

import "fmt"

// gzipWrapperSize is the fixed gzip member header (10 bytes, RFC 1952 section 2.3) plus its CRC32 and
// ISIZE trailer (8 bytes); nydus's flate2 GzEncoder writes no optional header fields.
const gzipWrapperSize = 18

// cipherOverhead is what AES-128-XTS with PKCS#7-style padding (nydus utils/src/crypt.rs) adds to an
// encrypted chunk: at most one extra 16-byte block.
const cipherOverhead = 16

// MaxCompressedChunkSize returns the largest compressed size a chunk of at most chunkSize bytes can
// have with compressor c: the compressor's documented worst case for incompressible input. A chunk
// record claiming more is not something nydus-image writes, and trusting it would let one read
// allocate up to 4 GiB. The result saturates at the largest uint32.
func MaxCompressedChunkSize(c Compressor, chunkSize uint32) uint32 {
	n := uint64(chunkSize)
	var bound uint64
	switch c {
	case CompressZstd:
		// ZSTD_COMPRESSBOUND in lib/zstd.h (facebook/zstd).
		bound = n + n>>8
		if n < 128<<10 {
			bound += (128<<10 - n) >> 11
		}
	case CompressLZ4Block:
		// LZ4_COMPRESSBOUND in lib/lz4.h (lz4/lz4).
		bound = n + n/255 + 16
	case CompressGzip:
		// deflateBound in deflate.c (madler/zlib), its conservative branch that holds for any
		// window and memory level: the larger of the fixed-Huffman and the stored-block worst
		// cases, plus the gzip wrapper. Go's compress/flate and miniz stay under it too.
		fixed := n + n>>3 + n>>8 + n>>9 + 4
		stored := n + n>>5 + n>>7 + n>>11 + 7
		bound = max(fixed, stored) + gzipWrapperSize
	default:
		bound = n
	}
	return uint32(min(bound, uint64(^uint32(0))))
}

// CheckChunkBounds checks the sizes a chunk record claims against the blob it lives in: 1 to
// chunkSize uncompressed bytes, a compressed size within the compressor's bound for that chunk size,
// and, when the blob table records the blob's size, a compressed range inside the blob. chunkSize is
// the blob's chunk size (v6) or the image's (v5). The error names only the rule; callers say which
// inode and chunk broke it and wrap ErrCorrupt.
func CheckChunkBounds(c *Chunk, b *Blob, chunkSize uint32) error {
	limit := chunkSize
	// Zran chunks are ranges of an original gzip layer and batch chunks are cut out of a batch
	// compressed as one; neither is bounded by the chunk size, but both by the format's maximum.
	if b.Features&(BlobFeatureZran|BlobFeatureBatch) != 0 {
		limit = MaxChunkSize
	}
	comp := b.Compressor
	if !c.IsCompressed() {
		comp = CompressNone
	}
	bound := MaxCompressedChunkSize(comp, limit)
	if c.Flags&ChunkEncrypted != 0 {
		bound += cipherOverhead
	}
	switch {
	case c.UncompressedSize == 0 || c.UncompressedSize > chunkSize:
		return fmt.Errorf("uncompressed size %d, want 1..%d (the chunk size)", c.UncompressedSize, chunkSize)
	case c.CompressedSize == 0:
		return fmt.Errorf("compressed size 0")
	case c.CompressedSize > bound:
		return fmt.Errorf("compressed size %d exceeds %d, the %s bound for a %d-byte chunk", c.CompressedSize, bound, comp, limit)
	case c.CompressedOffset > ^uint64(0)-uint64(c.CompressedSize):
		return fmt.Errorf("compressed range [%#x, +%d) overflows", c.CompressedOffset, c.CompressedSize)
	case b.CompressedSize != 0 && c.CompressedOffset+uint64(c.CompressedSize) > b.CompressedSize:
		return fmt.Errorf("compressed range [%#x, %#x) runs past the blob's %d bytes", c.CompressedOffset, c.CompressedOffset+uint64(c.CompressedSize), b.CompressedSize)
	}
	return nil
}
