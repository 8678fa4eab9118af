package blob

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"

	"github.com/dfnydus/dfnydus/rafs"
)

// ErrNoBootstrap is wrapped by Reader.Bootstrap when the blob inlines no bootstrap.
var ErrNoBootstrap = errors.New("blob has no inlined bootstrap")

// Reader reads what a blob file says about itself. It is safe for concurrent use when the
// underlying io.ReaderAt is.
type Reader struct {
	r    io.ReaderAt
	size int64

	hasTOC    bool
	toc       []TOCEntry
	tocOff    uint64 // file offset of the first ToC entry
	tocSize   uint32 // entries plus their tar header
	tocDigest rafs.Digest

	meta       *MetaHeader // nil without blob.meta
	metaSec    section     // the stored chunk-info array
	metaHdrOff uint64      // file offset of the 4096-byte blob.meta header

	boot *section // inlined bootstrap, from the ToC or (without ToC) from a trailing tar header
}

// Open reads a blob file's tail. A blob ending in a "rafs.blob.toc" tar header is a nydus 2.2+
// blob: its ToC and blob.meta header are parsed and bounds-checked here. A blob ending in an
// "image.boot" tar header (--blob-inline-meta without a ToC) exposes that bootstrap. Anything
// else is a raw pre-2.2 or RAFS v5 blob (HasTOC false), whose chunks are still served by
// ReadChunk from their records.
func Open(r io.ReaderAt, size int64) (*Reader, error) {
	if size < 0 || size > MaxFileSize {
		return nil, fmt.Errorf("open blob: size %d out of range", size)
	}
	rd := &Reader{r: r, size: size}
	if size < tarBlockSize {
		return rd, nil
	}
	tail := make([]byte, tarBlockSize)
	if err := rd.readAt(tail, uint64(size)-tarBlockSize, "blob tail"); err != nil {
		return nil, err
	}
	if !looksLikeTar(tail) {
		return rd, nil
	}
	name, esize, err := parseTarHeader(tail)
	if err != nil {
		return nil, fmt.Errorf("blob tail: %w", err)
	}
	if esize > uint64(size)-tarBlockSize {
		return nil, rafs.Corruptf("blob tail: %q claims %d bytes but only %d precede it", name, esize, size-tarBlockSize)
	}
	switch name {
	case NameTOC:
		if err := rd.loadTOC(tail, esize); err != nil {
			return nil, err
		}
	case NameBootstrap:
		// builder/src/lib.rs dump_bootstrap without --features blob-toc: raw bootstrap, then its header
		// (read the same way by toc.rs TocEntryList::extract_rafs_meta).
		rd.boot = &section{name: NameBootstrap, off: uint64(size) - tarBlockSize - esize, csize: esize, usize: esize}
	}
	return rd, nil
}

// readAt fills p from off; a short read means the layout points past the end of the file.
func (rd *Reader) readAt(p []byte, off uint64, what string) error {
	if off > uint64(rd.size) || uint64(len(p)) > uint64(rd.size)-off {
		return rafs.Corruptf("%s: [%d, +%d) is past the end of the %d-byte blob", what, off, len(p), rd.size)
	}
	n, err := rd.r.ReadAt(p, int64(off))
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return rafs.Corruptf("%s: [%d, +%d) is past the end of the blob", what, off, len(p))
	}
	return fmt.Errorf("read %s: %w", what, err)
}

// loadTOC parses the ToC of esize bytes that precedes the trailing tar header hdr.
func (rd *Reader) loadTOC(hdr []byte, esize uint64) error {
	if esize == 0 || esize%tocEntrySize != 0 || esize+tarBlockSize > maxTOCSize {
		return rafs.Corruptf("ToC: %d bytes is not 1..%d entries of %d bytes",
			esize, (maxTOCSize-tarBlockSize)/tocEntrySize, tocEntrySize)
	}
	rd.tocOff = uint64(rd.size) - tarBlockSize - esize
	data := make([]byte, esize, esize+tarBlockSize)
	if err := rd.readAt(data, rd.tocOff, "ToC"); err != nil {
		return err
	}
	// blob_toc_digest covers the entries and their tar header (builder/src/lib.rs dump_toc).
	rd.tocDigest = sha256.Sum256(append(data, hdr...))
	rd.tocSize = uint32(esize + tarBlockSize)
	toc, err := parseTOC(data, rd.tocOff)
	if err != nil {
		return err
	}
	rd.toc, rd.hasTOC = toc, true

	if e := rd.entry(NameBootstrap); e != nil {
		s, err := entrySection(e)
		if err != nil {
			return err
		}
		rd.boot = &s
	}
	if e := rd.entry(NameDigest); e != nil && e.UncompressedSize%32 != 0 {
		return rafs.Corruptf("blob.digest: %d bytes is not a whole number of digests", e.UncompressedSize)
	}
	return rd.loadMeta()
}

// loadMeta reads the blob.meta header the ToC points at and cross-checks the two.
func (rd *Reader) loadMeta() error {
	me, he := rd.entry(NameMeta), rd.entry(NameMetaHeader)
	if me == nil {
		if he != nil {
			return rafs.Corruptf("ToC has %s but no %s", NameMetaHeader, NameMeta)
		}
		return nil
	}
	sec, err := entrySection(me)
	if err != nil {
		return err
	}
	// nydusd reads the stored array and the header in one go from ci_offset (storage/src/meta/mod.rs
	// read_metadata), so the header must follow the array directly.
	hdrOff := me.CompressedOffset + me.CompressedSize
	if he != nil && (he.CompressedOffset != hdrOff || he.CompressedSize != MetaHeaderSize ||
		he.UncompressedSize != MetaHeaderSize || he.Flags&tocCompressMask != TOCCompressNone) {
		return rafs.Corruptf("%s entry [%d, +%d) does not directly follow %s [%d, +%d) as %d raw bytes",
			NameMetaHeader, he.CompressedOffset, he.CompressedSize, NameMeta, me.CompressedOffset,
			me.CompressedSize, MetaHeaderSize)
	}
	buf := make([]byte, MetaHeaderSize)
	if hdrOff+MetaHeaderSize > rd.tocOff {
		return rafs.Corruptf("blob.meta header at %d runs into the ToC at %d", hdrOff, rd.tocOff)
	}
	if err := rd.readAt(buf, hdrOff, "blob.meta header"); err != nil {
		return err
	}
	h, err := decodeMetaHeader(buf)
	if err != nil {
		return err
	}
	if h.CIOffset != me.CompressedOffset || h.CICompressedSize != me.CompressedSize ||
		h.CIUncompressedSize != me.UncompressedSize || h.CICompressor != sec.alg {
		return rafs.Corruptf("blob.meta header (%v at %d, %d/%d bytes) disagrees with its ToC entry (%v at %d, %d/%d bytes)",
			h.CICompressor, h.CIOffset, h.CICompressedSize, h.CIUncompressedSize,
			sec.alg, me.CompressedOffset, me.CompressedSize, me.UncompressedSize)
	}
	if h.Features&FeatureHasTarHeader != 0 && h.CIOffset < tarBlockSize {
		return rafs.Corruptf("blob.meta at %d leaves no room for the chunk data's tar header", h.CIOffset)
	}
	// Bound the chunk count by the input before anyone allocates for it: every chunk has a digest
	// in blob.digest, and (unless batched or elsewhere) at least one byte of chunk data.
	if de := rd.entry(NameDigest); de != nil && de.UncompressedSize != uint64(h.CIEntries)*32 {
		return rafs.Corruptf("blob.digest holds %d digests for %d chunk infos", de.UncompressedSize/32, h.CIEntries)
	}
	if h.Features&(FeatureSeparate|FeatureBatch|FeatureZran) == 0 && uint64(h.CIEntries) > dataSize(&h) {
		return rafs.Corruptf("blob.meta: %d chunks cannot fit %d bytes of chunk data", h.CIEntries, dataSize(&h))
	}
	rd.meta, rd.metaSec, rd.metaHdrOff = &h, sec, hdrOff
	return nil
}

// dataSize is the size of the chunk data region (storage/src/device.rs compressed_data_size):
// everything before blob.meta, less the chunk data's tar header.
func dataSize(h *MetaHeader) uint64 {
	if h.Features&FeatureHasTarHeader != 0 {
		return h.CIOffset - tarBlockSize
	}
	return h.CIOffset
}

func entrySection(e *TOCEntry) (section, error) {
	alg, err := e.Compressor()
	if err != nil {
		return section{}, err
	}
	s := section{name: e.Name, off: e.start(), csize: e.CompressedSize, usize: e.UncompressedSize,
		alg: alg, digest: e.Digest}
	return s, s.check()
}

func (rd *Reader) entry(name string) *TOCEntry {
	for i := range rd.toc {
		if rd.toc[i].Name == name {
			return &rd.toc[i]
		}
	}
	return nil
}

// HasTOC reports whether the blob has the nydus 2.2+ ToC layout.
func (rd *Reader) HasTOC() bool { return rd.hasTOC }

// HasBootstrap reports whether the blob inlines a bootstrap, named by its ToC or (without a ToC)
// by its trailing tar header.
func (rd *Reader) HasBootstrap() bool { return rd.boot != nil }

// TOC returns a copy of the ToC entries, in file order of the ToC (nil without a ToC).
func (rd *Reader) TOC() []TOCEntry { return append([]TOCEntry(nil), rd.toc...) }

// TOCSize and TOCDigest are what a v6 blob table records for this blob: the size of the ToC
// entries plus their tar header, and the sha256 of those bytes. Zero without a ToC.
func (rd *Reader) TOCSize() uint32        { return rd.tocSize }
func (rd *Reader) TOCDigest() rafs.Digest { return rd.tocDigest }

// Size is the size of the blob file.
func (rd *Reader) Size() int64 { return rd.size }

// MetaHeader returns the blob.meta header, if the blob has one.
func (rd *Reader) MetaHeader() (MetaHeader, bool) {
	if rd.meta == nil {
		return MetaHeader{}, false
	}
	return *rd.meta, true
}

// DataSize is the size of the chunk data region at the start of the file: what precedes
// blob.meta's tar header in a 2.2+ blob, the whole of a raw blob, and, for a blob that inlines a
// bootstrap without a ToC, everything before the bootstrap (which may include blob.meta).
func (rd *Reader) DataSize() uint64 {
	switch {
	case rd.meta != nil:
		return dataSize(rd.meta)
	case rd.entry(NameBlobData) != nil:
		e := rd.entry(NameBlobData)
		return e.start() + e.CompressedSize
	case rd.boot != nil && !rd.hasTOC:
		return rd.boot.off
	}
	return uint64(rd.size)
}

// uncompressedSize is the size of the uncompressed view as the blob records it (image.blob's
// uncompressed size), or the largest possible when it records none.
func (rd *Reader) uncompressedSize() uint64 {
	if e := rd.entry(NameBlobData); e != nil {
		return e.UncompressedSize
	}
	return MaxUncompressedSize
}

// ChunkInfos decodes blob.meta (v1 or v2 entries) and checks each entry the way nydusd does. It
// returns nil when the blob carries no blob.meta (raw blobs, or a blob without chunks).
func (rd *Reader) ChunkInfos() ([]ChunkInfo, error) {
	if rd.meta == nil {
		return nil, nil
	}
	data, err := rd.metaSec.read(rd.r)
	if err != nil {
		return nil, err
	}
	h := rd.meta
	es := h.entrySize()
	infos := make([]ChunkInfo, h.CIEntries)
	ds, us := dataSize(h), rd.uncompressedSize()
	for i := range infos {
		b := data[i*es : (i+1)*es]
		if es == ciV2Size {
			infos[i] = decodeV2(b)
		} else {
			infos[i] = decodeV1(b)
		}
		if err := infos[i].validate(i, h.Features, ds, us); err != nil {
			return nil, err
		}
	}
	return infos, nil
}

// Digests returns blob.digest: the digest of each chunk's uncompressed bytes, by chunk index. It
// returns nil when the blob has no blob.digest.
func (rd *Reader) Digests() ([]rafs.Digest, error) {
	e := rd.entry(NameDigest)
	if e == nil {
		return nil, nil
	}
	s, err := entrySection(e)
	if err != nil {
		return nil, err
	}
	data, err := s.read(rd.r)
	if err != nil {
		return nil, err
	}
	ds := make([]rafs.Digest, len(data)/32)
	for i := range ds {
		copy(ds[i][:], data[i*32:])
	}
	return ds, nil
}

// Bootstrap returns the inlined bootstrap (image.boot), decompressed and checked against the
// ToC's sha256, or an error wrapping ErrNoBootstrap.
func (rd *Reader) Bootstrap() ([]byte, error) {
	if rd.boot == nil {
		return nil, fmt.Errorf("read bootstrap: %w", ErrNoBootstrap)
	}
	return rd.boot.read(rd.r)
}

// TableEntry returns what the blob itself says of the fields of its blob-table entry: features,
// sizes, chunk count, blob.meta location and ToC. ID, ChunkSize, Compressor and Digester are not
// recorded in the blob and are left zero.
func (rd *Reader) TableEntry() *rafs.Blob {
	b := &rafs.Blob{CompressedSize: uint64(rd.size), TOCSize: rd.tocSize, TOCDigest: rd.tocDigest}
	if e := rd.entry(NameBlobData); e != nil {
		b.UncompressedSize = e.UncompressedSize
	}
	if h := rd.meta; h != nil {
		b.Features = h.Features
		b.ChunkCount = h.CIEntries
		b.MetaCompressor = h.CICompressor
		b.MetaOffset = h.CIOffset
		b.MetaCompressedSize = h.CICompressedSize
		b.MetaUncompressedSize = h.CIUncompressedSize
	}
	return b
}
