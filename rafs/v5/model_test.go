package v5

import (
	"fmt"
	"path"

	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/digest"
)

// testChunkSize keeps hand-built files small.
const testChunkSize = rafs.MinChunkSize

// model builds hand-made images for the tests: chunks get digests of deterministic contents and
// are appended to the image's blobs, whose counts and sizes follow.
type model struct {
	img *rafs.Image
}

func newModel(dig rafs.Digester, comp rafs.Compressor, blobs int) *model {
	img := &rafs.Image{
		Version:    5,
		ChunkSize:  testChunkSize,
		Compressor: comp,
		Digester:   dig,
		Root:       &rafs.Node{Inode: &rafs.Inode{Mode: rafs.SIFDIR | 0o755}},
	}
	for i := range blobs {
		img.Blobs = append(img.Blobs, &rafs.Blob{
			ID:         fmt.Sprintf("%064x", i+1),
			ChunkSize:  testChunkSize,
			Compressor: comp,
			Digester:   dig,
		})
	}
	return &model{img: img}
}

// mkdev encodes a Linux dev_t the way glibc and golang.org/x/sys/unix.Mkdev do.
func mkdev(major, minor uint64) uint64 {
	return (major&0xfff)<<8 | (major&^0xfff)<<32 | minor&0xff | (minor&^0xff)<<12
}

// add links a new node at absolute path p (its parent must exist) and returns its inode.
func (m *model) add(p string, in *rafs.Inode) *rafs.Inode {
	parent := m.img.Lookup(path.Dir(p))
	if parent == nil {
		panic("model: no parent for " + p)
	}
	parent.AddChild(&rafs.Node{Name: path.Base(p), Inode: in})
	return in
}

func (m *model) dir(p string, perm uint32) *rafs.Inode {
	return m.add(p, &rafs.Inode{Mode: rafs.SIFDIR | perm, Mtime: 1_600_000_000})
}

func (m *model) symlink(p, target string) *rafs.Inode {
	return m.add(p, &rafs.Inode{Mode: rafs.SIFLNK | 0o777, Symlink: target, Size: uint64(len(target)), Mtime: 1_600_000_001})
}

func (m *model) special(p string, typ uint32, rdev uint64) *rafs.Inode {
	return m.add(p, &rafs.Inode{Mode: typ | 0o640, Rdev: rdev, Mtime: 1_600_000_002})
}

// file adds a regular file of size bytes with a chunk for every chunk-sized piece for which
// present returns true (nil: all of them); missing pieces are holes.
func (m *model) file(p string, size uint64, present func(i int) bool) *rafs.Inode {
	in := &rafs.Inode{Mode: rafs.SIFREG | 0o644, Size: size, Mtime: 1_600_000_003, MtimeNsec: 5}
	for i, off := 0, uint64(0); off < size; i, off = i+1, off+testChunkSize {
		if present == nil || present(i) {
			in.Chunks = append(in.Chunks, m.chunk(p, off, uint32(min(testChunkSize, size-off))))
		}
	}
	return m.add(p, in)
}

// chunk makes the chunk for bytes [off, off+n) of the file at p and appends it to a blob.
func (m *model) chunk(p string, off uint64, n uint32) rafs.Chunk {
	bi := uint32(len(p)) % uint32(len(m.img.Blobs))
	b := m.img.Blobs[bi]
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(len(p)) + byte(off>>12) + byte(i)
	}
	c := rafs.Chunk{
		Digest:             digest.Sum(m.img.Digester, data),
		BlobIndex:          bi,
		CompressedOffset:   b.CompressedSize,
		CompressedSize:     n,
		UncompressedOffset: b.UncompressedSize,
		UncompressedSize:   n,
		FileOffset:         off,
		Index:              b.ChunkCount,
	}
	if m.img.Compressor != rafs.CompressNone {
		c.Flags |= rafs.ChunkCompressed
		c.CompressedSize = n/3 + 1
	}
	b.ChunkCount++
	b.CompressedSize += uint64(c.CompressedSize)
	b.UncompressedSize += (uint64(n) + 4095) &^ 4095
	return c
}

// hardlink adds another name for an existing inode.
func (m *model) hardlink(p string, in *rafs.Inode) { m.add(p, in) }

// modelCases are the hand-built images every model test runs over.
var modelCases = []struct {
	name  string
	build func() *rafs.Image
}{
	{"root only", func() *rafs.Image {
		return newModel(rafs.DigestBlake3, rafs.CompressNone, 0).img
	}},
	{"directories", func() *rafs.Image {
		m := newModel(rafs.DigestSHA256, rafs.CompressNone, 0)
		m.dir("/a", 0o755)
		m.dir("/a/b", 0o700)
		m.dir("/a/b/c", 0o1777)
		m.dir("/a/d", 0o2755)
		m.dir("/e", 0o555)
		m.dir("/a/b/c/deep", 0o755)
		return m.img
	}},
	{"regular files with several chunks", func() *rafs.Image {
		m := newModel(rafs.DigestBlake3, rafs.CompressZstd, 1)
		m.file("/three-and-a-bit", 3*testChunkSize+100, nil)
		m.file("/two-full", 2*testChunkSize, nil)
		m.file("/one-byte", 1, nil)
		m.dir("/sub", 0o755)
		m.file("/sub/five", 5*testChunkSize-1, nil)
		return m.img
	}},
	{"empty files", func() *rafs.Image {
		m := newModel(rafs.DigestSHA256, rafs.CompressNone, 1)
		m.file("/empty", 0, nil)
		m.dir("/d", 0o755)
		m.file("/d/also-empty", 0, nil)
		return m.img
	}},
	{"symlinks", func() *rafs.Image {
		m := newModel(rafs.DigestBlake3, rafs.CompressNone, 0)
		m.symlink("/relative", "../x/y")
		m.symlink("/absolute", "/etc/passwd")
		m.symlink("/root", "/")
		m.symlink("/long", fmt.Sprintf("%04000d", 7))
		m.symlink("/unicode target", "héllo wörld")
		return m.img
	}},
	{"hard links", func() *rafs.Image {
		m := newModel(rafs.DigestSHA256, rafs.CompressLZ4Block, 1)
		f := m.file("/f", 2*testChunkSize+3, nil)
		m.dir("/d1", 0o755)
		m.dir("/d2", 0o755)
		m.hardlink("/d1/f-link", f)
		m.hardlink("/d2/another", f)
		e := m.file("/d2/empty", 0, nil)
		m.hardlink("/empty-link", e)
		return m.img
	}},
	{"devices", func() *rafs.Image {
		m := newModel(rafs.DigestBlake3, rafs.CompressNone, 0)
		m.dir("/dev", 0o755)
		m.special("/dev/null", rafs.SIFCHR, mkdev(1, 3))
		m.special("/dev/sda", rafs.SIFBLK, mkdev(8, 0))
		m.special("/dev/nvme-part", rafs.SIFBLK, mkdev(259, 0x12345))
		m.special("/dev/largest", rafs.SIFCHR, mkdev(4095, 0xfffff))
		return m.img
	}},
	{"fifo and socket", func() *rafs.Image {
		m := newModel(rafs.DigestSHA256, rafs.CompressNone, 0)
		m.special("/fifo", rafs.SIFIFO, 0)
		m.special("/socket", rafs.SIFSOCK, 0)
		return m.img
	}},
	{"xattrs", func() *rafs.Image {
		m := newModel(rafs.DigestBlake3, rafs.CompressNone, 1)
		d := m.dir("/dir", 0o755)
		d.Xattrs = []rafs.Xattr{{Name: "trusted.overlay.opaque", Value: []byte("y")}}
		f := m.file("/file", 10, nil)
		f.Xattrs = []rafs.Xattr{
			{Name: "security.capability", Value: []byte{1, 0, 0, 2, 0, 0x20, 0, 0}},
			{Name: "system.posix_acl_access", Value: []byte{2, 0, 0, 0, 1, 0, 6, 0, 0xff, 0xff, 0xff, 0xff}},
			{Name: "user.empty", Value: []byte{}},
			{Name: "user.mime_type", Value: []byte("text/plain")},
		}
		l := m.symlink("/link", "file")
		l.Xattrs = []rafs.Xattr{{Name: "user.on-a-symlink", Value: []byte("v")}}
		p := m.special("/pipe", rafs.SIFIFO, 0)
		p.Xattrs = []rafs.Xattr{{Name: "system.posix_acl_default", Value: make([]byte, 300)}}
		m.img.Root.Inode.Xattrs = []rafs.Xattr{{Name: "user.root", Value: []byte("r")}}
		return m.img
	}},
	{"ownership and times", func() *rafs.Image {
		m := newModel(rafs.DigestSHA256, rafs.CompressNone, 1)
		f := m.file("/owned", 100, nil)
		f.UID, f.GID, f.ProjID = 1000, 2000, 7
		f.Mtime, f.MtimeNsec = 1_700_000_000, 123_456_789
		d := m.dir("/dir", 0o750)
		d.UID, d.GID = 65534, 65534
		d.Mtime, d.MtimeNsec = 1<<40, 999_999_999
		m.img.Root.Inode.Mtime = 42
		return m.img
	}},
	{"file with holes", func() *rafs.Image {
		m := newModel(rafs.DigestBlake3, rafs.CompressNone, 1)
		m.file("/middle-holes", 5*testChunkSize+10, func(i int) bool { return i == 1 || i == 3 })
		m.file("/tail-hole", 3*testChunkSize, func(i int) bool { return i == 0 })
		m.file("/head-hole", 3*testChunkSize+1, func(i int) bool { return i == 3 })
		m.file("/all-hole", 2*testChunkSize, func(int) bool { return false })
		return m.img
	}},
	{"everything", buildEverything},
}

// buildEverything mixes every kind of inode, two blobs (one with feature bits), a prefetch list,
// blake3 and zstd. It is also the golden image.
func buildEverything() *rafs.Image {
	m := newModel(rafs.DigestBlake3, rafs.CompressZstd, 2)
	m.img.Blobs[1].Features = rafs.BlobFeatureAligned | rafs.BlobFeatureChunkInfoV2
	m.img.Blobs[1].ReadaheadOffset, m.img.Blobs[1].ReadaheadSize = 4096, 8192
	m.dir("/bin", 0o755)
	sh := m.file("/bin/sh", 2*testChunkSize+77, nil)
	m.hardlink("/bin/ash", sh)
	m.symlink("/bin/bash", "sh")
	m.dir("/dev", 0o755)
	m.special("/dev/null", rafs.SIFCHR, mkdev(1, 3))
	m.special("/dev/loop0", rafs.SIFBLK, mkdev(7, 0))
	m.special("/dev/initctl", rafs.SIFIFO, 0)
	m.special("/dev/log", rafs.SIFSOCK, 0)
	m.dir("/etc", 0o755)
	pw := m.file("/etc/passwd", 300, nil)
	pw.Xattrs = []rafs.Xattr{{Name: "user.b", Value: []byte("2")}, {Name: "security.selinux", Value: []byte("system_u:object_r:etc_t:s0\x00")}}
	m.file("/etc/empty", 0, nil)
	m.dir("/home", 0o755)
	h := m.dir("/home/user", 0o700)
	h.UID, h.GID = 1000, 1000
	m.file("/sparse", 4*testChunkSize, func(i int) bool { return i == 2 })
	m.dir("/tmp", 0o1777)
	m.img.Prefetch = []string{"/etc", "/bin/sh", "/"}
	return m.img
}
