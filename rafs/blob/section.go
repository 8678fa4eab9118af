package blob

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/dfnydus/dfnydus/rafs"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// Sections (blob.meta, image.boot, ...) can be larger than a chunk, so they are decoded here as
// streams rather than with rafs/compress, whose decoders are sized for chunks.

// maxSectionRatio bounds how much a stored section may claim to expand, so that a small hostile
// blob cannot make a reader allocate or inflate gigabytes. zstd on a bootstrap stays far below it.
const (
	maxSectionRatio = 4096
	minSectionLimit = 1 << 20
	zstdMinMemory   = 64 << 20
)

// section is a stored region of the blob file and the content it decodes to.
type section struct {
	name   string
	off    uint64
	csize  uint64 // stored bytes
	usize  uint64 // decoded bytes
	alg    rafs.Compressor
	digest rafs.Digest // sha256 of the decoded content; zero when not recorded
}

func (s *section) check() error {
	if s.alg == rafs.CompressNone && s.csize != s.usize {
		return rafs.Corruptf("%s: stored raw but sizes %d != %d", s.name, s.csize, s.usize)
	}
	limit := uint64(math.MaxUint64)
	if s.csize < math.MaxUint64/maxSectionRatio {
		limit = max(s.csize*maxSectionRatio, minSectionLimit)
	}
	if s.usize > limit {
		return rafs.Corruptf("%s: %d stored bytes claim to expand to %d", s.name, s.csize, s.usize)
	}
	return nil
}

// open returns a reader of the decoded content; it yields at most usize+1 bytes so that callers
// can detect content that is too long.
func (s *section) open(r io.ReaderAt) (io.Reader, func(), error) {
	if err := s.check(); err != nil {
		return nil, nil, err
	}
	src := io.NewSectionReader(markedReaderAt{r}, int64(s.off), int64(s.csize))
	noop := func() {}
	switch s.alg {
	case rafs.CompressNone:
		return src, noop, nil
	case rafs.CompressZstd:
		// The memory limit must admit the frame's window, which encoders size for their own
		// reasons; the output itself is bounded by check and the LimitReader below.
		d, err := zstd.NewReader(src, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxMemory(max(s.usize+1, zstdMinMemory)))
		if err != nil {
			return nil, nil, fmt.Errorf("%s: zstd reader: %w", s.name, err)
		}
		return io.LimitReader(d, int64(s.usize)+1), d.Close, nil
	case rafs.CompressGzip:
		z, err := gzip.NewReader(src)
		if err != nil {
			return nil, nil, s.decodeErr(err)
		}
		return io.LimitReader(z, int64(s.usize)+1), noop, nil
	case rafs.CompressLZ4Block:
		// A raw LZ4 block cannot be streamed; its size is bounded by check.
		in := make([]byte, s.csize)
		if _, err := src.ReadAt(in, 0); err != nil {
			return nil, nil, s.streamErr(err)
		}
		out := make([]byte, s.usize)
		n, err := lz4.UncompressBlock(in, out)
		if err != nil {
			return nil, nil, s.decodeErr(err)
		}
		return bytes.NewReader(out[:n]), noop, nil
	}
	return nil, nil, rafs.Corruptf("%s: unknown compressor %v", s.name, s.alg)
}

// read returns the decoded content, checking its size and, when recorded, its sha256.
func (s *section) read(r io.ReaderAt) ([]byte, error) {
	rd, done, err := s.open(r)
	if err != nil {
		return nil, err
	}
	defer done()
	var buf bytes.Buffer
	if s.alg == rafs.CompressNone {
		buf.Grow(int(s.usize)) // bounded by the file size: the section lies inside the file
	}
	if _, err := buf.ReadFrom(rd); err != nil {
		return nil, s.streamErr(err)
	}
	if uint64(buf.Len()) != s.usize {
		return nil, rafs.Corruptf("%s: decoded to %d bytes, want %d", s.name, buf.Len(), s.usize)
	}
	if !s.digest.IsZero() && sha256.Sum256(buf.Bytes()) != [32]byte(s.digest) {
		return nil, rafs.Corruptf("%s: sha256 of the content does not match the ToC", s.name)
	}
	return buf.Bytes(), nil
}

// sum streams the decoded content through sha256 and checks its size.
func (s *section) sum(r io.ReaderAt) (rafs.Digest, error) {
	rd, done, err := s.open(r)
	if err != nil {
		return rafs.Digest{}, err
	}
	defer done()
	h := sha256.New()
	n, err := io.Copy(h, rd)
	if err != nil {
		return rafs.Digest{}, s.streamErr(err)
	}
	if uint64(n) != s.usize {
		return rafs.Digest{}, rafs.Corruptf("%s: decoded to %d bytes, want %d", s.name, n, s.usize)
	}
	return rafs.Digest(h.Sum(nil)), nil
}

func (s *section) decodeErr(err error) error {
	return rafs.Corruptf("%s: %v decode: %v", s.name, s.alg, err)
}

// streamErr classifies an error met while decoding: the section reader's own errors are I/O,
// everything else comes from the decoder and means bad bytes.
func (s *section) streamErr(err error) error {
	var ioErr *readAtError
	if errors.As(err, &ioErr) {
		return fmt.Errorf("read %s: %w", s.name, ioErr.err)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return rafs.Corruptf("%s: [%d, +%d) ends early: truncated or corrupt %v stream", s.name, s.off, s.csize, s.alg)
	}
	return s.decodeErr(err)
}

// markedReaderAt wraps the blob's io.ReaderAt so that its failures (other than EOF) stay
// recognisable as I/O errors after passing through a decompressor.
type markedReaderAt struct{ r io.ReaderAt }

func (m markedReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := m.r.ReadAt(p, off)
	if err != nil && err != io.EOF {
		err = &readAtError{err}
	}
	return n, err
}

// readAtError marks an error returned by the underlying io.ReaderAt.
type readAtError struct{ err error }

func (e *readAtError) Error() string { return e.err.Error() }
func (e *readAtError) Unwrap() error { return e.err }
