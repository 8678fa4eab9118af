package v5

import "github.com/dfnydus/dfnydus/rafs"

// Truncated returns a *rafs.TruncatedError when data starts like a RAFS v5 bootstrap (its magic
// and version) but ends before what its superblock places in it, and nil otherwise, including for
// data that is no v5 bootstrap at all. Only a superblock that lays its tables out as nydus-image
// does (builder/src/core/v5.rs: the inode, prefetch, blob and extended blob tables one after the
// other from byte 8192, inode records after them) is believed: an offset that points elsewhere
// is damage for the decoder to name, not a cut. Once its inode table is there, the record the
// table places last (a 128-byte header and a name padded to 8 bytes at least) bounds the
// bootstrap from below.
func Truncated(data []byte) error {
	if !IsV5(data) {
		return nil
	}
	n := uint64(len(data))
	want, reason := uint64(superblockSize), "the end of its superblock"
	if n >= 80 { // the superblock's fields below
		var sb superblock
		sb.unmarshal(data)
		tables := []struct {
			name      string
			off, size uint64
		}{
			{"inode table", sb.inodeTableOffset, 4 * uint64(sb.inodeTableEntries)},
			{"prefetch table", sb.prefetchTableOffset, 4 * uint64(sb.prefetchEntries)},
			{"blob table", sb.blobTableOffset, uint64(sb.blobTableSize)},
			{"extended blob table", sb.extBlobTableOffset, extBlobEntrySize * uint64(sb.extBlobEntries)},
		}
		end := uint64(superblockSize)
		for _, t := range tables {
			if t.size == 0 {
				continue
			}
			if t.off != end || t.size > maxMetadataSize {
				return nil
			}
			end = t.off + (t.size+7)&^7
			want, reason = end, "the end of its "+t.name
		}
		itab, isize := sb.inodeTableOffset, 4*uint64(sb.inodeTableEntries)
		if isize > 0 && itab+isize <= n {
			var last uint64
			for i := uint64(0); i < isize; i += 4 {
				last = max(last, uint64(le.Uint32(data[itab+i:]))<<3)
			}
			if last < end {
				return nil // a record among the tables: damage
			}
			// Only its header and shortest name: the sizes in a header that is there may be
			// damaged, which the decoder names.
			if rec := last + inodeHeaderSize + 8; rec > want {
				want, reason = rec, "the end of the inode record its inode table places last"
			}
		}
	}
	if want <= n || want > maxMetadataSize {
		return nil
	}
	return &rafs.TruncatedError{Version: 5, Size: n, Want: want, Reason: reason}
}
