package v6

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/dfnydus/dfnydus/rafs"
)

// corruptBase is a small valid bootstrap whose structures the corruption cases patch:
//
//	/dir/file   regular file, two chunks      /dir/sub/   empty directory
//	/link       4000-byte symlink (inline)    /plain1, /plain2   4095-byte symlinks (FLAT_PLAIN)
//	/x          file with xattrs               prefetch: /dir/file
func corruptBase(t testing.TB) []byte {
	t.Helper()
	m := newModel(0x100000, testBlob(0))
	f := m.add("/dir/file", fileInode(0o644))
	f.Size, f.Chunks = 0x180000, []rafs.Chunk{chunk(0, 0, 0, 0, 0x100000), chunk(0, 1, 0x100000, 0x100000, 0x80000)}
	m.add("/dir/sub", dirInode(0o755))
	m.add("/link", symlinkInode(strings.Repeat("l", 4000)))
	m.add("/plain1", symlinkInode(strings.Repeat("p", 4095)))
	m.add("/plain2", symlinkInode(strings.Repeat("q", 4095)))
	m.add("/x", fileInode(0o644)).Xattrs = []rafs.Xattr{{Name: "user.key", Value: []byte("value")}}
	m.img.Prefetch = []string{"/dir/file"}
	data, err := Encode(m.img)
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	return data
}

// locate returns the nid and byte offset of the inode at path p, walking the directories with the
// decoder's own primitives.
func locate(t testing.TB, data []byte, p string) (nid, off uint64) {
	t.Helper()
	d, err := newDecoder(data)
	if err != nil {
		t.Fatalf("newDecoder: %v", err)
	}
	nid = uint64(d.sb.rootNid)
	for _, part := range strings.Split(strings.Trim(p, "/"), "/") {
		if part == "" {
			continue
		}
		in, err := d.readInode(nid)
		if err != nil {
			t.Fatal(err)
		}
		ents, err := d.readDir(nid, &in)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, e := range ents {
			if e.name == part {
				nid, found = e.nid, true
			}
		}
		if !found {
			t.Fatalf("%s: no %q", p, part)
		}
	}
	return nid, d.metaBase + nid*slotSize
}

// direntOf returns the offset of the dirent named name in directory dir (whose dirents are inline
// in these small directories).
func direntOf(t testing.TB, data []byte, dir, name string) uint64 {
	t.Helper()
	_, off := locate(t, data, dir)
	tail := off + extInodeSize
	count := uint64(le.Uint16(data[tail+8:])) / direntSize
	for i := uint64(0); i < count; i++ {
		start := uint64(le.Uint16(data[tail+i*direntSize+8:]))
		if strings.HasPrefix(string(data[tail+start:]), name) {
			return tail + i*direntSize
		}
	}
	t.Fatalf("%s has no dirent %q", dir, name)
	return 0
}

func TestDecodeRejectsCorruption(t *testing.T) {
	base := corruptBase(t)
	ext := func(b []byte) *extSuperBlock {
		var e extSuperBlock
		e.unmarshal(b[extSuperOffset:])
		return &e
	}
	put16 := func(b []byte, off uint64, v uint16) { le.PutUint16(b[off:], v) }
	put32 := func(b []byte, off uint64, v uint32) { le.PutUint32(b[off:], v) }
	put64 := func(b []byte, off uint64, v uint64) { le.PutUint64(b[off:], v) }
	const sb, es, blob = superOffset, extSuperOffset, blockSize // blob table at 4096

	tests := []struct {
		name   string
		mutate func(t *testing.T, b []byte) []byte
	}{
		{"empty input", func(_ *testing.T, b []byte) []byte { return b[:0] }},
		{"truncated inside the superblock", func(_ *testing.T, b []byte) []byte { return b[:sb+100] }},
		{"truncated to the first block", func(_ *testing.T, b []byte) []byte { return b[:blockSize] }},
		{"truncated chunk table", func(_ *testing.T, b []byte) []byte { return b[:len(b)-blockSize] }},
		{"truncated to half", func(_ *testing.T, b []byte) []byte { return b[:len(b)/2/blockSize*blockSize] }},
		{"length not block aligned", func(_ *testing.T, b []byte) []byte { return b[:len(b)-1] }},
		{"bad magic", func(_ *testing.T, b []byte) []byte { b[sb] ^= 0xff; return b }},
		{"RAFS_V6 feature missing", func(_ *testing.T, b []byte) []byte { put32(b, sb+8, 0); return b }},
		{"nonzero checksum", func(_ *testing.T, b []byte) []byte { put32(b, sb+4, 1); return b }},
		{"block size bits 13", func(_ *testing.T, b []byte) []byte { b[sb+12] = 13; return b }},
		{"extended superblock slots", func(_ *testing.T, b []byte) []byte { b[sb+13] = 1; return b }},
		{"zero inode count", func(_ *testing.T, b []byte) []byte { put64(b, sb+16, 0); return b }},
		{"shared xattr area", func(_ *testing.T, b []byte) []byte { put32(b, sb+44, 3); return b }},
		{"unknown incompatible feature", func(_ *testing.T, b []byte) []byte { put32(b, sb+80, 0x1c); return b }},
		{"device table slot offset", func(_ *testing.T, b []byte) []byte { put16(b, sb+88, 12); return b }},
		{"absurd device count", func(_ *testing.T, b []byte) []byte { put16(b, sb+86, 0xffff); return b }},
		{"device count differs from blob table", func(_ *testing.T, b []byte) []byte { put16(b, sb+86, 2); return b }},
		{"device slot names another blob", func(_ *testing.T, b []byte) []byte { b[devTableOffset] ^= 1; return b }},
		{"meta area beyond the bootstrap", func(_ *testing.T, b []byte) []byte { put32(b, sb+40, 0xffffff); return b }},
		{"no compressor flag", func(_ *testing.T, b []byte) []byte { put64(b, es, rafs.FlagHashBlake3); return b }},
		{"two compressor flags", func(_ *testing.T, b []byte) []byte {
			put64(b, es, rafs.FlagHashBlake3|rafs.FlagCompressZstd|rafs.FlagCompressGzip)
			return b
		}},
		{"two digester flags", func(_ *testing.T, b []byte) []byte {
			put64(b, es, rafs.FlagHashBlake3|rafs.FlagHashSHA256|rafs.FlagCompressZstd)
			return b
		}},
		{"chunk size not a power of two", func(_ *testing.T, b []byte) []byte { put32(b, es+20, 0x100001); return b }},
		{"chunk size too small", func(_ *testing.T, b []byte) []byte { put32(b, es+20, 0x800); return b }},
		{"blob table not block aligned", func(_ *testing.T, b []byte) []byte { put64(b, es+8, blockSize+256); return b }},
		{"blob table inside the superblock", func(_ *testing.T, b []byte) []byte { put64(b, es+8, 0); return b }},
		{"blob table beyond the bootstrap", func(_ *testing.T, b []byte) []byte { put64(b, es+8, 1<<62); return b }},
		{"absurd blob count", func(_ *testing.T, b []byte) []byte { put32(b, es+16, 0xffffff00); return b }},
		{"blob table size not a multiple of entries", func(_ *testing.T, b []byte) []byte { put32(b, es+16, 300); return b }},
		{"blob entry index mismatch", func(_ *testing.T, b []byte) []byte { put32(b, blob+beBlobIndex, 5); return b }},
		{"blob with absurd chunk count", func(_ *testing.T, b []byte) []byte { put32(b, blob+beChunkCount, 1<<25); return b }},
		{"blob with an empty id", func(_ *testing.T, b []byte) []byte { b[blob] = 0; b[devTableOffset] = 0; return b }},
		{"blob with unknown compressor", func(_ *testing.T, b []byte) []byte { put32(b, blob+beCompressor, 9); return b }},
		{"blob with unknown digester", func(_ *testing.T, b []byte) []byte { put32(b, blob+beDigester, 2); return b }},
		{"blob with invalid chunk size", func(_ *testing.T, b []byte) []byte { put32(b, blob+beChunkSize, 12345); return b }},
		{"blob too big", func(_ *testing.T, b []byte) []byte { put64(b, blob+beUncompSize, 1<<50); return b }},
		{"blob chunk-info range wraps", func(_ *testing.T, b []byte) []byte {
			put64(b, blob+beCIOffset, 1<<63)
			put64(b, blob+beCICompSize, 1<<63)
			put64(b, blob+beCIUncompSize, 1<<63)
			return b
		}},
		{"chunk table size not a multiple of records", func(_ *testing.T, b []byte) []byte {
			put64(b, es+32, ext(b).chunkTableSize+1)
			return b
		}},
		{"chunk table beyond the bootstrap", func(_ *testing.T, b []byte) []byte { put64(b, es+24, 1<<40); return b }},
		{"chunk table offset wraps", func(_ *testing.T, b []byte) []byte {
			put64(b, es+24, ^uint64(0)-4095)
			return b
		}},
		{"prefetch table beyond the bootstrap", func(_ *testing.T, b []byte) []byte { put64(b, es+40, 1<<40); return b }},
		{"prefetch entry names an unreachable nid", func(_ *testing.T, b []byte) []byte {
			put32(b, ext(b).prefetchTableOffset, 3)
			return b
		}},
		{"root nid beyond the meta area", func(_ *testing.T, b []byte) []byte { put16(b, sb+14, 0xffff); return b }},
		{"root is not a directory", func(t *testing.T, b []byte) []byte {
			nid, _ := locate(t, b, "/x")
			put16(b, sb+14, uint16(nid))
			return b
		}},
		{"dirent nid beyond the meta area", func(t *testing.T, b []byte) []byte {
			put64(b, direntOf(t, b, "/", "x"), 1<<40)
			return b
		}},
		{"dirent nid at the very end", func(t *testing.T, b []byte) []byte {
			d, _ := newDecoder(b)
			put64(b, direntOf(t, b, "/", "x"), (uint64(len(b))-d.metaBase)/slotSize)
			return b
		}},
		{"dirent name offset out of range", func(t *testing.T, b []byte) []byte {
			put16(b, direntOf(t, b, "/", "link")+8, 4000)
			return b
		}},
		{"first name offset not a dirent multiple", func(t *testing.T, b []byte) []byte {
			_, off := locate(t, b, "/")
			put16(b, off+extInodeSize+8, 13)
			return b
		}},
		{"first name offset zero", func(t *testing.T, b []byte) []byte {
			_, off := locate(t, b, "/")
			put16(b, off+extInodeSize+8, 0)
			return b
		}},
		{"dirent names not sorted", func(t *testing.T, b []byte) []byte {
			d := direntOf(t, b, "/", "dir")
			_, off := locate(t, b, "/")
			b[off+extInodeSize+uint64(le.Uint16(b[d+8:]))] = 'z'
			return b
		}},
		{"dirent name with a slash", func(t *testing.T, b []byte) []byte {
			d := direntOf(t, b, "/", "link")
			_, off := locate(t, b, "/")
			b[off+extInodeSize+uint64(le.Uint16(b[d+8:]))+1] = '/'
			return b
		}},
		{"directory cycle", func(t *testing.T, b []byte) []byte {
			root, _ := locate(t, b, "/")
			put64(b, direntOf(t, b, "/dir", "sub"), root)
			return b
		}},
		{"directory reached twice", func(t *testing.T, b []byte) []byte {
			dir, _ := locate(t, b, "/dir")
			put64(b, direntOf(t, b, "/", "x"), dir)
			return b
		}},
		{"chunk index beyond the chunk table", func(t *testing.T, b []byte) []byte {
			_, off := locate(t, b, "/dir/file")
			put16(b, off+extInodeSize, 0xffff)
			return b
		}},
		{"chunk block address without a record", func(t *testing.T, b []byte) []byte {
			_, off := locate(t, b, "/dir/file")
			put32(b, off+extInodeSize+4, 77)
			return b
		}},
		{"chunk device id zero", func(t *testing.T, b []byte) []byte {
			_, off := locate(t, b, "/dir/file")
			b[off+extInodeSize+2] = 0
			return b
		}},
		{"chunk device id beyond the blobs", func(t *testing.T, b []byte) []byte {
			_, off := locate(t, b, "/dir/file")
			b[off+extInodeSize+2] = 9
			return b
		}},
		{"chunk addresses beyond the bootstrap", func(t *testing.T, b []byte) []byte {
			_, off := locate(t, b, "/dir/file")
			put64(b, off+8, 1<<50)
			return b
		}},
		{"chunk format without 8-byte indexes", func(t *testing.T, b []byte) []byte {
			_, off := locate(t, b, "/dir/file")
			put32(b, off+16, 8)
			return b
		}},
		{"unknown inode format bits", func(t *testing.T, b []byte) []byte {
			_, off := locate(t, b, "/x")
			b[off] |= 0x10
			return b
		}},
		{"unknown file type", func(t *testing.T, b []byte) []byte {
			_, off := locate(t, b, "/x")
			put16(b, off+4, 0o644)
			return b
		}},
		{"chunk-based directory", func(t *testing.T, b []byte) []byte {
			_, off := locate(t, b, "/dir/sub")
			put16(b, off, formatExtended|layoutChunkBased<<1)
			return b
		}},
		{"xattr entry overruns its body", func(t *testing.T, b []byte) []byte {
			_, off := locate(t, b, "/x")
			b[off+extInodeSize+xattrHeaderSize] = 200
			return b
		}},
		{"xattr with unknown name index", func(t *testing.T, b []byte) []byte {
			_, off := locate(t, b, "/x")
			b[off+extInodeSize+xattrHeaderSize+1] = 9
			return b
		}},
		{"shared xattrs", func(t *testing.T, b []byte) []byte {
			_, off := locate(t, b, "/x")
			b[off+extInodeSize+4] = 1
			return b
		}},
		{"xattr body beyond the bootstrap", func(t *testing.T, b []byte) []byte {
			d, _ := newDecoder(b)
			nid := (uint64(len(b))-d.metaBase)/slotSize - 2 // a 64-byte inode ending at the last byte
			off := d.metaBase + nid*slotSize
			copy(b[off:off+extInodeSize], b[mustOff(t, b, "/x"):])
			put64(b, direntOf(t, b, "/", "x"), nid)
			return b
		}},
		{"symlink blocks beyond the bootstrap", func(t *testing.T, b []byte) []byte {
			_, off := locate(t, b, "/plain1")
			put32(b, off+16, 0xffffff)
			return b
		}},
		{"symlink longer than the bootstrap", func(t *testing.T, b []byte) []byte {
			_, off := locate(t, b, "/plain1")
			put64(b, off+8, 1<<40)
			return b
		}},
		{"inline directory tail crosses a block", func(t *testing.T, b []byte) []byte {
			_, off := locate(t, b, "/")
			put64(b, off+8, blockSize-10)
			return b
		}},
		{"overlapping metadata", func(t *testing.T, b []byte) []byte {
			// Two symlinks whose data both claim almost the whole bootstrap.
			for _, p := range []string{"/plain1", "/plain2"} {
				_, off := locate(t, b, p)
				put32(b, off+16, 0)
				put64(b, off+8, uint64(len(b))-1)
			}
			return b
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.mutate(t, append([]byte(nil), base...))
			img, err := Decode(b)
			if err == nil {
				t.Fatalf("Decode accepted the corruption (root %v)", img.Root.Name)
			}
			if !errors.Is(err, rafs.ErrCorrupt) {
				t.Fatalf("Decode error %q does not wrap rafs.ErrCorrupt", err)
			}
			t.Log(err)
		})
	}
}

func mustOff(t testing.TB, b []byte, p string) uint64 {
	_, off := locate(t, b, p)
	return off
}

// TestDecodeRejectsUnsupported: valid v6 features this package does not model are reported with
// ErrUnsupported, not as corruption.
func TestDecodeRejectsUnsupported(t *testing.T) {
	base := corruptBase(t)
	tests := []struct {
		name   string
		mutate func(t *testing.T, b []byte)
	}{
		{"512-byte blocks (tarfs)", func(_ *testing.T, b []byte) { b[superOffset+12] = 9 }},
		{"tarfs flag", func(_ *testing.T, b []byte) {
			le.PutUint64(b[extSuperOffset:], le.Uint64(b[extSuperOffset:])|rafs.FlagTarfsMode)
		}},
		{"encrypted blob", func(_ *testing.T, b []byte) { le.PutUint32(b[blockSize+beCipherAlgo:], 1) }},
		{"compressed inode layout", func(t *testing.T, b []byte) { b[mustOff(t, b, "/x")] = formatExtended | 1<<1 }},
		{"file data in the bootstrap", func(t *testing.T, b []byte) {
			off := mustOff(t, b, "/dir/file")
			b[off] = formatExtended | layoutFlatPlain<<1
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := append([]byte(nil), base...)
			tc.mutate(t, b)
			_, err := Decode(b)
			if !errors.Is(err, ErrUnsupported) {
				t.Fatalf("Decode error = %v, want ErrUnsupported", err)
			}
		})
	}
}

// TestDecodeRejectsDeepTrees: a chain of directories deeper than maxDepth is refused.
func TestDecodeRejectsDeepTrees(t *testing.T) {
	build := func(depth int) []byte {
		m := newModel(0x100000)
		n := m.img.Root
		for i := 0; i < depth; i++ {
			c := &rafs.Node{Name: "d", Inode: m.ino(dirInode(0o755))}
			n.AddChild(c)
			n = c
		}
		data, err := Encode(m.img)
		if err != nil {
			t.Fatalf("Encode: %v", err)
		}
		return data
	}
	if _, err := Decode(build(maxDepth)); err != nil {
		t.Fatalf("Decode of a %d-deep tree: %v", maxDepth, err)
	}
	_, err := Decode(build(maxDepth + 1))
	if !errors.Is(err, rafs.ErrCorrupt) || !strings.Contains(err.Error(), fmt.Sprint(maxDepth)) {
		t.Fatalf("Decode of a %d-deep tree: %v, want a depth error", maxDepth+1, err)
	}
}

func TestIsV6(t *testing.T) {
	good := corruptBase(t)
	tests := []struct {
		name string
		data []byte
		want bool
	}{
		{"v6 bootstrap", good, true},
		{"upstream fixture", readFixture(t, fixtureBoot), true},
		{"empty", nil, false},
		{"too short for the feature word", good[:superOffset+11], false},
		{"just long enough", good[:superOffset+12], true},
		{"v5 superblock", append([]byte{0x53, 0x46, 0x41, 0x52}, make([]byte, 8188)...), false},
		{"plain EROFS without RAFS_V6", func() []byte {
			b := append([]byte(nil), good...)
			le.PutUint32(b[superOffset+8:], 0)
			return b
		}(), false},
	}
	for _, tc := range tests {
		if got := IsV6(tc.data); got != tc.want {
			t.Errorf("%s: IsV6 = %v, want %v", tc.name, got, tc.want)
		}
	}
}
