package blob

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"strings"

	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/compress"
	"github.com/dfnydus/dfnydus/rafs/digest"
)

// WriterOptions say how chunks are stored and which layout the blob gets.
type WriterOptions struct {
	Compressor rafs.Compressor
	Digester   rafs.Digester
	ChunkSize  uint32 // 0 means rafs.DefaultChunkSize

	// Version is the RAFS version of the bootstrap that will point into the blob. 6 (or 0) writes
	// the nydus-image >= 2.2 layout ("--features blob-toc"): 4 KiB-aligned uncompressed offsets,
	// blob.meta with v1 chunk infos, blob.digest and a ToC. 5 writes what nydus-image writes for
	// "--fs-version 5": the chunk data alone.
	Version int
	// AlignedChunk 4 KiB-aligns uncompressed offsets of a v5 blob ("--aligned-chunk"); v6
	// blobs are always aligned.
	AlignedChunk bool
	// CRC32 records a CRC32C (Castagnoli) of each chunk's uncompressed bytes in its record and
	// sets rafs.ChunkHasCRC32, as nydus-image >= 2.4 does. v1 chunk infos have no room for it, so
	// it lives only in the bootstrap's chunk records.
	CRC32 bool
}

func (o WriterOptions) normalize() (WriterOptions, error) {
	if o.ChunkSize == 0 {
		o.ChunkSize = rafs.DefaultChunkSize
	}
	if o.Version == 0 {
		o.Version = 6
	}
	switch {
	case !rafs.ValidChunkSize(uint64(o.ChunkSize)):
		return o, fmt.Errorf("blob writer: chunk size %#x is not a power of two in [4 KiB, 16 MiB]", o.ChunkSize)
	case o.Compressor > rafs.CompressZstd:
		return o, fmt.Errorf("blob writer: unknown compressor %v", o.Compressor)
	case o.Digester > rafs.DigestSHA256:
		return o, fmt.Errorf("blob writer: unknown digester %v", o.Digester)
	case o.Version != 5 && o.Version != 6:
		return o, fmt.Errorf("blob writer: RAFS version %d (want 5 or 6)", o.Version)
	}
	return o, nil
}

func (o *WriterOptions) aligned() bool { return o.Version == 6 || o.AlignedChunk }

// Prepared is a chunk compressed and digested off the write path, so a builder can compress in
// parallel and append in order.
type Prepared struct {
	stored     []byte // the bytes that go into the blob
	digest     rafs.Digest
	size       uint32 // uncompressed size
	compressed bool
	crc        uint32
	hasCRC     bool
	comp       rafs.Compressor
}

// Digest, Size and StoredSize describe the prepared chunk: its digest, its uncompressed size
// and how many bytes it will occupy in the blob.
func (p *Prepared) Digest() rafs.Digest { return p.digest }
func (p *Prepared) Size() uint32        { return p.size }
func (p *Prepared) StoredSize() int     { return len(p.stored) }

// Prepare compresses data (1..ChunkSize bytes) with opts.Compressor and stores it raw, with the
// COMPRESSED flag cleared, when compression does not make it smaller (utils/src/compress
// compress(): ratio >= 100% is abandoned). digest is the caller's digest of data under
// opts.Digester (a zero digest is computed here). Prepare keeps no reference to data and is safe
// for concurrent use.
func Prepare(opts WriterOptions, data []byte, dg rafs.Digest) (Prepared, error) {
	o, err := opts.normalize()
	if err != nil {
		return Prepared{}, err
	}
	if len(data) == 0 || uint64(len(data)) > uint64(o.ChunkSize) {
		return Prepared{}, fmt.Errorf("prepare chunk: %d bytes (want 1..%d)", len(data), o.ChunkSize)
	}
	if dg.IsZero() {
		dg = digest.Sum(o.Digester, data)
	}
	p := Prepared{digest: dg, size: uint32(len(data)), comp: o.Compressor}
	if o.Compressor != rafs.CompressNone {
		out, err := compress.Compress(o.Compressor, nil, data)
		if err != nil {
			return Prepared{}, fmt.Errorf("prepare chunk: %w", err)
		}
		if len(out) < len(data) {
			p.stored, p.compressed = out, true
		}
	}
	if !p.compressed {
		p.stored = bytes.Clone(data)
	}
	if o.CRC32 {
		p.crc, p.hasCRC = crc32.Checksum(data, castagnoli), true
	}
	return p, nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Writer appends chunks to a blob and finishes it with the sections its layout needs. Use one
// goroutine per Writer (Prepare may run anywhere).
type Writer struct {
	w    io.Writer
	opts WriterOptions
	h    hash.Hash // sha256 of every byte written: the blob id
	off  uint64    // bytes written so far

	uoff    uint64 // next uncompressed offset
	infos   []byte // v1 chunk infos (v6 only)
	digests []byte // blob.digest (v6 only)
	count   uint32
	err     error // sticky
}

// NewWriter returns a Writer appending to w, which receives one Write per chunk and per section
// (wrap a file in a bufio.Writer when chunks are small). Invalid options surface from the first
// call.
func NewWriter(w io.Writer, opts WriterOptions) *Writer {
	o, err := opts.normalize()
	return &Writer{w: w, opts: o, h: sha256.New(), err: err}
}

// ChunkCount returns the number of chunks added so far.
func (w *Writer) ChunkCount() int { return int(w.count) }

// AddChunk is Prepare followed by AddPrepared.
func (w *Writer) AddChunk(data []byte, dg rafs.Digest) (rafs.Chunk, error) {
	if w.err != nil {
		return rafs.Chunk{}, w.err
	}
	p, err := Prepare(w.opts, data, dg)
	if err != nil {
		return rafs.Chunk{}, err
	}
	return w.AddPrepared(p)
}

// AddPrepared appends a prepared chunk and returns its record: Digest, Flags, compressed and
// uncompressed offsets and sizes, Index (0, 1, 2, ...) and CRC32. Uncompressed offsets are
// 4 KiB aligned for v6 (builder/src/core/node.rs dump_file_chunk). BlobIndex and FileOffset are
// the caller's to fill.
func (w *Writer) AddPrepared(p Prepared) (rafs.Chunk, error) {
	if w.err != nil {
		return rafs.Chunk{}, w.err
	}
	switch {
	case p.size == 0:
		return rafs.Chunk{}, errors.New("add chunk: Prepared is empty (use Prepare)")
	case p.comp != w.opts.Compressor:
		return rafs.Chunk{}, fmt.Errorf("add chunk: prepared with %v, blob uses %v", p.comp, w.opts.Compressor)
	case p.size > w.opts.ChunkSize:
		return rafs.Chunk{}, fmt.Errorf("add chunk: %d bytes exceed the chunk size %d", p.size, w.opts.ChunkSize)
	case w.count >= MaxChunks:
		return rafs.Chunk{}, fmt.Errorf("add chunk: blob already holds %d chunks", w.count)
	case w.off+uint64(len(p.stored)) > MaxFileSize:
		return rafs.Chunk{}, fmt.Errorf("add chunk: blob would exceed %d bytes", uint64(MaxFileSize))
	}
	step := uint64(p.size)
	if w.opts.aligned() {
		step = roundUp4K(step)
	}
	if w.uoff+step > MaxUncompressedSize {
		return rafs.Chunk{}, fmt.Errorf("add chunk: uncompressed view would exceed %d bytes", uint64(MaxUncompressedSize))
	}
	c := rafs.Chunk{
		Digest:             p.digest,
		CompressedOffset:   w.off,
		CompressedSize:     uint32(len(p.stored)),
		UncompressedOffset: w.uoff,
		UncompressedSize:   p.size,
		Index:              w.count,
	}
	if p.compressed {
		c.Flags |= rafs.ChunkCompressed
	}
	if p.hasCRC {
		c.Flags |= rafs.ChunkHasCRC32
		c.CRC32 = p.crc
	}
	if w.opts.Version == 6 {
		ci := ChunkInfo{CompressedOffset: c.CompressedOffset, CompressedSize: c.CompressedSize,
			UncompressedOffset: c.UncompressedOffset, UncompressedSize: c.UncompressedSize, Compressed: p.compressed}
		infos, err := appendV1(w.infos, &ci)
		if err != nil {
			return rafs.Chunk{}, fmt.Errorf("add chunk %d: %w", c.Index, err)
		}
		w.infos = infos
		w.digests = append(w.digests, p.digest[:]...)
	}
	if err := w.write(p.stored); err != nil {
		return rafs.Chunk{}, err
	}
	w.uoff += step
	w.count++
	return c, nil
}

// write appends b to the blob, hashing it; errors are sticky.
func (w *Writer) write(b []byte) error {
	if w.err != nil {
		return w.err
	}
	n, err := w.w.Write(b)
	w.h.Write(b[:n])
	w.off += uint64(n)
	if err == nil && n < len(b) {
		err = io.ErrShortWrite
	}
	if err != nil {
		w.err = fmt.Errorf("write blob: %w", err)
	}
	return w.err
}

// InlinedBlobID is the blob id a bootstrap inlined in its own blob records for that blob:
// the blob's real id is the sha256 of a file that contains the bootstrap, so nydus-image writes
// this placeholder instead (builder/src/lib.rs dump_bootstrap), and readers put the id of the
// blob they found the bootstrap in in its place (rafs/src/metadata/mod.rs
// set_blob_id_from_meta_path).
var InlinedBlobID = strings.Repeat("x", 64)

// Finish writes the sections after the chunk data and returns the blob's table entry. For v6:
// the chunk data's tar header, blob.meta (chunk infos, compressed like the chunks when that
// shrinks them, plus the 4096-byte header), blob.digest, the inlined bootstrap when bootstrap is
// not nil (zstd-compressed when that shrinks it), and the ToC, each followed by its tar header
// (builder/src/core/blob.rs, builder/src/lib.rs). A v5 blob gets nothing after its chunks and
// cannot inline a bootstrap.
//
// The entry carries ID (hex sha256 of every byte written), ChunkSize, ChunkCount, Compressor,
// Digester, Features, CompressedSize (the whole file, as nydus-image records it),
// UncompressedSize, the blob.meta location and compressor, and TOCSize/TOCDigest. MetaDigest and
// MetaSize stay zero, as nydus-image leaves them for blobs that hold their own chunk data.
// Output is deterministic. The Writer is unusable afterwards.
func (w *Writer) Finish(bootstrap []byte) (*rafs.Blob, error) {
	var encode func(*rafs.Blob) ([]byte, error)
	if bootstrap != nil {
		if len(bootstrap) == 0 {
			return nil, errors.New("finish blob: empty bootstrap (pass nil for none)")
		}
		encode = func(*rafs.Blob) ([]byte, error) { return bootstrap, nil }
	}
	return w.finish(encode)
}

// FinishInline finishes a v6 blob that inlines the bootstrap of its own image, as nydus-image
// --blob-inline-meta does. Once the sections before the bootstrap are written, encode is called
// with this blob's table entry as the bootstrap records it: ID is InlinedBlobID, CompressedSize
// the bytes written so far (what nydus-image records before it appends the bootstrap), TOCSize
// and TOCDigest zero; every other field is final. encode returns the bootstrap, which is written
// with the ToC after it. The entry returned is the finished blob's, as Finish returns it.
func (w *Writer) FinishInline(encode func(self *rafs.Blob) ([]byte, error)) (*rafs.Blob, error) {
	if encode == nil {
		return nil, errors.New("finish blob: FinishInline without a bootstrap encoder")
	}
	return w.finish(encode)
}

func (w *Writer) finish(encode func(*rafs.Blob) ([]byte, error)) (*rafs.Blob, error) {
	if w.err != nil {
		return nil, w.err
	}
	defer func() {
		if w.err == nil {
			w.err = errors.New("blob writer: already finished")
		}
	}()
	b := &rafs.Blob{
		ChunkSize:  w.opts.ChunkSize,
		ChunkCount: w.count,
		Compressor: w.opts.Compressor,
		Digester:   w.opts.Digester,
		// dump_file_chunk: uncompressed_blob_size is the (aligned) end of the last chunk.
		UncompressedSize: w.uoff,
	}
	if w.opts.Version == 5 {
		if encode != nil {
			return nil, errors.New("finish blob: only the v6 layout can inline a bootstrap")
		}
		// builder/src/core/context.rs BuildContext::new: CAP_TAR_TOC marks nydus-image >= 2.2.
		b.Features = FeatureCapTarTOC
		if w.opts.AlignedChunk {
			b.Features |= FeatureAligned
		}
	} else if err := w.finishV6(b, encode); err != nil {
		return nil, err
	}
	b.CompressedSize = w.off
	b.ID = hex.EncodeToString(w.h.Sum(nil))
	return b, nil
}

func (w *Writer) finishV6(b *rafs.Blob, encode func(*rafs.Blob) ([]byte, error)) error {
	features := FeatureAligned | FeatureHasTarHeader | FeatureHasTOC | FeatureCapTarTOC
	if encode != nil {
		features |= FeatureInlinedFSMeta
	}
	var toc []TOCEntry

	// image.blob: its ToC digest is the running blob hash after its tar header, i.e. the sha256
	// of the chunk data plus that header (builder/src/core/blob.rs finalize_blob_data).
	dataSize := w.off
	if err := w.writeTar(NameBlobData, dataSize); err != nil {
		return err
	}
	toc = append(toc, TOCEntry{Name: NameBlobData, Flags: TOCCompressNone, Digest: rafs.Digest(w.h.Sum(nil)),
		CompressedOffset: 0, CompressedSize: dataSize, UncompressedSize: w.uoff})

	// blob.meta and blob.digest exist only for blobs with chunks (Blob::dump_meta_data).
	if w.count > 0 {
		features |= FeatureInlinedChunkDigest
		entries, err := w.writeMeta(b, features)
		if err != nil {
			return err
		}
		toc = append(toc, entries...)
		off := w.off
		if err := w.writeSection(NameDigest, w.digests); err != nil {
			return err
		}
		toc = append(toc, TOCEntry{Name: NameDigest, Flags: TOCCompressNone, Digest: sha256.Sum256(w.digests),
			CompressedOffset: off, CompressedSize: uint64(len(w.digests)), UncompressedSize: uint64(len(w.digests))})
	}
	b.Features = features

	if encode != nil {
		self := *b
		self.ID, self.CompressedSize = InlinedBlobID, w.off
		bootstrap, err := encode(&self)
		if err != nil {
			return fmt.Errorf("finish blob: bootstrap to inline: %w", err)
		}
		if len(bootstrap) == 0 {
			return errors.New("finish blob: empty bootstrap to inline")
		}
		e, err := w.writeBootstrap(bootstrap)
		if err != nil {
			return err
		}
		toc = append(toc, e)
	}

	// The ToC, then its tar header; blob_toc_digest is the sha256 of both (builder/src/lib.rs dump_toc).
	var tb []byte
	for i := range toc {
		tb = appendTOCEntry(tb, &toc[i])
	}
	hdr := tarHeader(NameTOC, uint64(len(tb)))
	tb = append(tb, hdr[:]...)
	if err := w.write(tb); err != nil {
		return err
	}
	b.TOCDigest = sha256.Sum256(tb)
	b.TOCSize = uint32(len(tb))
	return nil
}

// metaCompressor is how blob.meta is stored: like the chunks (blob.rs
// get_compression_algorithm_for_meta), except that the ToC cannot name gzip, so gzip blobs get a
// zstd blob.meta as nydus-image does for its gzip-based conversions.
func metaCompressor(c rafs.Compressor) rafs.Compressor {
	if c == rafs.CompressGzip {
		return rafs.CompressZstd
	}
	return c
}

// writeMeta writes the chunk-info array, the blob.meta header and their tar header, fills b's
// blob.meta fields and returns the ToC entries for both (builder/src/core/blob.rs dump_meta_data).
func (w *Writer) writeMeta(b *rafs.Blob, features uint32) ([]TOCEntry, error) {
	alg := metaCompressor(w.opts.Compressor)
	stored := w.infos
	if alg != rafs.CompressNone {
		out, err := compress.Compress(alg, nil, w.infos)
		if err != nil {
			return nil, fmt.Errorf("compress blob.meta: %w", err)
		}
		if len(out) < len(w.infos) {
			stored = out
		} else {
			alg = rafs.CompressNone
		}
	}
	h := MetaHeader{
		Features:           features,
		CICompressor:       alg,
		CIEntries:          w.count,
		CIOffset:           w.off,
		CICompressedSize:   uint64(len(stored)),
		CIUncompressedSize: uint64(len(w.infos)),
	}
	hdr := h.encode()
	if err := w.write(stored); err != nil {
		return nil, err
	}
	if err := w.write(hdr); err != nil {
		return nil, err
	}
	if err := w.writeTar(NameMeta, uint64(len(stored))+MetaHeaderSize); err != nil {
		return nil, err
	}
	flags, err := tocFlags(alg)
	if err != nil {
		return nil, err
	}
	b.MetaCompressor = alg
	b.MetaOffset = h.CIOffset
	b.MetaCompressedSize = h.CICompressedSize
	b.MetaUncompressedSize = h.CIUncompressedSize
	return []TOCEntry{
		{Name: NameMeta, Flags: flags, Digest: sha256.Sum256(w.infos), CompressedOffset: h.CIOffset,
			CompressedSize: h.CICompressedSize, UncompressedSize: h.CIUncompressedSize},
		{Name: NameMetaHeader, Flags: TOCCompressNone, Digest: sha256.Sum256(hdr),
			CompressedOffset: h.CIOffset + h.CICompressedSize, CompressedSize: MetaHeaderSize, UncompressedSize: MetaHeaderSize},
	}, nil
}

// writeBootstrap writes image.boot, zstd-compressed when that shrinks it (builder/src/lib.rs
// dump_bootstrap), and returns its ToC entry; the digest is of the uncompressed bootstrap.
func (w *Writer) writeBootstrap(boot []byte) (TOCEntry, error) {
	stored, flags := boot, TOCCompressNone
	out, err := compress.Compress(rafs.CompressZstd, nil, boot)
	if err != nil {
		return TOCEntry{}, fmt.Errorf("compress bootstrap: %w", err)
	}
	if len(out) < len(boot) {
		stored, flags = out, TOCCompressZstd
	}
	off := w.off
	if err := w.writeSection(NameBootstrap, stored); err != nil {
		return TOCEntry{}, err
	}
	return TOCEntry{Name: NameBootstrap, Flags: flags, Digest: sha256.Sum256(boot), CompressedOffset: off,
		CompressedSize: uint64(len(stored)), UncompressedSize: uint64(len(boot))}, nil
}

// writeSection writes data followed by its tar header.
func (w *Writer) writeSection(name string, data []byte) error {
	if err := w.write(data); err != nil {
		return err
	}
	return w.writeTar(name, uint64(len(data)))
}

func (w *Writer) writeTar(name string, size uint64) error {
	h := tarHeader(name, size)
	return w.write(h[:])
}
