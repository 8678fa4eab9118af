// Package compress implements the chunk compressors nydus uses (utils/src/compress/mod.rs in
// dragonflyoss/nydus): none, lz4_block (a raw LZ4 block with no frame and no size prefix), gzip and
// zstd (one frame per chunk).
package compress

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"sync"

	"github.com/dfnydus/dfnydus/rafs"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

var (
	zenc     *zstd.Encoder
	zdec     *zstd.Decoder
	initOnce sync.Once
	gzPool   = sync.Pool{New: func() any { w, _ := gzip.NewWriterLevel(nil, gzip.DefaultCompression); return w }}
	lzPool   = sync.Pool{New: func() any { return new(lz4.Compressor) }}
)

func initZstd() {
	initOnce.Do(func() {
		var err error
		// Level 3 ("default") matches nydus's zstd::bulk::compress(src, 0) default level.
		zenc, err = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1),
			zstd.WithZeroFrames(true), zstd.WithEncoderCRC(false))
		if err != nil {
			panic(err)
		}
		zdec, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(rafs.MaxChunkSize*2))
		if err != nil {
			panic(err)
		}
	})
}

// Compress appends the compressed form of src to dst[:0] and returns it. The result may be larger
// than src; callers that want nydus's behaviour store raw bytes when it is not smaller (see Shrinks).
func Compress(alg rafs.Compressor, dst, src []byte) ([]byte, error) {
	dst = dst[:0]
	switch alg {
	case rafs.CompressNone:
		return append(dst, src...), nil
	case rafs.CompressZstd:
		initZstd()
		return zenc.EncodeAll(src, dst), nil
	case rafs.CompressLZ4Block:
		c := lzPool.Get().(*lz4.Compressor)
		defer lzPool.Put(c)
		if cap(dst) < lz4.CompressBlockBound(len(src)) {
			dst = make([]byte, lz4.CompressBlockBound(len(src)))
		}
		dst = dst[:lz4.CompressBlockBound(len(src))]
		n, err := c.CompressBlock(src, dst)
		if err != nil {
			return nil, fmt.Errorf("lz4_block compress: %w", err)
		}
		if n == 0 { // incompressible: lz4 reports 0; emit something larger than src so callers store raw
			return append(dst[:0], src...), nil
		}
		return dst[:n], nil
	case rafs.CompressGzip:
		buf := bytes.NewBuffer(dst)
		w := gzPool.Get().(*gzip.Writer)
		defer gzPool.Put(w)
		w.Reset(buf)
		if _, err := w.Write(src); err != nil {
			return nil, fmt.Errorf("gzip compress: %w", err)
		}
		if err := w.Close(); err != nil {
			return nil, fmt.Errorf("gzip compress: %w", err)
		}
		return buf.Bytes(), nil
	}
	return nil, fmt.Errorf("compress: unsupported compressor %v", alg)
}

// DecodeSlack is the spare capacity a destination should have past the chunk's size: the zstd
// decoder takes its fast path (wide copies that may write up to 16 bytes past the end) only when
// the destination has that room, and otherwise runs a bounds-checked loop at about half the speed
// (klauspost/compress zstd/seqdec_asm.go, useSafeDecodeSync).
const DecodeSlack = 64

// Decompress decompresses src, which must expand to exactly size bytes, into dst[:0]. A dst
// without DecodeSlack spare bytes past size is replaced by a new buffer.
func Decompress(alg rafs.Compressor, dst, src []byte, size int) ([]byte, error) {
	if size < 0 || size > rafs.MaxChunkSize {
		return nil, rafs.Corruptf("chunk uncompressed size %d out of range", size)
	}
	if cap(dst) < size+DecodeSlack {
		dst = make([]byte, 0, size+DecodeSlack)
	}
	dst = dst[:0]
	var out []byte
	var err error
	switch alg {
	case rafs.CompressNone:
		out = append(dst, src...)
	case rafs.CompressZstd:
		initZstd()
		out, err = zdec.DecodeAll(src, dst)
	case rafs.CompressLZ4Block:
		var n int
		n, err = lz4.UncompressBlock(src, dst[:size])
		out = dst[:n]
	case rafs.CompressGzip:
		var zr *gzip.Reader
		zr, err = gzip.NewReader(bytes.NewReader(src))
		if err == nil {
			buf := bytes.NewBuffer(dst)
			_, err = io.Copy(buf, io.LimitReader(zr, int64(size)+1))
			out = buf.Bytes()
		}
	default:
		return nil, fmt.Errorf("decompress: unsupported compressor %v", alg)
	}
	if err != nil {
		return nil, rafs.Corruptf("%v decompress of %d bytes: %v", alg, len(src), err)
	}
	if len(out) != size {
		return nil, rafs.Corruptf("%v chunk decompressed to %d bytes, want %d", alg, len(out), size)
	}
	return out, nil
}
