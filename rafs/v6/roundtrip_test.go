package v6

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/dfnydus/dfnydus/rafs"
)

// chunk is a shorthand for a chunk record in hand-built models.
func chunk(blob uint32, index uint32, fileOff, uoff uint64, size uint32) rafs.Chunk {
	c := rafs.Chunk{
		BlobIndex: blob, Index: index, FileOffset: fileOff,
		UncompressedOffset: uoff, UncompressedSize: size,
		CompressedOffset: uoff / 2, CompressedSize: size / 2, Flags: rafs.ChunkCompressed,
		CRC32: index * 7,
	}
	c.Digest[0], c.Digest[1], c.Digest[31] = byte(blob), byte(index), byte(index>>8)
	return c
}

func testBlob(i int) *rafs.Blob {
	b := &rafs.Blob{
		ID: fmt.Sprintf("%064x", 0xabc0+i), ChunkSize: 0x100000, ChunkCount: 16,
		Compressor: rafs.CompressZstd, Digester: rafs.DigestBlake3,
		Features:       rafs.BlobFeatureAligned | rafs.BlobFeatureInlinedChunkDigest | rafs.BlobFeatureHasTOC,
		CompressedSize: 0x1234567, UncompressedSize: 0x2000000 + uint64(i)*0x1000,
		MetaCompressor: rafs.CompressZstd, MetaOffset: 0x123456, MetaCompressedSize: 0x80, MetaUncompressedSize: 0x100,
		TOCSize: 0x400, MetaSize: 0x2000,
	}
	b.TOCDigest[0], b.MetaDigest[31] = 0xee, byte(i)
	return b
}

// TestRoundTrip encodes hand-built models and decodes them back: every modelled field must survive
// (derived fields take the values the format defines, filled in by withDerived), the encoding must
// be deterministic, and re-encoding the decoded model must reproduce the same bytes.
func TestRoundTrip(t *testing.T) {
	const mib = 0x100000
	tests := []struct {
		name  string
		build func() *rafs.Image
	}{
		{"empty root", func() *rafs.Image { return newModel(mib).img }},
		{"regular files with chunks, empty files and holes", func() *rafs.Image {
			m := newModel(mib, testBlob(0))
			f := m.add("/three-chunks", fileInode(0o644))
			f.Size = 3*mib - 10
			f.Chunks = []rafs.Chunk{chunk(0, 0, 0, 0, mib), chunk(0, 1, mib, mib, mib), chunk(0, 2, 2*mib, 2*mib, mib-10)}
			m.add("/empty", fileInode(0o600))
			h := m.add("/holes", fileInode(0o644))
			h.Size = 5 * mib
			h.Chunks = []rafs.Chunk{chunk(0, 3, mib, 8*mib, mib), chunk(0, 4, 3*mib, 4*mib, mib)}
			all := m.add("/all-hole", fileInode(0o644))
			all.Size = 2*mib + 1
			scattered := m.add("/scattered", fileInode(0o644))
			scattered.Size = 2 * mib
			scattered.Chunks = []rafs.Chunk{chunk(0, 2, 0, 2*mib, mib-10), chunk(0, 0, mib, 0, mib)}
			return m.img
		}},
		{"symlinks short, inline-long and plain-long", func() *rafs.Image {
			m := newModel(mib)
			m.add("/a", symlinkInode("b"))
			m.add("/dir/rel", symlinkInode("../a"))
			m.add("/long-inline", symlinkInode(strings.Repeat("y", 4032)))
			m.add("/long-plain", symlinkInode(strings.Repeat("z", 4033)))
			m.add("/longest", symlinkInode(strings.Repeat("w", 4095)))
			return m.img
		}},
		{"hard links of files, symlinks and devices", func() *rafs.Image {
			m := newModel(mib, testBlob(0))
			f := m.add("/a/file", fileInode(0o644))
			f.Size, f.Chunks = 10, []rafs.Chunk{chunk(0, 0, 0, 0, 10)}
			m.add("/a/file2", f)
			m.add("/b/c/file3", f)
			l := m.add("/a/link", symlinkInode("file"))
			m.add("/b/link", l)
			d := m.add("/a/dev", &rafs.Inode{Mode: rafs.SIFCHR | 0o600, Rdev: mkdev(10, 200)})
			m.add("/b/dev", d)
			return m.img
		}},
		{"devices, fifos and sockets", func() *rafs.Image {
			m := newModel(mib)
			m.add("/null", &rafs.Inode{Mode: rafs.SIFCHR | 0o666, Rdev: mkdev(1, 3)})
			m.add("/sda1", &rafs.Inode{Mode: rafs.SIFBLK | 0o660, Rdev: mkdev(8, 1)})
			m.add("/max", &rafs.Inode{Mode: rafs.SIFBLK | 0o600, Rdev: mkdev(0xfff, 0xfffff)})
			m.add("/fifo", &rafs.Inode{Mode: rafs.SIFIFO | 0o644})
			m.add("/sock", &rafs.Inode{Mode: rafs.SIFSOCK | 0o777})
			m.add("/setuid", &rafs.Inode{Mode: rafs.SIFREG | 0o4755})
			return m.img
		}},
		{"xattrs in every namespace", func() *rafs.Image {
			m := newModel(mib)
			m.img.Root.Inode.Xattrs = []rafs.Xattr{{Name: "trusted.overlay.opaque", Value: []byte("y")}}
			m.add("/f", fileInode(0o644)).Xattrs = sortedXattrs(
				rafs.Xattr{Name: "user.a", Value: []byte("1")},
				rafs.Xattr{Name: "user.bb", Value: []byte{}},
				rafs.Xattr{Name: "security.capability", Value: []byte{1, 0, 0, 2, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
				rafs.Xattr{Name: "security.selinux", Value: []byte("system_u:object_r:bin_t:s0\x00")},
				rafs.Xattr{Name: "trusted.x", Value: []byte("xyz")},
				rafs.Xattr{Name: "system.posix_acl_access", Value: minimalACL()},
				rafs.Xattr{Name: "system.posix_acl_default", Value: minimalACL()},
				rafs.Xattr{Name: "user." + strings.Repeat("n", 255), Value: bytes.Repeat([]byte{7}, 65535)},
			)
			m.add("/l", symlinkInode("f")).Xattrs = []rafs.Xattr{{Name: "user.on-symlink", Value: []byte("v")}}
			m.add("/d", dirInode(0o755)).Xattrs = []rafs.Xattr{{Name: "user.big", Value: bytes.Repeat([]byte("q"), 4000)}}
			return m.img
		}},
		{"ownership beyond 16 bits and nanosecond mtimes", func() *rafs.Image {
			m := newModel(mib)
			in := m.add("/f", fileInode(0o644))
			in.UID, in.GID, in.Mtime, in.MtimeNsec = 70000, 0xffffffff, 1<<40, 999999999
			d := m.add("/d", dirInode(0o711))
			d.UID, d.GID, d.Mtime, d.MtimeNsec = 65536, 65535, 1, 1
			return m.img
		}},
		{"directories spanning several dirent blocks", func() *rafs.Image {
			m := newModel(mib)
			for i := 0; i < 500; i++ {
				m.add(fmt.Sprintf("/big/%s%04d", strings.Repeat("e", 30), i), fileInode(0o644))
			}
			// Exactly one full block: "." (13) + ".." (14) + 14 * (12+255) + (12+150) + (12+157) = 4096,
			// so the directory has no tail to inline and is FLAT_PLAIN.
			for i := 0; i < 14; i++ {
				m.add(fmt.Sprintf("/full/a%03d%s", i, strings.Repeat("f", 251)), fileInode(0o644))
			}
			m.add("/full/b"+strings.Repeat("g", 149), fileInode(0o644))
			m.add("/full/c"+strings.Repeat("h", 156), fileInode(0o644))
			m.add("/before-dot/!", fileInode(0o644))
			m.add("/before-dot/-", fileInode(0o644))
			m.add("/before-dot/.hidden", fileInode(0o644))
			m.add("/before-dot/...", fileInode(0o644))
			return m.img
		}},
		{"deep paths", func() *rafs.Image {
			m := newModel(mib)
			p := ""
			for i := 0; i < 100; i++ {
				p += fmt.Sprintf("/d%d", i)
			}
			m.add(p+"/leaf", symlinkInode("/"))
			return m.img
		}},
		{"prefetch list and several blobs", func() *rafs.Image {
			m := newModel(mib, testBlob(0), testBlob(1), testBlob(2))
			for i := uint32(0); i < 3; i++ {
				f := m.add(fmt.Sprintf("/blob%d/file", i), fileInode(0o644))
				f.Size, f.Chunks = 2*mib, []rafs.Chunk{chunk(i, 0, 0, 0, mib), chunk(i, 1, mib, mib, mib)}
			}
			m.img.Prefetch = []string{"/blob2", "/blob0/file", "/"}
			return m.img
		}},
		{"everything together", func() *rafs.Image { return richSample().img }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := withDerived(tc.build())
			data, err := Encode(want)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			if !IsV6(data) {
				t.Fatal("IsV6(Encode(model)) = false")
			}
			got, err := Decode(data)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			requireSameImage(t, want, got)

			again, err := Encode(withDerived(tc.build()))
			if err != nil || !bytes.Equal(again, data) {
				t.Fatalf("Encode is not deterministic (err %v)", err)
			}
			fixpoint, err := Encode(got)
			if err != nil || !bytes.Equal(fixpoint, data) {
				t.Fatalf("Encode(Decode(Encode(m))) != Encode(m) (err %v):\n%s", err, firstDiffs(fixpoint, data, 8))
			}
		})
	}
}

// TestPrefetchOfHardLink: the prefetch table stores nids, so a second name of a hard-linked file
// decodes as the inode's first name in walk order.
func TestPrefetchOfHardLink(t *testing.T) {
	m := newModel(0x100000, testBlob(0))
	f := m.add("/a/file", fileInode(0o644))
	m.add("/b/link", f)
	m.img.Prefetch = []string{"/b/link", "/b"}
	data, err := Encode(m.img)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got.Prefetch, " ") != "/a/file /b" {
		t.Errorf("prefetch = %q, want [/a/file /b]", got.Prefetch)
	}
}

// TestPrefetchNeedsBlobs: like nydus-image, Encode writes no prefetch table for an image without
// blobs (there is nothing to prefetch).
func TestPrefetchNeedsBlobs(t *testing.T) {
	m := newModel(0x100000)
	m.add("/f", fileInode(0o644))
	m.img.Prefetch = []string{"/f"}
	data, err := Encode(m.img)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Prefetch) != 0 {
		t.Errorf("prefetch = %q, want none", got.Prefetch)
	}
}

// TestBlobChunkSizeDefaults: a blob without a chunk size (as a v5 blob table has none) is written
// with the image's chunk size.
func TestBlobChunkSizeDefaults(t *testing.T) {
	m := newModel(0x40000, testBlob(0))
	m.img.Blobs[0].ChunkSize = 0
	data, err := Encode(m.img)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	if got.Blobs[0].ChunkSize != 0x40000 {
		t.Errorf("blob chunk size = %#x, want the image's 0x40000", got.Blobs[0].ChunkSize)
	}
}

// TestEncodeDerivesFlags checks the superblock flags Encode computes from the model.
func TestEncodeDerivesFlags(t *testing.T) {
	m := newModel(0x100000, testBlob(0))
	m.img.Flags = rafs.FlagCompressLZ4Block | rafs.FlagHashSHA256 | rafs.FlagHasXattr | rafs.FlagExplicitUIDGID
	m.img.Compressor, m.img.Digester = rafs.CompressGzip, rafs.DigestSHA256
	data, err := Encode(m.img)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	// Stale compressor bit and HAS_XATTR dropped, INLINED_CHUNK_DIGEST added (every blob has it).
	want := rafs.FlagCompressGzip | rafs.FlagHashSHA256 | rafs.FlagExplicitUIDGID | rafs.FlagInlinedChunkDig
	if got.Flags != want || got.Compressor != rafs.CompressGzip || got.Digester != rafs.DigestSHA256 {
		t.Errorf("flags %#x (%v/%v), want %#x", got.Flags, got.Compressor, got.Digester, want)
	}
}

// TestEncodeRejects lists models Encode must refuse rather than write a broken image.
func TestEncodeRejects(t *testing.T) {
	const mib = 0x100000
	base := func() *model { return newModel(mib, testBlob(0)) }
	file := func(m *model, c ...rafs.Chunk) *rafs.Inode {
		f := m.add("/f", fileInode(0o644))
		f.Size, f.Chunks = 2*mib, c
		return f
	}
	tests := []struct {
		name   string
		mutate func(m *model)
		want   string
	}{
		{"no root", func(m *model) { m.img.Root = nil }, "root"},
		{"file root", func(m *model) { m.img.Root.Inode.Mode = rafs.SIFREG }, "root"},
		{"bad chunk size", func(m *model) { m.img.ChunkSize = 3000 }, "chunk size"},
		{"tarfs", func(m *model) { m.img.Flags |= rafs.FlagTarfsMode }, "tarfs"},
		{"too many blobs", func(m *model) {
			for i := 0; i < 254; i++ {
				m.img.Blobs = append(m.img.Blobs, testBlob(i+1))
			}
		}, "blobs"},
		{"blob id too long", func(m *model) { m.img.Blobs[0].ID = strings.Repeat("a", 65) }, "blob 0 id"},
		{"blob with an invalid chunk size", func(m *model) { m.img.Blobs[0].ChunkSize = 5000 }, "blob 0 chunk size"},
		{"blob with an unknown compressor", func(m *model) { m.img.Blobs[0].Compressor = 7 }, "unknown compressor"},
		{"blob with too many chunks", func(m *model) { m.img.Blobs[0].ChunkCount = 1<<24 + 1 }, "chunks"},
		{"blob too big", func(m *model) { m.img.Blobs[0].UncompressedSize = 1 << 45 }, "format limits"},
		{"blob chunk-info range", func(m *model) { m.img.Blobs[0].MetaCompressedSize = 1 << 20 }, "chunk-info"},
		{"unaligned uncompressed offset", func(m *model) { file(m, chunk(0, 0, 0, 100, mib)) }, "4 KiB aligned"},
		{"chunk beyond file size", func(m *model) { file(m, chunk(0, 0, 2*mib, 0, mib)) }, "beyond the file size"},
		{"chunk file offset not on a chunk boundary", func(m *model) { file(m, chunk(0, 0, 10, 0, mib)) }, "multiple of the chunk size"},
		{"chunks out of order", func(m *model) { file(m, chunk(0, 1, mib, mib, mib), chunk(0, 0, 0, 0, mib)) }, "does not follow"},
		{"chunk in a missing blob", func(m *model) { file(m, chunk(1, 0, 0, 0, mib)) }, "names blob 1"},
		{"chunk index beyond 24 bits", func(m *model) { file(m, chunk(0, 1<<24, 0, 0, mib)) }, "24 bits"},
		{"chunk larger than the chunk size", func(m *model) { file(m, chunk(0, 0, 0, 0, mib+1)) }, "exceeds the chunk size"},
		{"conflicting chunks", func(m *model) {
			c := chunk(0, 0, mib, 0, mib)
			c.CompressedSize++
			file(m, chunk(0, 0, 0, 0, mib), c)
		}, "differ"},
		{"unknown xattr namespace", func(m *model) {
			m.add("/x", fileInode(0o644)).Xattrs = []rafs.Xattr{{Name: "os2.foo", Value: nil}}
		}, "namespace"},
		{"xattr value too big", func(m *model) {
			m.add("/x", fileInode(0o644)).Xattrs = []rafs.Xattr{{Name: "user.a", Value: make([]byte, 65536)}}
		}, "exceeds"},
		{"name with a slash", func(m *model) {
			m.img.Root.AddChild(&rafs.Node{Name: "a/b", Inode: fileInode(0o644)})
		}, "contains '/'"},
		{"name too long", func(m *model) { m.add("/"+strings.Repeat("n", 256), fileInode(0o644)) }, "exceeds 255"},
		{"directory hard link", func(m *model) {
			d := m.add("/d", dirInode(0o755))
			m.add("/e", d)
		}, "directory hard link"},
		{"file with children", func(m *model) {
			f := fileInode(0o644)
			m.img.Root.AddChild(&rafs.Node{Name: "f", Inode: f, Children: []*rafs.Node{{Name: "x", Inode: fileInode(0)}}})
		}, "has children"},
		{"inode number beyond 32 bits", func(m *model) { m.add("/x", &rafs.Inode{Mode: rafs.SIFREG, Ino: 1 << 32}) }, "32 bits"},
		{"unknown file type", func(m *model) { m.add("/x", &rafs.Inode{Mode: 0o644}) }, "file type"},
		{"empty symlink", func(m *model) { m.add("/x", symlinkInode("")) }, "symlink target"},
		{"device number beyond 32 bits", func(m *model) {
			m.add("/x", &rafs.Inode{Mode: rafs.SIFCHR, Rdev: mkdev(0x1000, 0)})
		}, "does not fit"},
		{"missing prefetch path", func(m *model) { m.img.Prefetch = []string{"/nope"} }, "prefetch"},
		{"file too sparse", func(m *model) { m.add("/x", &rafs.Inode{Mode: rafs.SIFREG, Size: 1 << 60}) }, "more than"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := base()
			tc.mutate(m)
			_, err := Encode(m.img)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Encode error = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}
