package v6

import (
	"fmt"
	"math/rand/v2"
	"strings"

	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/digest"
)

// blobBuilder writes a synthetic uncompressed blob: every chunk stored raw at a 4 KiB aligned
// offset, UncompressedOffset == CompressedOffset, so the file is its own uncompressed view and
// the kernel can use it as an EROFS extra device. Identical chunks are stored once.
type blobBuilder struct {
	id        string
	index     uint32 // blob index in the image
	chunkSize uint64
	data      []byte
	seen      map[rafs.Digest]rafs.Chunk
	count     uint32
}

func newBlobBuilder(index uint32, chunkSize uint32) *blobBuilder {
	return &blobBuilder{
		id:        fmt.Sprintf("%064x", index+0xb10b),
		index:     index,
		chunkSize: uint64(chunkSize),
		seen:      map[rafs.Digest]rafs.Chunk{},
	}
}

// file stores content and returns its chunks; slots listed in holes are left out (they must be
// all zeros in content, so reading the hole gives the same bytes).
func (b *blobBuilder) file(content []byte, holes ...uint64) []rafs.Chunk {
	isHole := map[uint64]bool{}
	for _, h := range holes {
		isHole[h] = true
	}
	var chunks []rafs.Chunk
	for off := uint64(0); off < uint64(len(content)); off += b.chunkSize {
		slot := off / b.chunkSize
		piece := content[off:min(uint64(len(content)), off+b.chunkSize)]
		if isHole[slot] {
			for _, c := range piece {
				if c != 0 {
					panic("hole over non-zero content")
				}
			}
			continue
		}
		d := digest.Sum(rafs.DigestBlake3, piece)
		c, ok := b.seen[d]
		if !ok {
			pos := uint64(len(b.data))
			b.data = append(b.data, piece...)
			b.data = append(b.data, make([]byte, roundUp(uint64(len(b.data)), blockSize)-uint64(len(b.data)))...)
			c = rafs.Chunk{
				Digest: d, BlobIndex: b.index,
				CompressedOffset: pos, CompressedSize: uint32(len(piece)),
				UncompressedOffset: pos, UncompressedSize: uint32(len(piece)),
				Index: b.count,
			}
			b.count++
			b.seen[d] = c
		}
		c.FileOffset = off
		chunks = append(chunks, c)
	}
	return chunks
}

func (b *blobBuilder) blob() *rafs.Blob {
	return &rafs.Blob{
		ID: b.id, ChunkSize: uint32(b.chunkSize), ChunkCount: b.count,
		Compressor: rafs.CompressNone, Digester: rafs.DigestBlake3,
		Features:       rafs.BlobFeatureAligned | rafs.BlobFeatureInlinedChunkDigest,
		CompressedSize: uint64(len(b.data)), UncompressedSize: uint64(len(b.data)),
	}
}

// regular returns a regular-file inode holding content, stored in b.
func (b *blobBuilder) regular(perm uint32, content []byte, holes ...uint64) *rafs.Inode {
	return &rafs.Inode{Mode: rafs.SIFREG | perm, Size: uint64(len(content)), Chunks: b.file(content, holes...)}
}

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	out := make([]byte, n)
	for i := range out {
		out[i] = byte(r.Uint32())
	}
	return out
}

// sample is a model together with the contents of its regular files and its blobs' bytes.
type sample struct {
	img      *rafs.Image
	contents map[*rafs.Inode][]byte
	blobs    [][]byte
}

// richSample builds a model exercising every feature the codec supports, with real data in two
// uncompressed blobs. Chunk size is 4 KiB so small files span several chunks.
func richSample() *sample {
	const cs = 4096
	b0, b1 := newBlobBuilder(0, cs), newBlobBuilder(1, cs)
	s := &sample{contents: map[*rafs.Inode][]byte{}}
	reg := func(b *blobBuilder, perm uint32, content []byte, holes ...uint64) *rafs.Inode {
		in := b.regular(perm, content, holes...)
		s.contents[in] = content
		return in
	}
	// Contents are all prepared before the model so the blob layout is fixed.
	hello := reg(b0, 0o755, randomBytes(1, 3*cs+100)) // contiguous chunks: chunk size rounds up
	dupContent := append(append([]byte{}, randomBytes(1, cs)...), randomBytes(1, cs)...)
	dup := reg(b0, 0o644, dupContent) // the same chunk twice: not contiguous
	sparseContent := make([]byte, 5*cs+10)
	copy(sparseContent, randomBytes(2, cs))
	copy(sparseContent[2*cs:], randomBytes(3, cs))
	sparse := reg(b0, 0o600, sparseContent, 1, 3, 4, 5) // holes in the middle and at the end
	leadingHole := make([]byte, 2*cs)
	copy(leadingHole[cs:], randomBytes(4, cs))
	lead := reg(b0, 0o644, leadingHole, 0)
	small := reg(b0, 0o644, []byte("hello, nydus\n"))
	other := reg(b1, 0o644, randomBytes(5, 2*cs+1))
	owned := reg(b1, 0o640, []byte("owned by a big uid\n"))
	empty := reg(b0, 0o644, nil)
	deepFile := reg(b1, 0o444, []byte("at the bottom\n"))

	m := newModel(cs, b0.blob(), b1.blob())
	s.img = m.img
	s.blobs = [][]byte{b0.data, b1.data}
	m.img.Root.Inode.Mtime, m.img.Root.Inode.MtimeNsec = 1700000000, 5

	m.add("/bin/hello", hello).Xattrs = sortedXattrs(
		rafs.Xattr{Name: "user.comment", Value: []byte("a test binary")},
		rafs.Xattr{Name: "security.nydus", Value: []byte{0, 1, 2, 3}},
		rafs.Xattr{Name: "trusted.empty", Value: []byte{}},
	)
	m.add("/bin/hello-link", hello)
	m.add("/etc/hello-again", hello)
	m.add("/bin/dup", dup)
	m.add("/data/sparse", sparse)
	m.add("/data/leading-hole", lead)
	m.add("/data/empty", empty)
	m.add("/data/small", small).Mtime = 1234567890
	m.add("/other/blob1-file", other)
	o := m.add("/home/user/owned", owned)
	o.UID, o.GID, o.Mtime, o.MtimeNsec = 100000, 200000, 1690000000, 999999999
	h := m.img.Lookup("/home/user").Inode
	h.UID, h.GID, h.Mode = 100000, 200000, rafs.SIFDIR|0o700

	short := m.add("/links/short", symlinkInode("../bin/hello"))
	m.add("/links/short-again", short) // a hard-linked symlink
	m.add("/links/inline-long", symlinkInode(strings.Repeat("d/", 1990)+"end"))
	m.add("/links/plain-long", symlinkInode(strings.Repeat("x", 4095)))
	m.add("/links/dangling", symlinkInode("/nowhere/at/all"))

	m.add("/dev/null", &rafs.Inode{Mode: rafs.SIFCHR | 0o666, Rdev: mkdev(1, 3)})
	m.add("/dev/sda", &rafs.Inode{Mode: rafs.SIFBLK | 0o660, Rdev: mkdev(8, 0), GID: 6})
	m.add("/dev/big", &rafs.Inode{Mode: rafs.SIFCHR | 0o600, Rdev: mkdev(4000, 1000000)})
	m.add("/run/fifo", &rafs.Inode{Mode: rafs.SIFIFO | 0o644})
	m.add("/run/sock", &rafs.Inode{Mode: rafs.SIFSOCK | 0o755})

	opaque := m.add("/xattr-dir", dirInode(0o755))
	opaque.Xattrs = sortedXattrs(
		rafs.Xattr{Name: "trusted.overlay.opaque", Value: []byte("y")},
		rafs.Xattr{Name: "user.big", Value: []byte(strings.Repeat("v", 3000))},
	)
	m.add("/xattr-dir/acl", fileInode(0o644)).Xattrs = []rafs.Xattr{
		{Name: "system.posix_acl_access", Value: minimalACL()},
	}

	// Directories whose dirents need several 4 KiB blocks; names sorting before "." included.
	for i := 0; i < 300; i++ {
		m.add(fmt.Sprintf("/big/entry-with-a-longish-name-%04d", i), fileInode(0o644))
	}
	m.add("/big/!bang", fileInode(0o644))
	m.add("/big/-dash", dirInode(0o755))
	for i := 0; i < 40; i++ {
		m.add(fmt.Sprintf("/mid/%s-%d", strings.Repeat("n", 200), i), symlinkInode("t"))
	}

	deep := ""
	for i := 0; i < 40; i++ {
		deep += fmt.Sprintf("/level%02d", i)
	}
	m.add(deep+"/file", deepFile)

	m.img.Compressor = rafs.CompressNone
	m.img.Prefetch = []string{"/bin", "/etc", "/data/small"}
	withDerived(m.img)
	return s
}

// minimalACL is a valid POSIX access ACL (user::rw-, group::r--, other::r--) in the xattr format
// (linux/posix_acl_xattr.h): version 2, then {tag u16, perm u16, id u32} entries.
func minimalACL() []byte {
	out := le.AppendUint32(nil, 2)
	for _, e := range []struct {
		tag, perm uint16
	}{{0x01, 6}, {0x04, 4}, {0x20, 4}} {
		out = le.AppendUint16(out, e.tag)
		out = le.AppendUint16(out, e.perm)
		out = le.AppendUint32(out, 0xffffffff)
	}
	return out
}
