package blob

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sync"

	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/compress"
	"github.com/dfnydus/dfnydus/rafs/digest"
)

// scratch holds compressed chunk bytes between the read and the decompression.
var scratch = sync.Pool{New: func() any { return new([]byte) }}

// ReadChunk reads chunk c of blob blobID from r: c.CompressedSize bytes at c.CompressedOffset,
// decompressed with comp when c is COMPRESSED, then checked against c.Digest under dig (and
// against c.CRC32 when it has one). It returns the uncompressed bytes, in buf when buf is big
// enough. Bad records, short blobs and mismatches are errors wrapping rafs.ErrCorrupt that name
// the chunk index and the blob.
func ReadChunk(r io.ReaderAt, blobID string, c *rafs.Chunk, comp rafs.Compressor, dig rafs.Digester, buf []byte) ([]byte, error) {
	bad := func(format string, args ...any) error {
		return rafs.Corruptf("blob %s chunk %d: %s", blobID, c.Index, fmt.Sprintf(format, args...))
	}
	switch {
	case c.Flags&(rafs.ChunkEncrypted|rafs.ChunkBatch) != 0:
		return nil, fmt.Errorf("blob %s chunk %d: encrypted and batch chunks are not supported (flags %#x)", blobID, c.Index, c.Flags)
	case c.UncompressedSize == 0 || c.UncompressedSize > rafs.MaxChunkSize:
		return nil, bad("uncompressed size %d out of range", c.UncompressedSize)
	case c.IsCompressed() && (c.CompressedSize == 0 || c.CompressedSize > rafs.MaxChunkSize):
		return nil, bad("compressed size %d out of range", c.CompressedSize)
	case !c.IsCompressed() && c.CompressedSize != c.UncompressedSize:
		return nil, bad("stored raw but sizes %d != %d", c.CompressedSize, c.UncompressedSize)
	case c.CompressedOffset > MaxFileSize:
		return nil, bad("compressed offset %d out of range", c.CompressedOffset)
	}

	size := int(c.UncompressedSize)
	if cap(buf) < size+compress.DecodeSlack {
		buf = make([]byte, size, size+compress.DecodeSlack)
	}
	if !c.IsCompressed() {
		out := buf[:size]
		if err := readChunkAt(r, out, c.CompressedOffset, blobID, c); err != nil {
			return nil, err
		}
		return finishChunk(out, blobID, c, dig, true)
	}
	sp := scratch.Get().(*[]byte)
	defer scratch.Put(sp)
	if cap(*sp) < int(c.CompressedSize) {
		*sp = make([]byte, c.CompressedSize)
	}
	src := (*sp)[:c.CompressedSize]
	if err := readChunkAt(r, src, c.CompressedOffset, blobID, c); err != nil {
		return nil, err
	}
	return DecodeChunk(src, blobID, c, comp, dig, true, buf)
}

// DecodeChunk turns chunk c's stored bytes (exactly its CompressedSize bytes, as they are in the
// blob) into its uncompressed bytes, in buf when buf is big enough. With verify it checks the
// digest (and crc32c) against the record, as ReadChunk does; without, the caller vouches for the
// bytes (they were verified when they entered the node) and only the decompression runs. The
// result never aliases src.
func DecodeChunk(src []byte, blobID string, c *rafs.Chunk, comp rafs.Compressor, dig rafs.Digester, verify bool, buf []byte) ([]byte, error) {
	bad := func(format string, args ...any) error {
		return rafs.Corruptf("blob %s chunk %d: %s", blobID, c.Index, fmt.Sprintf(format, args...))
	}
	if uint64(len(src)) != uint64(c.CompressedSize) {
		return nil, bad("%d stored bytes, record says %d", len(src), c.CompressedSize)
	}
	if c.UncompressedSize == 0 || c.UncompressedSize > rafs.MaxChunkSize {
		return nil, bad("uncompressed size %d out of range", c.UncompressedSize)
	}
	size := int(c.UncompressedSize)
	if cap(buf) < size+compress.DecodeSlack {
		buf = make([]byte, size, size+compress.DecodeSlack)
	}
	var out []byte
	if !c.IsCompressed() {
		if c.CompressedSize != c.UncompressedSize {
			return nil, bad("stored raw but sizes %d != %d", c.CompressedSize, c.UncompressedSize)
		}
		out = buf[:size]
		copy(out, src)
	} else {
		var err error
		if out, err = compress.Decompress(comp, buf[:0], src, size); err != nil {
			return nil, bad("%v", err)
		}
	}
	return finishChunk(out, blobID, c, dig, verify)
}

func finishChunk(out []byte, blobID string, c *rafs.Chunk, dig rafs.Digester, verify bool) ([]byte, error) {
	if !verify {
		return out, nil
	}
	if got := digest.Sum(dig, out); got != c.Digest {
		return nil, rafs.Corruptf("blob %s chunk %d: %v digest %s, record says %s", blobID, c.Index, dig, got, c.Digest)
	}
	if c.Flags&rafs.ChunkHasCRC32 != 0 {
		if got := crc32.Checksum(out, castagnoli); got != c.CRC32 {
			return nil, rafs.Corruptf("blob %s chunk %d: crc32c %#08x, record says %#08x", blobID, c.Index, got, c.CRC32)
		}
	}
	return out, nil
}

// readChunkAt fills p from off. A short read means the record points past the end of the blob
// (corruption); other read failures are I/O errors and are wrapped as such.
func readChunkAt(r io.ReaderAt, p []byte, off uint64, blobID string, c *rafs.Chunk) error {
	n, err := r.ReadAt(p, int64(off))
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return rafs.Corruptf("blob %s chunk %d: [%d, +%d) is past the end of the blob", blobID, c.Index, off, len(p))
	}
	return fmt.Errorf("blob %s chunk %d: read [%d, +%d): %w", blobID, c.Index, off, len(p), err)
}
