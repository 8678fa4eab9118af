package blob

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"unicode/utf8"

	"github.com/dfnydus/dfnydus/rafs"
)

// ToC entry layout (storage/src/meta/toc.rs TocEntry, 128 bytes): flags u32, reserved u32,
// name [16]byte, sha256 of the uncompressed content [32]byte, compressed_offset u64,
// compressed_size u64, uncompressed_size u64, reserved [48]byte.
const (
	tocEntrySize = 128
	tocNameLen   = 16
	// maxTOCSize bounds the ToC (entries plus tar header): nydusd reads at most the blob's last
	// 4 KiB to find it and refuses cached ToCs above that (toc.rs read_toc_header,
	// read_from_cache_file).
	maxTOCSize = 0x1000
)

// ToC entry flags (toc.rs TocEntryFlags): how the section's bytes are compressed.
const (
	TOCCompressNone  uint32 = 0x1
	TOCCompressZstd  uint32 = 0x2
	TOCCompressLZ4   uint32 = 0x4
	tocCompressMask  uint32 = 0xf
	tocKnownFlagBits uint32 = 0xf
)

// TOCEntry names one section of a 2.2+ blob.
type TOCEntry struct {
	Name             string
	Flags            uint32      // TOCCompress* bits
	Digest           rafs.Digest // sha256 of the uncompressed content (see Verify for image.blob's quirk)
	CompressedOffset uint64      // where the section's stored bytes start in the blob file
	CompressedSize   uint64      // stored bytes
	UncompressedSize uint64
}

// Compressor returns the algorithm the section is stored with.
func (e *TOCEntry) Compressor() (rafs.Compressor, error) {
	switch e.Flags & tocCompressMask {
	case TOCCompressNone:
		return rafs.CompressNone, nil
	case TOCCompressZstd:
		return rafs.CompressZstd, nil
	case TOCCompressLZ4:
		return rafs.CompressLZ4Block, nil
	}
	return 0, rafs.Corruptf("ToC entry %q: flags %#x name no known compressor", e.Name, e.Flags)
}

// start returns where the section's stored bytes begin. nydus-image 2.2 recorded the end of the
// chunk data instead of its start as image.blob's offset (fixed upstream by "builder: fix invalid
// compressed offset in image.blob toc entry", 747edc95); the chunk data always starts the file.
func (e *TOCEntry) start() uint64 {
	if e.Name == NameBlobData && e.CompressedOffset == e.CompressedSize {
		return 0
	}
	return e.CompressedOffset
}

// tocFlags maps a compressor to ToC flags; the ToC cannot express gzip (toc.rs TryFrom).
func tocFlags(c rafs.Compressor) (uint32, error) {
	switch c {
	case rafs.CompressNone:
		return TOCCompressNone, nil
	case rafs.CompressZstd:
		return TOCCompressZstd, nil
	case rafs.CompressLZ4Block:
		return TOCCompressLZ4, nil
	}
	return 0, fmt.Errorf("ToC cannot describe a %v-compressed section", c)
}

// appendTOCEntry appends e's 128-byte encoding; reserved bytes are zero.
func appendTOCEntry(dst []byte, e *TOCEntry) []byte {
	var b [tocEntrySize]byte
	binary.LittleEndian.PutUint32(b[0:], e.Flags)
	copy(b[8:8+tocNameLen], e.Name)
	copy(b[24:56], e.Digest[:])
	binary.LittleEndian.PutUint64(b[56:], e.CompressedOffset)
	binary.LittleEndian.PutUint64(b[64:], e.CompressedSize)
	binary.LittleEndian.PutUint64(b[72:], e.UncompressedSize)
	return append(dst, b[:]...)
}

// decodeTOCEntry decodes one entry. The reserved fields are ignored: nydus-image before 2.3
// left stack garbage in them (toc.rs, "fix toc entry struct alignment").
func decodeTOCEntry(b []byte) (TOCEntry, error) {
	var e TOCEntry
	e.Flags = binary.LittleEndian.Uint32(b[0:])
	name := b[8 : 8+tocNameLen]
	if i := bytes.IndexByte(name, 0); i >= 0 {
		if bytes.ContainsFunc(name[i:], func(r rune) bool { return r != 0 }) {
			return e, rafs.Corruptf("ToC entry name %q has bytes after its NUL", name)
		}
		name = name[:i]
	}
	if !utf8.Valid(name) {
		return e, rafs.Corruptf("ToC entry name %q is not UTF-8", name)
	}
	e.Name = string(name)
	copy(e.Digest[:], b[24:56])
	e.CompressedOffset = binary.LittleEndian.Uint64(b[56:])
	e.CompressedSize = binary.LittleEndian.Uint64(b[64:])
	e.UncompressedSize = binary.LittleEndian.Uint64(b[72:])
	if e.Flags&^tocKnownFlagBits != 0 {
		return e, rafs.Corruptf("ToC entry %q: unknown flags %#x", e.Name, e.Flags)
	}
	if _, err := e.Compressor(); err != nil {
		return e, err
	}
	return e, nil
}

// rawSized names the sections whose stored size equals their content size when stored raw;
// image.blob is the exception (its uncompressed size is the uncompressed view's).
var rawSized = map[string]bool{NameBootstrap: true, NameMeta: true, NameMetaHeader: true, NameDigest: true}

// parseTOC decodes and bounds-checks the ToC whose entries occupy tocData, which starts at file
// offset tocOff. Every section must lie before the ToC, names must be unique, and sections stored
// raw must have equal sizes (toc.rs extract_from_blob).
func parseTOC(tocData []byte, tocOff uint64) ([]TOCEntry, error) {
	if len(tocData) == 0 || len(tocData)%tocEntrySize != 0 {
		return nil, rafs.Corruptf("ToC size %d is not a positive multiple of %d", len(tocData), tocEntrySize)
	}
	entries := make([]TOCEntry, 0, len(tocData)/tocEntrySize)
	seen := make(map[string]bool)
	for off := 0; off < len(tocData); off += tocEntrySize {
		e, err := decodeTOCEntry(tocData[off : off+tocEntrySize])
		if err != nil {
			return nil, err
		}
		if seen[e.Name] {
			return nil, rafs.Corruptf("ToC names %q twice", e.Name)
		}
		seen[e.Name] = true
		start := e.start()
		end := start + e.CompressedSize
		if end < start || end > tocOff {
			return nil, rafs.Corruptf("ToC entry %q: [%d, +%d) runs past the ToC at %d",
				e.Name, start, e.CompressedSize, tocOff)
		}
		if rawSized[e.Name] && e.Flags&tocCompressMask == TOCCompressNone && e.CompressedSize != e.UncompressedSize {
			return nil, rafs.Corruptf("ToC entry %q: stored raw but sizes differ (%d, %d)",
				e.Name, e.CompressedSize, e.UncompressedSize)
		}
		entries = append(entries, e)
	}
	return entries, nil
}
