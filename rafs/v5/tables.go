package v5

import (
	"bytes"
	"fmt"
	"math/bits"
	"slices"
	"unicode/utf8"

	"github.com/dfnydus/dfnydus/rafs"
)

// region is a named byte range of a bootstrap (a table, or the record of inode ino); no two
// regions may overlap.
type region struct {
	name       string
	ino        uint32
	start, end uint64
}

func (r region) String() string {
	if r.ino != 0 {
		return fmt.Sprintf("record of inode %d", r.ino)
	}
	return r.name
}

// tableRegion checks that a table of size bytes at off lies inside data after the superblock.
func tableRegion(name string, off, size uint64, dataLen int) (region, error) {
	end := off + size
	if end < off || off < superblockSize || end > uint64(dataLen) {
		return region{}, rafs.Corruptf("%s [%d, +%d) lies outside the metadata area [%d, %d)", name, off, size, superblockSize, dataLen)
	}
	return region{name: name, start: off, end: end}, nil
}

// checkOverlaps fails if any two non-empty regions share a byte.
func checkOverlaps(rs []region) error {
	slices.SortFunc(rs, func(a, b region) int {
		if a.start != b.start {
			if a.start < b.start {
				return -1
			}
			return 1
		}
		return 0
	})
	for i := 1; i < len(rs); i++ {
		if rs[i].start < rs[i-1].end {
			return rafs.Corruptf("%s [%d, %d) overlaps %s [%d, %d)", rs[i], rs[i].start, rs[i].end, rs[i-1], rs[i-1].start, rs[i-1].end)
		}
	}
	return nil
}

// parseSuperblock reads and validates the superblock (RafsV5SuperBlock::validate) and returns it
// with the regions of its tables.
func parseSuperblock(data []byte) (superblock, []region, error) {
	var sb superblock
	if len(data) <= superblockSize {
		return sb, nil, rafs.Corruptf("bootstrap of %d bytes has nothing after its %d-byte superblock", len(data), superblockSize)
	}
	if uint64(len(data)) > maxMetadataSize || len(data)%8 != 0 {
		return sb, nil, rafs.Corruptf("bootstrap size %d is not a multiple of 8 up to %d", len(data), maxMetadataSize)
	}
	sb.unmarshal(data)
	switch {
	case sb.magic != superMagic:
		return sb, nil, rafs.Corruptf("superblock magic %#x, want %#x", sb.magic, superMagic)
	case sb.version != superVersion:
		return sb, nil, rafs.Corruptf("superblock version %#x, want %#x", sb.version, superVersion)
	case sb.sbSize != superblockSize:
		return sb, nil, rafs.Corruptf("superblock size %d, want %d", sb.sbSize, superblockSize)
	case !rafs.ValidChunkSize(uint64(sb.blockSize)):
		return sb, nil, rafs.Corruptf("chunk size %#x is not a power of two in [%#x, %#x]", sb.blockSize, rafs.MinChunkSize, rafs.MaxChunkSize)
	case sb.flags&^knownSuperFlags != 0:
		return sb, nil, rafs.Corruptf("superblock flags %#x have unknown bits %#x", sb.flags, sb.flags&^uint64(knownSuperFlags))
	case bits.OnesCount64(sb.flags&compressionFlags) != 1:
		return sb, nil, rafs.Corruptf("superblock flags %#x name %d compressors, want 1", sb.flags, bits.OnesCount64(sb.flags&compressionFlags))
	case bits.OnesCount64(sb.flags&hashFlags) != 1:
		return sb, nil, rafs.Corruptf("superblock flags %#x name %d digesters, want 1", sb.flags, bits.OnesCount64(sb.flags&hashFlags))
	case sb.inodeTableEntries == 0:
		return sb, nil, rafs.Corruptf("inode table is empty: no root inode")
	case sb.inodesCount > uint64(sb.inodeTableEntries):
		return sb, nil, rafs.Corruptf("superblock counts %d inodes but the inode table has %d entries", sb.inodesCount, sb.inodeTableEntries)
	}
	// Every inode table entry needs its own record of at least a header and an 8-byte name.
	if uint64(sb.inodeTableEntries) > uint64(len(data)-superblockSize)/(4+inodeHeaderSize+8) {
		return sb, nil, rafs.Corruptf("inode table claims %d entries, more than %d bytes of metadata can hold", sb.inodeTableEntries, len(data)-superblockSize)
	}

	var regions []region
	add := func(name string, off, size uint64) error {
		if size == 0 {
			return nil
		}
		r, err := tableRegion(name, off, size, len(data))
		if err == nil {
			regions = append(regions, r)
		}
		return err
	}
	if err := add("inode table", sb.inodeTableOffset, 4*uint64(sb.inodeTableEntries)); err != nil {
		return sb, nil, err
	}
	if err := add("prefetch table", sb.prefetchTableOffset, 4*uint64(sb.prefetchEntries)); err != nil {
		return sb, nil, err
	}
	if err := add("blob table", sb.blobTableOffset, uint64(sb.blobTableSize)); err != nil {
		return sb, nil, err
	}
	if err := add("extended blob table", sb.extBlobTableOffset, extBlobEntrySize*uint64(sb.extBlobEntries)); err != nil {
		return sb, nil, err
	}
	regions = append(regions, region{name: "superblock", start: 0, end: superblockSize})
	if err := checkOverlaps(slices.Clone(regions)); err != nil {
		return sb, nil, err
	}
	return sb, regions, nil
}

// decodeBlobs reads the blob table and the extended blob table (RafsV5BlobTable::load). Blob table
// entries are u32 readahead offset, u32 readahead size and the blob id, separated by '\0'; the table
// is zero-padded to 8 bytes.
func decodeBlobs(data []byte, sb *superblock, comp rafs.Compressor, dig rafs.Digester) ([]*rafs.Blob, error) {
	var blobs []*rafs.Blob
	var buf []byte
	if sb.blobTableSize > 0 { // parseSuperblock checked the range of a non-empty table
		buf = data[sb.blobTableOffset : sb.blobTableOffset+uint64(sb.blobTableSize)]
	}
	for len(buf) > 8 {
		b := &rafs.Blob{
			ChunkSize:       sb.blockSize,
			Compressor:      comp,
			Digester:        dig,
			Features:        rafs.BlobFeatureV5NoExtBlobTable,
			ReadaheadOffset: le.Uint32(buf[0:]),
			ReadaheadSize:   le.Uint32(buf[4:]),
		}
		id := buf[8:]
		if i := bytes.IndexByte(id, 0); i >= 0 {
			id, buf = id[:i], id[i+1:]
		} else {
			buf = nil
		}
		if len(id) == 0 || !utf8.Valid(id) {
			return nil, rafs.Corruptf("blob table entry %d has an empty or non-UTF-8 blob id %q", len(blobs), id)
		}
		b.ID = string(id)
		blobs = append(blobs, b)
	}
	if !allZero(buf) {
		return nil, rafs.Corruptf("blob table ends with %d bytes that are neither an entry nor zero padding", len(buf))
	}

	if sb.extBlobEntries == 0 {
		return blobs, nil
	}
	if int64(sb.extBlobEntries) != int64(len(blobs)) {
		return nil, rafs.Corruptf("extended blob table has %d entries for %d blobs", sb.extBlobEntries, len(blobs))
	}
	ext := data[sb.extBlobTableOffset:]
	for i, b := range blobs {
		e := ext[i*extBlobEntrySize:]
		b.ChunkCount = le.Uint32(e[0:])
		b.Features = le.Uint32(e[4:])
		b.UncompressedSize = le.Uint64(e[8:])
		b.CompressedSize = le.Uint64(e[16:])
	}
	return blobs, nil
}

// encodeBlobTable returns the blob table bytes, padded to 8.
func encodeBlobTable(blobs []*rafs.Blob) []byte {
	var out []byte
	for i, b := range blobs {
		if i > 0 {
			out = append(out, 0)
		}
		out = le.AppendUint32(out, b.ReadaheadOffset)
		out = le.AppendUint32(out, b.ReadaheadSize)
		out = append(out, b.ID...)
	}
	return append(out, make([]byte, align8(uint64(len(out)))-uint64(len(out)))...)
}

// needExtBlobTable reports whether the extended blob table must be written: always, unless every
// blob is marked as coming from an image without one and carries nothing it would hold.
func needExtBlobTable(blobs []*rafs.Blob) bool {
	for _, b := range blobs {
		if b.Features != rafs.BlobFeatureV5NoExtBlobTable || b.ChunkCount != 0 || b.CompressedSize != 0 || b.UncompressedSize != 0 {
			return true
		}
	}
	return false
}

// checkBlob checks that b can be written to a v5 blob table of an image with chunk size cs.
func checkBlob(i int, b *rafs.Blob, cs uint32) error {
	switch {
	case b == nil:
		return fmt.Errorf("blob %d is nil", i)
	case b.ID == "" || bytes.IndexByte([]byte(b.ID), 0) >= 0 || !utf8.ValidString(b.ID):
		return fmt.Errorf("blob %d id %q is empty, contains NUL or is not UTF-8", i, b.ID)
	case b.ChunkSize != 0 && b.ChunkSize != cs:
		return fmt.Errorf("blob %d chunk size %#x differs from the image's %#x; RAFS v5 has one chunk size", i, b.ChunkSize, cs)
	}
	return nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
