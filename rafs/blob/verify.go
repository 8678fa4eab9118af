package blob

import (
	"crypto/sha256"
	"fmt"
	"io"

	"github.com/dfnydus/dfnydus/rafs"
)

// Verify checks what the blob says about itself and, when b (the blob's table entry) is not nil,
// that the entry agrees with it:
//   - every ToC entry's sha256 (image.blob's covers the chunk data plus its tar header, as
//     nydus-image computes it) and the tar header that follows each section;
//   - the blob.meta header (magic, sizes, against its ToC entries), every chunk info against the
//     chunk data and the uncompressed view, their order (sorted, no overlaps), and their count
//     against blob.digest;
//   - b's CompressedSize (the file size), UncompressedSize, ChunkCount, Features, blob.meta
//     location and compressor, TOCSize and TOCDigest, and MetaDigest/MetaSize when set (the
//     sha256 and size of this file, as recorded for blobs whose chunk data lives elsewhere).
//
// Verify does not hash the whole file against b.ID (callers fetch blobs by that digest) and
// does not decompress chunks (ReadChunk checks each against its digest). Mismatches are errors
// wrapping rafs.ErrCorrupt.
func (rd *Reader) Verify(b *rafs.Blob) error {
	if err := rd.verifySections(); err != nil {
		return err
	}
	if rd.meta != nil {
		infos, err := rd.ChunkInfos()
		if err != nil {
			return err
		}
		ds, err := rd.Digests()
		if err != nil {
			return err
		}
		if rd.meta.Features&FeatureInlinedChunkDigest != 0 && ds == nil {
			return rafs.Corruptf("blob.meta header has INLINED_CHUNK_DIGEST but the ToC has no %s", NameDigest)
		}
		if ds != nil && len(ds) != len(infos) {
			return rafs.Corruptf("blob.digest holds %d digests for %d chunk infos", len(ds), len(infos))
		}
		if err := checkOrder(infos, rd.meta.Features); err != nil {
			return err
		}
		// image.blob and its tar header (checked above) end where blob.meta starts. Not
		// dataSize: blobs from nydus-image builds that wrote tar headers before the
		// HAS_TAR_HEADER bit existed (tests/texture/toc upstream) do not flag theirs.
		if e := rd.entry(NameBlobData); e != nil && (e.start() != 0 || e.CompressedSize+tarBlockSize != rd.meta.CIOffset) {
			return rafs.Corruptf("image.blob [%d, +%d) and its tar header do not end where blob.meta starts (%d)",
				e.start(), e.CompressedSize, rd.meta.CIOffset)
		}
	} else if rd.entry(NameDigest) != nil {
		return rafs.Corruptf("ToC has %s but no %s", NameDigest, NameMeta)
	}
	if b == nil {
		return nil
	}
	return rd.verifyEntry(b)
}

// checkOrder checks that chunk infos are sorted by uncompressed offset without overlap (nydusd
// finds the chunk for an address by binary search, storage/src/meta/mod.rs
// get_chunk_index_nocheck), and, for blobs holding their own plainly compressed chunks, that
// their stored bytes do not overlap either.
func checkOrder(infos []ChunkInfo, features uint32) error {
	plain := features&(FeatureZran|FeatureBatch|FeatureSeparate) == 0
	for i := 1; i < len(infos); i++ {
		p, c := &infos[i-1], &infos[i]
		if c.UncompressedOffset < p.UncompressedOffset+uint64(p.UncompressedSize) {
			return rafs.Corruptf("chunk info %d: uncompressed offset %#x is inside chunk %d [%#x, +%#x)",
				i, c.UncompressedOffset, i-1, p.UncompressedOffset, p.UncompressedSize)
		}
		if plain && c.CompressedOffset < p.CompressedOffset+uint64(p.CompressedSize) {
			return rafs.Corruptf("chunk info %d: compressed offset %#x is inside chunk %d [%#x, +%#x)",
				i, c.CompressedOffset, i-1, p.CompressedOffset, p.CompressedSize)
		}
	}
	return nil
}

// verifySections checks each ToC entry's content digest and trailing tar header.
func (rd *Reader) verifySections() error {
	for i := range rd.toc {
		e := &rd.toc[i]
		if hdrOff, hdrSize, hasHdr := rd.tarHeaderOf(e); hasHdr {
			if err := rd.checkTarAt(hdrOff, e.Name, hdrSize); err != nil {
				return err
			}
		}
		var s section
		if e.Name == NameBlobData {
			// builder/src/core/blob.rs finalize_blob_data hashes the data and its tar header.
			n := e.CompressedSize + tarBlockSize
			s = section{name: e.Name, off: e.start(), csize: n, usize: n, alg: rafs.CompressNone}
		} else {
			var err error
			if s, err = entrySection(e); err != nil {
				return err
			}
		}
		got, err := s.sum(rd.r)
		if err != nil {
			return err
		}
		if !e.Digest.IsZero() && got != e.Digest {
			return rafs.Corruptf("ToC entry %q: sha256 %s, ToC says %s", e.Name, got, e.Digest)
		}
	}
	return nil
}

// tarHeaderOf says where the tar header that follows a section sits and the size it names:
// blob.meta's covers the stored array and the 4096-byte header after it; blob.meta.header has
// none of its own, and unknown sections are not assumed to.
func (rd *Reader) tarHeaderOf(e *TOCEntry) (off, size uint64, ok bool) {
	switch e.Name {
	case NameMeta:
		return rd.metaHdrOff + MetaHeaderSize, e.CompressedSize + MetaHeaderSize, true
	case NameBlobData, NameDigest, NameBootstrap:
		return e.start() + e.CompressedSize, e.CompressedSize, true
	}
	return 0, 0, false
}

// checkTarAt checks that a tar header naming name with the given size sits at off, before the ToC.
func (rd *Reader) checkTarAt(off uint64, name string, size uint64) error {
	if off+tarBlockSize > rd.tocOff {
		return rafs.Corruptf("tar header of %q at %d runs into the ToC at %d", name, off, rd.tocOff)
	}
	h := make([]byte, tarBlockSize)
	if err := rd.readAt(h, off, "tar header of "+name); err != nil {
		return err
	}
	gotName, gotSize, err := parseTarHeader(h)
	if err != nil {
		return fmt.Errorf("tar header of %q at %d: %w", name, off, err)
	}
	if gotName != name || gotSize != size {
		return rafs.Corruptf("tar header at %d names %q (%d bytes), want %q (%d bytes)", off, gotName, gotSize, name, size)
	}
	return nil
}

// verifyEntry compares the blob-table entry b with the blob.
func (rd *Reader) verifyEntry(b *rafs.Blob) error {
	bad := func(format string, args ...any) error {
		return rafs.Corruptf("blob %s: table entry disagrees with the blob: %s", b.ID, fmt.Sprintf(format, args...))
	}
	// nydus-image records the whole file as compressed_size (builder/src/lib.rs finalize_blob;
	// context.rs BlobContext::from fixes inlined-meta blobs up to the same).
	if b.CompressedSize != uint64(rd.size) {
		return bad("compressed size %d, file has %d bytes", b.CompressedSize, rd.size)
	}
	if !rd.hasTOC {
		if b.TOCSize != 0 || !b.TOCDigest.IsZero() || b.MetaOffset != 0 || b.MetaCompressedSize != 0 {
			return bad("it names a ToC or blob.meta, the blob has neither")
		}
	} else {
		if b.TOCSize != 0 && b.TOCSize != rd.tocSize {
			return bad("ToC size %d, blob's is %d", b.TOCSize, rd.tocSize)
		}
		if !b.TOCDigest.IsZero() && b.TOCDigest != rd.tocDigest {
			return bad("ToC digest %s, blob's is %s", b.TOCDigest, rd.tocDigest)
		}
		if e := rd.entry(NameBlobData); e != nil && b.UncompressedSize != e.UncompressedSize {
			return bad("uncompressed size %d, image.blob says %d", b.UncompressedSize, e.UncompressedSize)
		}
	}
	if h := rd.meta; h != nil {
		if b.ChunkCount != h.CIEntries && b.Features&FeatureChunkdictGenerated == 0 {
			return bad("%d chunks, blob.meta has %d", b.ChunkCount, h.CIEntries)
		}
		// A merged bootstrap drops INLINED_FS_META (context.rs BlobContext::from).
		if (b.Features^h.Features)&^FeatureInlinedFSMeta != 0 {
			return bad("features %#x, blob.meta header has %#x", b.Features, h.Features)
		}
		if b.MetaCompressor != h.CICompressor || b.MetaOffset != h.CIOffset ||
			b.MetaCompressedSize != h.CICompressedSize || b.MetaUncompressedSize != h.CIUncompressedSize {
			return bad("blob.meta %v at %d (%d/%d bytes), header says %v at %d (%d/%d bytes)",
				b.MetaCompressor, b.MetaOffset, b.MetaCompressedSize, b.MetaUncompressedSize,
				h.CICompressor, h.CIOffset, h.CICompressedSize, h.CIUncompressedSize)
		}
	} else if b.MetaOffset != 0 || b.MetaCompressedSize != 0 || b.MetaUncompressedSize != 0 {
		return bad("blob.meta at %d, the blob has none", b.MetaOffset)
	} else if rd.hasTOC && b.ChunkCount != 0 {
		return bad("%d chunks, the blob has no blob.meta", b.ChunkCount)
	}
	if b.MetaSize != 0 && b.MetaSize != uint64(rd.size) {
		return bad("meta size %d, file has %d bytes", b.MetaSize, rd.size)
	}
	if !b.MetaDigest.IsZero() {
		h := sha256.New()
		if _, err := io.Copy(h, io.NewSectionReader(rd.r, 0, rd.size)); err != nil {
			return fmt.Errorf("hash blob %s: %w", b.ID, err)
		}
		if got := rafs.Digest(h.Sum(nil)); got != b.MetaDigest {
			return bad("meta digest %s, file's sha256 is %s", b.MetaDigest, got)
		}
	}
	return nil
}
