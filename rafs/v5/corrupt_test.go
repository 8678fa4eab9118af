package v5

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/dfnydus/dfnydus/rafs"
)

// Offsets of header fields inside an inode record (RafsV5Inode).
const (
	fDigest      = 0
	fParent      = 32
	fIno         = 40
	fUID         = 48
	fMode        = 60
	fSize        = 64
	fFlags       = 80
	fNlink       = 88
	fChildIndex  = 92
	fChildCount  = 96
	fNameSize    = 100
	fSymlinkSize = 102
	fMtimeNsec   = 108
	fMtime       = 112
)

// Inode numbers of some records of the sha256 fixture.
const (
	inoRoot        = 1
	inoHardlinkDir = 2  // /hardlink-test
	inoFoo         = 5  // /hardlink-test/foo, first of three links
	inoFooLink     = 6  // /hardlink-test/test.sh
	inoFooLink2    = 9  // /normal-file-test/test.sh
	inoBusybox     = 7  // /normal-file-test/busybox
	inoHolefiles   = 8  // /normal-file-test/holefiles
	inoChsum       = 38 // /normal-file-test/holefiles/chsum: 441 bytes, one chunk, name "chsum"
	inoHeadHole1   = 39 // 3 chunks, 11-byte name
	inoBar         = 48 // /symlink-test/bar, first symlink
	inoRoot2       = 53 // /symlink-test/root-2 -> /foobar
	inoLast        = 54 // /symlink-test/test.sh, the last record in the file
)

type mutation func(b []byte)

func put16(off func(b []byte) int, v uint16) mutation {
	return func(b []byte) { le.PutUint16(b[off(b):], v) }
}
func put32(off func(b []byte) int, v uint32) mutation {
	return func(b []byte) { le.PutUint32(b[off(b):], v) }
}
func put64(off func(b []byte) int, v uint64) mutation {
	return func(b []byte) { le.PutUint64(b[off(b):], v) }
}
func set(off func(b []byte) int, s string) mutation {
	return func(b []byte) { copy(b[off(b):], s) }
}
func xor32(off func(b []byte) int, v uint32) mutation {
	return func(b []byte) { le.PutUint32(b[off(b):], le.Uint32(b[off(b):])^v) }
}
func both(ms ...mutation) mutation {
	return func(b []byte) {
		for _, m := range ms {
			m(b)
		}
	}
}

// at is a fixed offset; rec is a field of inode ino's record; chunk is a field of its i-th chunk;
// tableEntry is inode ino's slot in the inode table.
func at(off int) func([]byte) int { return func([]byte) int { return off } }
func rec(ino uint32, field int) func([]byte) int {
	return func(b []byte) int { return recordOffset(b, ino) + field }
}
func chunk(ino uint32, nameLen, i, field int) func([]byte) int {
	return func(b []byte) int {
		return recordOffset(b, ino) + inodeHeaderSize + int(align8(uint64(nameLen))) + i*chunkRecordSize + field
	}
}
func tableEntry(ino uint32) func([]byte) int {
	return func(b []byte) int { return int(le.Uint64(b[32:])) + 4*int(ino-1) }
}

// TestDecodeCorrupt: each mutation of a real bootstrap is reported as corrupt data by the check
// meant to catch it, never a panic.
func TestDecodeCorrupt(t *testing.T) {
	fixture := readFile(t, fixtureSHA256)
	golden := readFile(t, "testdata/golden/everything.boot")
	prefetchEntry := func(i int) func([]byte) int {
		return func(b []byte) int { return int(le.Uint64(b[40:])) + 4*i }
	}
	// In the golden image, inode 16 is /etc/passwd with two xattrs: "security.selinux" (a 44-byte
	// pair) then "user.b" = "2" (an 8-byte pair).
	const inoPasswd = 16
	xattrs := func(b []byte) int { return recordOffset(b, inoPasswd) + inodeHeaderSize + 8 }

	tests := []struct {
		name   string
		base   []byte
		mutate mutation
		want   string
	}{
		// Superblock.
		{"bad magic", fixture, set(at(0), "XXXX"), "magic"},
		{"version 4", fixture, put32(at(4), 0x400), "version"},
		{"version 6", fixture, put32(at(4), 0x600), "version"},
		{"superblock size", fixture, put32(at(8), 4096), "superblock size"},
		{"chunk size not a power of two", fixture, put32(at(12), 0x100001), "chunk size"},
		{"chunk size below 4 KiB", fixture, put32(at(12), 0x800), "chunk size"},
		{"unknown superblock flag", fixture, put64(at(16), 0x9|0x400), "unknown bits"},
		{"two compressors", fixture, put64(at(16), 0x9|0x2), "2 compressors"},
		{"no digester", fixture, put64(at(16), 0x1), "0 digesters"},
		{"inode count beyond the table", fixture, put64(at(24), 55), "counts 55 inodes"},
		{"empty inode table", fixture, put32(at(56), 0), "no root"},
		{"huge inode table", fixture, put32(at(56), 0xffff_ffff), "more than"},
		{"inode table beyond the end", fixture, put64(at(32), uint64(len(fixture)-8)), "outside the metadata area"},
		{"inode table inside the superblock", fixture, put64(at(32), 128), "outside the metadata area"},
		{"blob table beyond the end", fixture, put32(at(64), 0xffff_ffff), "blob table"},
		{"blob table over the inode table", fixture, put64(at(48), 0x2000), "overlaps"},
		{"huge extended blob table", fixture, put32(at(68), 0xffff_ffff), "extended blob table"},
		{"extended blob table for two blobs", fixture, put32(at(68), 2), "2 entries for 1 blobs"},
		{"extended table for a missing blob", fixture, put32(at(64), 0), "1 entries for 0 blobs"},
		{"empty blob id", fixture, set(at(0x20e0), "\x00"), "empty or non-UTF-8 blob id"},
		{"blob id not UTF-8", fixture, set(at(0x20e0), "\xff"), "non-UTF-8"},
		{"huge prefetch table", fixture, put32(at(60), 0xffff_ffff), "prefetch table"},
		{"prefetch table over the blob table", fixture, put32(at(60), 2), "overlaps"},
		{"prefetch entry 0", golden, put32(prefetchEntry(1), 0), "names inode 0"},
		{"prefetch entry beyond the table", golden, put32(prefetchEntry(0), 18), "names inode 18"},

		// Inode table.
		{"entry beyond the end", fixture, put32(tableEntry(10), 0xffff_ffff), "inode table entry 10 points at"},
		{"entry into the superblock", fixture, put32(tableEntry(10), 8), "inode table entry 10 points at"},
		{"two entries share a record", fixture, put32(tableEntry(11), uint32(recordOffset(fixture, 10)>>3)), "overlaps"},
		{"record over the blob table", fixture, put32(tableEntry(inoLast), 0x20d8>>3), "overlaps"},

		// Tree structure.
		{"root is a device", fixture, put32(rec(inoRoot, fMode), 0o20644), "root is not a directory"},
		{"root names a parent", fixture, put64(rec(inoRoot, fParent), 3), "want 1 and 0"},
		{"child range beyond the table", fixture, put32(rec(inoRoot, fChildCount), 100), "outside (1, 54]"},
		{"huge child count", fixture, put32(rec(inoBusybox, fChildCount), 0xffff_ffff), "outside (7, 54]"},
		{"directory lists itself", fixture, put32(rec(inoRoot, fChildIndex), 1), "outside (1, 54]"},
		{"cyclic directory", fixture, both(put32(rec(inoBusybox, fChildIndex), 3), put32(rec(inoBusybox, fChildCount), 1)), "outside (7, 54]"},
		{"child listed by two directories", fixture, put32(rec(inoHolefiles, fChildIndex), 10), "listed by directories 7 and 8"},
		{"child names another parent", fixture, put64(rec(inoFoo, fParent), 3), "names parent 3"},
		{"unreachable inode", fixture, put32(rec(inoRoot, fChildCount), 2), "no directory lists it"},
		{"children out of order", fixture, set(rec(inoHardlinkDir, inodeHeaderSize), "z"), "strictly increasing name order"},
		{"duplicate names", fixture, set(rec(inoBar, inodeHeaderSize), "foo"), "strictly increasing name order"},

		// Names and symlinks.
		{"name size beyond the data", fixture, put16(rec(inoLast, fNameSize), 0xffff), "runs past the end"},
		{"empty name", fixture, put16(rec(inoHardlinkDir, fNameSize), 0), "empty name"},
		{"name with a slash", fixture, set(rec(inoHardlinkDir, inodeHeaderSize+4), "/"), "contains '/'"},
		{"dot-dot name", fixture, both(put16(rec(inoLast, fNameSize), 2), set(rec(inoLast, inodeHeaderSize), "..")), "reserved"},
		{"symlink without a target", fixture, put16(rec(inoBar, fSymlinkSize), 0), "0-byte symlink target"},
		{"symlink target with NUL", fixture, set(rec(inoBar, inodeHeaderSize+8+2), "\x00"), "contains NUL"},

		// Inode attributes.
		{"mode without a type", fixture, put32(rec(inoChsum, fMode), 0o644), "no valid file type"},
		{"mode with high bits", fixture, xor32(rec(inoChsum, fMode), 1<<20), "beyond S_IFMT"},
		{"unknown inode flags", fixture, put64(rec(inoChsum, fFlags), 0x10), "unknown inode flags"},
		{"link count zero", fixture, put32(rec(inoChsum, fNlink), 0), "link count 0"},
		{"nanoseconds out of range", fixture, put32(rec(inoChsum, fMtimeNsec), 1_000_000_000), "nanoseconds"},
		{"i_ino beyond the table", fixture, put64(rec(inoChsum, fIno), 1000), "outside the inode table"},
		{"i_ino zero", fixture, put64(rec(inoChsum, fIno), 0), "outside the inode table"},
		{"HAS_HOLE on a directory", fixture, put64(rec(inoHardlinkDir, fFlags), 8), "HAS_HOLE"},
		{"child count on a symlink", fixture, put32(rec(inoBar, fChildCount), 1), "child count 1"},

		// Hard links.
		{"symlink repeats an inode number", fixture, put64(rec(inoBar, fIno), inoFoo), "only a regular file"},
		{"hard link to a later inode", fixture, put64(rec(inoFoo, fIno), inoFooLink), "only a regular file"},
		{"hard link of another size", fixture, put64(rec(inoFooLink, fSize), 945), "size, chunks, digest or xattrs differ"},
		{"hard link's first record has another digest", fixture, xor32(rec(inoFoo, fDigest), 1), "size, chunks, digest or xattrs differ"},
		{"hard link to a hard link", fixture, put64(rec(inoFooLink2, fIno), inoFooLink), "size, chunks, digest or xattrs differ"},

		// Xattrs.
		{"xattr flag on the last record", fixture, put64(rec(inoLast, fFlags), inodeFlagSymlink|inodeFlagXattr), "xattr table header"},
		{"xattr table size beyond the data", fixture, put64(rec(inoRoot2, fFlags), inodeFlagSymlink|inodeFlagXattr), "runs past the end"},
		{"xattr pair overruns its table", golden, put32(func(b []byte) int { return xattrs(b) + 8 }, 200), "overruns"},
		{"xattr pair without NUL", golden, set(func(b []byte) int { return xattrs(b) + 8 + 4 + 44 + 4 + 6 }, "x"), "no NUL"},
		{"xattr outside the namespaces", golden, set(func(b []byte) int { return xattrs(b) + 8 + 4 + 44 + 4 }, "uxer"), "prefixes"},
		{"xattr table with stray bytes", golden, put64(xattrs, 62), "stray bytes"},

		// Chunks.
		{"chunk in a missing blob", fixture, put32(chunk(inoChsum, 5, 0, 32), 1), "names blob 1 of 1"},
		{"unknown chunk flags", fixture, put32(chunk(inoChsum, 5, 0, 36), 0x80), "unknown flags"},
		{"chunk with compressed size 0", fixture, put32(chunk(inoChsum, 5, 0, 40), 0), "compressed size 0"},
		{"chunk of zero bytes", fixture, put32(chunk(inoChsum, 5, 0, 44), 0), "holds 0 bytes"},
		{"chunk larger than the chunk size", fixture, put32(chunk(inoChsum, 5, 0, 44), 0x100001), "holds 1048577 bytes"},
		{"chunk past the end of the file", fixture, put32(chunk(inoChsum, 5, 0, 44), 4096), "beyond the file size"},
		{"chunk offset overflows", fixture, put64(chunk(inoChsum, 5, 0, 48), ^uint64(0)), "overflow"},
		{"chunks out of order", fixture, put64(chunk(inoHeadHole1, 11, 2, 64), 0), "overlaps or precedes"},
		{"huge chunk count", fixture, put32(rec(inoChsum, fChildCount), 0xffff_ffff), "runs past the end"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := bytes.Clone(tt.base)
			tt.mutate(data)
			if bytes.Equal(data, tt.base) {
				t.Fatal("mutation changed nothing")
			}
			img, err := Decode(data)
			if err == nil {
				t.Fatalf("Decode succeeded (%d inodes at root)", len(img.Root.Children))
			}
			if !errors.Is(err, rafs.ErrCorrupt) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Decode = %v; want ErrCorrupt mentioning %q", err, tt.want)
			}
		})
	}
}

// TestDecodeTruncated: a bootstrap cut anywhere is corrupt (every record is needed).
func TestDecodeTruncated(t *testing.T) {
	for _, base := range [][]byte{readFile(t, fixtureSHA256), readFile(t, "testdata/golden/everything.boot")} {
		for n := 0; n < len(base); n++ {
			if n%8 != 0 && n > 64 && n < len(base)-64 && n%97 != 0 {
				continue // every aligned length, and a sample of unaligned ones
			}
			_, err := Decode(base[:n])
			if !errors.Is(err, rafs.ErrCorrupt) {
				t.Fatalf("Decode(first %d of %d bytes) = %v, want ErrCorrupt", n, len(base), err)
			}
		}
	}
}

func TestIsV5(t *testing.T) {
	fixture := readFile(t, fixtureSHA256)
	tests := []struct {
		name string
		data []byte
		want bool
	}{
		{"fixture", fixture, true},
		{"just the magic and version", fixture[:8], true},
		{"too short", fixture[:7], false},
		{"empty", nil, false},
		{"v6 bootstrap (EROFS magic at 1024)", append(make([]byte, 1024), 0xe2, 0xe1, 0xf5, 0xe0), false},
		{"version 4", append([]byte("SFAR\x00\x04\x00\x00"), fixture[8:]...), false},
	}
	for _, tt := range tests {
		if got := IsV5(tt.data); got != tt.want {
			t.Errorf("IsV5(%s) = %v, want %v", tt.name, got, tt.want)
		}
	}
}
