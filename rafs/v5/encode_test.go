package v5

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/dfnydus/dfnydus/rafs"
)

var update = flag.Bool("update", false, "rewrite testdata/golden files")

// TestModelRoundTrip: every hand-built model encodes, decodes back to the same model (with the
// fields Encode derives filled in), verifies, and re-encodes to the same bytes.
func TestModelRoundTrip(t *testing.T) {
	for _, tc := range modelCases {
		t.Run(tc.name, func(t *testing.T) {
			img := tc.build()
			out := mustEncode(t, img)
			got := mustDecode(t, out)
			assertSameImage(t, img, got)
			if err := Verify(got); err != nil {
				t.Errorf("Verify(decoded) = %v", err)
			}
			if again := mustEncode(t, got); !bytes.Equal(again, out) {
				t.Error("Encode(Decode(Encode(m))) differs from Encode(m)")
			}
			if fresh := mustEncode(t, tc.build()); !bytes.Equal(fresh, out) {
				t.Error("encoding the same model twice gives different bytes")
			}
		})
	}
}

// TestModelFlippedDigest: with any one stored digest changed, Verify fails naming that inode.
func TestModelFlippedDigest(t *testing.T) {
	for _, tc := range modelCases {
		t.Run(tc.name, func(t *testing.T) {
			out := mustEncode(t, tc.build())
			var paths []string
			if err := mustDecode(t, out).Walk(func(p string, _ *rafs.Node) error {
				paths = append(paths, p)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			for _, p := range paths {
				img := mustDecode(t, out)
				target := img.Lookup(p).Inode
				target.Digest[7] ^= 1
				err := Verify(img)
				if !errors.Is(err, rafs.ErrCorrupt) {
					t.Errorf("flip %s: Verify = %v, want ErrCorrupt", p, err)
					continue
				}
				// A hard-linked file may be reported under any of its names.
				named := false
				_ = img.Walk(func(q string, n *rafs.Node) error {
					named = named || (n.Inode == target && strings.Contains(err.Error(), "at "+q+":"))
					return nil
				})
				if !named {
					t.Errorf("flip %s: Verify = %v, names another inode", p, err)
				}
			}
		})
	}
}

// TestEncodeGolden pins the exact bytes of the "everything" model.
func TestEncodeGolden(t *testing.T) {
	const golden = "testdata/golden/everything.boot"
	out := mustEncode(t, buildEverything())
	if *update {
		if err := os.MkdirAll(path.Dir(golden), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, out, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if want := readFile(t, golden); !bytes.Equal(out, want) {
		t.Errorf("Encode(everything) differs from %s (run with -update if the change is intended)", golden)
	}
}

// TestEncodeLayout checks what Encode derives against nydus-image's rules on a small tree:
//
//	/a/  x  y/z(=b)   /b   /c -> target   /d/
func TestEncodeLayout(t *testing.T) {
	m := newModel(rafs.DigestSHA256, rafs.CompressNone, 1)
	m.dir("/a", 0o755)
	b := m.file("/b", 5000, nil)
	c := m.symlink("/c", "target")
	c.Size = 0 // derived from the target
	m.dir("/d", 0o755)
	x := m.file("/a/x", 10, nil)
	x.UID = 1
	x.Xattrs = []rafs.Xattr{{Name: "user.k", Value: []byte("v")}, {Name: "trusted.a", Value: nil}}
	m.dir("/a/y", 0o755)
	m.hardlink("/a/y/z", b)
	sparse := m.file("/a/y/sparse", 3*testChunkSize, func(i int) bool { return i != 1 })
	img := m.img
	img.Flags = rafs.FlagHashBlake3 | rafs.FlagCompressZstd | rafs.FlagHasXattr // stale bits are replaced
	img.Prefetch = []string{"/a/y/z/", "//a"}
	out := mustEncode(t, img)

	// Inode numbers: root 1; its children a b c d = 2..5; a's children x y = 6, 7; y's
	// children sparse z = 8, 9; z is a hard link of b and keeps b's number.
	wantIno := map[string]uint64{"/": 1, "/a": 2, "/b": 3, "/c": 4, "/d": 5, "/a/x": 6, "/a/y": 7, "/a/y/sparse": 8, "/a/y/z": 3}
	// Nlink: directories 2 + subdirectories; b and z are one file with two links.
	wantNlink := map[string]uint32{"/": 4, "/a": 3, "/b": 2, "/c": 1, "/d": 2, "/a/x": 1, "/a/y": 2, "/a/y/z": 2}
	for p, ino := range wantIno {
		if got := img.Lookup(p).Inode.Ino; got != ino {
			t.Errorf("%s: Ino = %d, want %d", p, got, ino)
		}
	}
	for p, nl := range wantNlink {
		if got := img.Lookup(p).Inode.Nlink; got != nl {
			t.Errorf("%s: Nlink = %d, want %d", p, got, nl)
		}
	}
	// Record headers: parent and child ranges as the builder writes them; records in inode order.
	type hdr struct{ parent, childIndex, childCount uint64 }
	want := []hdr{{0, 2, 4}, {1, 6, 2}, {1, 0, 2}, {1, 0, 0}, {1, 10, 0}, {2, 0, 1}, {2, 8, 2}, {7, 0, 2}, {7, 0, 2}}
	prev := 0
	for i, w := range want {
		off := recordOffset(out, uint32(i+1))
		var h inodeHeader
		h.unmarshal(out[off:])
		if got := (hdr{h.parent, uint64(h.childIndex), uint64(h.childCount)}); got != w {
			t.Errorf("inode %d: parent/child index/count = %v, want %v", i+1, got, w)
		}
		if off <= prev {
			t.Errorf("inode %d record at %d is not after inode %d's at %d", i+1, off, i, prev)
		}
		prev = off
	}
	if got := le.Uint64(out[24:]); got != 8 {
		t.Errorf("s_inodes_count = %d, want 8 distinct inodes", got)
	}

	// Sizes and blocks: directories get round_up_4k(sum(name + 8)), symlinks their target length;
	// blocks count 512-byte units of size plus the aligned xattr table.
	if s := img.Root.Inode.Size; s != 4096 {
		t.Errorf("root size %d, want 4096", s)
	}
	if c.Size != 6 || c.Blocks != 1 {
		t.Errorf("symlink size/blocks = %d/%d, want 6/1", c.Size, c.Blocks)
	}
	if b.Blocks != 10 || x.Blocks != 1 || img.Root.Inode.Blocks != 8 {
		t.Errorf("blocks: b %d x %d root %d, want 10 1 8", b.Blocks, x.Blocks, img.Root.Inode.Blocks)
	}
	if !sparse.HasHole || b.HasHole || x.HasHole {
		t.Errorf("HasHole: sparse %v b %v x %v, want true false false", sparse.HasHole, b.HasHole, x.HasHole)
	}
	if x.Xattrs[0].Name != "trusted.a" {
		t.Errorf("xattrs not sorted: %v", x.Xattrs)
	}
	wantFlags := rafs.FlagCompressNone | rafs.FlagHashSHA256 | rafs.FlagHasXattr | rafs.FlagExplicitUIDGID
	if img.Flags != wantFlags || le.Uint64(out[16:]) != wantFlags {
		t.Errorf("flags = %#x (on disk %#x), want %#x", img.Flags, le.Uint64(out[16:]), wantFlags)
	}
	if !slices.Equal(img.Prefetch, []string{"/b", "/a"}) {
		t.Errorf("prefetch = %q, want the canonical [/b /a]", img.Prefetch)
	}
	assertSameImage(t, img, mustDecode(t, out))
}

// TestEncodeRejects: models RAFS v5 cannot hold are refused, naming the problem, and left as
// they were.
func TestEncodeRejects(t *testing.T) {
	tests := []struct {
		name   string
		breakf func(m *model)
		want   string
	}{
		{"no root", func(m *model) { m.img.Root = nil }, "no root"},
		{"root not a directory", func(m *model) { m.img.Root.Inode = &rafs.Inode{Mode: rafs.SIFREG} }, "root is not a directory"},
		{"chunk size not a power of two", func(m *model) { m.img.ChunkSize = 3000 }, "chunk size"},
		{"chunk size zero", func(m *model) { m.img.ChunkSize = 0 }, "chunk size"},
		{"unknown compressor", func(m *model) { m.img.Compressor = 9 }, "compressor"},
		{"unknown digester", func(m *model) { m.img.Digester = 2 }, "digester"},
		{"undefined flag bits", func(m *model) { m.img.Flags |= 0x400 }, "flags"},
		{"empty blob id", func(m *model) { m.img.Blobs[0].ID = "" }, "blob 0 id"},
		{"blob id with NUL", func(m *model) { m.img.Blobs[0].ID = "ab\x00cd" }, "blob 0 id"},
		{"blob chunk size differs", func(m *model) { m.img.Blobs[0].ChunkSize = 2 * testChunkSize }, "one chunk size"},
		{"empty name", func(m *model) { m.img.Lookup("/f").Name = "" }, "empty name"},
		{"name with slash", func(m *model) { m.img.Lookup("/f").Name = "f/g" }, "contains '/'"},
		{"dot-dot name", func(m *model) { m.img.Lookup("/d").Name = ".." }, "reserved"},
		{"name too long", func(m *model) { m.img.Lookup("/f").Name = strings.Repeat("f", 256) }, "exceeds 255"},
		{"children out of order", func(m *model) { slices.Reverse(m.img.Root.Children) }, "increasing name order"},
		{"duplicate names", func(m *model) { m.img.Lookup("/l").Name = "f" }, "increasing name order"},
		{"nil child", func(m *model) { m.img.Root.Children[0] = nil }, "nil"},
		{"node without inode", func(m *model) { m.img.Lookup("/f").Inode = nil }, "no inode"},
		{"node twice in the tree", func(m *model) { m.img.Lookup("/d").Children = []*rafs.Node{m.img.Lookup("/f")} }, "appears twice"},
		{"directory containing the root", func(m *model) { m.img.Lookup("/d").Children = []*rafs.Node{m.img.Root} }, "appears twice"},
		{"hard-linked directory", func(m *model) { m.add("/d2", m.img.Lookup("/d").Inode) }, "hard links must be regular files"},
		{"hard-linked symlink", func(m *model) { m.add("/m", m.img.Lookup("/l").Inode) }, "hard links must be regular files"},
		{"file with children", func(m *model) {
			m.img.Lookup("/f").Children = []*rafs.Node{{Name: "x", Inode: &rafs.Inode{Mode: rafs.SIFREG}}}
		}, "not a directory but has 1 children"},
		{"mode without a type", func(m *model) { m.img.Lookup("/f").Inode.Mode = 0o644 }, "no valid file type"},
		{"mode with high bits", func(m *model) { m.img.Lookup("/f").Inode.Mode |= 1 << 20 }, "beyond S_IFMT"},
		{"nanoseconds out of range", func(m *model) { m.img.Lookup("/f").Inode.MtimeNsec = 1e9 }, "nanoseconds"},
		{"empty symlink", func(m *model) { m.img.Lookup("/l").Inode.Symlink = "" }, "empty symlink"},
		{"symlink with NUL", func(m *model) { m.img.Lookup("/l").Inode.Symlink = "a\x00b" }, "NUL"},
		{"symlink too long", func(m *model) { m.img.Lookup("/l").Inode.Symlink = strings.Repeat("a", 0x10000) }, "exceeds 65535"},
		{"target on a regular file", func(m *model) { m.img.Lookup("/f").Inode.Symlink = "x" }, "symlink target"},
		{"chunks on a directory", func(m *model) { m.img.Lookup("/d").Inode.Chunks = m.img.Lookup("/f").Inode.Chunks }, "chunks"},
		{"device number above 32 bits", func(m *model) { m.img.Lookup("/dev").Inode.Rdev = mkdev(4096, 0) }, "4096:0"},
		{"xattr outside the namespaces", func(m *model) { m.img.Lookup("/f").Inode.Xattrs = []rafs.Xattr{{Name: "os2.x"}} }, "prefixes"},
		{"xattr twice", func(m *model) {
			m.img.Lookup("/f").Inode.Xattrs = []rafs.Xattr{{Name: "user.a"}, {Name: "user.a"}}
		}, "appears twice"},
		{"xattr value too long", func(m *model) {
			m.img.Lookup("/f").Inode.Xattrs = []rafs.Xattr{{Name: "user.a", Value: make([]byte, 0x10001)}}
		}, "exceeds"},
		{"chunk in a missing blob", func(m *model) { m.img.Lookup("/f").Inode.Chunks[1].BlobIndex = 1 }, "names blob 1 of 1"},
		{"overlapping chunks", func(m *model) { m.img.Lookup("/f").Inode.Chunks[1].FileOffset = 100 }, "overlaps"},
		{"chunk past the end of the file", func(m *model) { m.img.Lookup("/f").Inode.Size = testChunkSize }, "beyond the file size"},
		{"empty chunk", func(m *model) { m.img.Lookup("/f").Inode.Chunks[0].UncompressedSize = 0 }, "holds 0 bytes"},
		{"chunk larger than the chunk size", func(m *model) { m.img.Lookup("/f").Inode.Chunks[1].UncompressedSize = testChunkSize + 1 }, "holds 4097 bytes"},
		{"unknown chunk flags", func(m *model) { m.img.Lookup("/f").Inode.Chunks[0].Flags = 0x100 }, "unknown flags"},
		{"prefetch path not in the image", func(m *model) { m.img.Prefetch = []string{"/nope"} }, "prefetch path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newModel(rafs.DigestSHA256, rafs.CompressNone, 1)
			m.dir("/d", 0o755)
			m.file("/f", testChunkSize+5, nil)
			m.symlink("/l", "f")
			m.special("/dev", rafs.SIFCHR, mkdev(1, 3))
			tt.breakf(m)
			flags := m.img.Flags
			out, err := Encode(m.img)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Encode = %d bytes, %v; want an error containing %q", len(out), err, tt.want)
			}
			if errors.Is(err, rafs.ErrCorrupt) {
				t.Errorf("Encode error %v wraps ErrCorrupt, which is for bad input bytes", err)
			}
			if m.img.Flags != flags {
				t.Errorf("failed Encode changed img.Flags")
			}
			if r := m.img.Root; r != nil && r.Inode != nil && (r.Inode.Ino != 0 || !r.Inode.Digest.IsZero()) {
				t.Errorf("failed Encode changed the root inode: %+v", r.Inode)
			}
		})
	}
}

// TestRdev pins the i_rdev conversion: the low 32 bits of the glibc dev_t, which is the kernel's
// new_encode_dev form, exact for major < 4096 and minor < 2^20.
func TestRdev(t *testing.T) {
	tests := []struct {
		major, minor uint64
		disk         uint32
		ok           bool
	}{
		{1, 3, 0x103, true},
		{8, 0, 0x800, true},
		{259, 0x12345, 0x12310345, true},
		{4095, 0xfffff, 0xffffffff, true},
		{0, 0, 0, true},
		{4096, 0, 0, false},
		{0, 0x100000, 0, false},
	}
	for _, tt := range tests {
		dev := mkdev(tt.major, tt.minor)
		disk, err := rdevToDisk(dev)
		if (err == nil) != tt.ok || disk != tt.disk {
			t.Errorf("rdevToDisk(%d:%d) = %#x, %v; want %#x, ok=%v", tt.major, tt.minor, disk, err, tt.disk, tt.ok)
		}
		if tt.ok && rdevFromDisk(disk) != dev {
			t.Errorf("rdevFromDisk(%#x) = %#x, want %#x", disk, rdevFromDisk(disk), dev)
		}
	}
	// The host's own dev_t for /dev/null (1:3) stores as 0x103 and comes back unchanged.
	var st syscall.Stat_t
	if err := syscall.Stat("/dev/null", &st); err != nil {
		t.Skipf("stat /dev/null: %v", err)
	}
	disk, err := rdevToDisk(uint64(st.Rdev))
	if err != nil || disk != 0x103 || rdevFromDisk(disk) != uint64(st.Rdev) {
		t.Errorf("/dev/null rdev %#x -> %#x, %v", st.Rdev, disk, err)
	}
}

// TestEncodeFlags: the superblock flags Encode writes (and stores back in img.Flags).
func TestEncodeFlags(t *testing.T) {
	const none, sha, blake, zstd = rafs.FlagCompressNone, rafs.FlagHashSHA256, rafs.FlagHashBlake3, rafs.FlagCompressZstd
	tests := []struct {
		name  string
		flags uint64
		edit  func(m *model)
		want  uint64
	}{
		{"fresh model gets nydus-image's default EXPLICIT_UID_GID", 0, nil, none | sha | rafs.FlagExplicitUIDGID},
		{"flags read from a repeatable build are kept", none | sha, nil, none | sha},
		{"a non-zero uid needs EXPLICIT_UID_GID", none | sha, func(m *model) { m.img.Lookup("/f").Inode.UID = 7 }, none | sha | rafs.FlagExplicitUIDGID},
		{"a non-zero gid needs EXPLICIT_UID_GID", none | sha, func(m *model) { m.img.Lookup("/f").Inode.GID = 7 }, none | sha | rafs.FlagExplicitUIDGID},
		{"xattrs set HAS_XATTR", none | sha, func(m *model) {
			m.img.Lookup("/f").Inode.Xattrs = []rafs.Xattr{{Name: "user.x", Value: []byte("1")}}
		}, none | sha | rafs.FlagHasXattr},
		{"stale HAS_XATTR is cleared", none | sha | rafs.FlagHasXattr, nil, none | sha},
		{"compressor and digester come from the model", zstd | blake, nil, none | sha},
		{"other known bits are kept", none | sha | rafs.FlagEncryptionNone | 0x8000_0000, nil, none | sha | rafs.FlagEncryptionNone | 0x8000_0000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newModel(rafs.DigestSHA256, rafs.CompressNone, 1)
			m.file("/f", 10, nil)
			m.img.Flags = tt.flags
			if tt.edit != nil {
				tt.edit(m)
			}
			out := mustEncode(t, m.img)
			if got := le.Uint64(out[16:]); got != tt.want || m.img.Flags != tt.want {
				t.Errorf("flags on disk %#x, in the model %#x; want %#x", got, m.img.Flags, tt.want)
			}
		})
	}
}
