package unpack

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/dfnydus/dfnydus/internal/fstree"
	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/digest"
	"golang.org/x/sys/unix"
)

// memReader is a ChunkReader over a map of chunk digest -> bytes.
type memReader struct {
	mu     sync.Mutex
	chunks map[rafs.Digest][]byte
	reads  int
}

func newMemReader() *memReader { return &memReader{chunks: map[rafs.Digest][]byte{}} }

func (m *memReader) add(data []byte) rafs.Digest {
	d := digest.Sum(rafs.DigestSHA256, data)
	m.mu.Lock()
	m.chunks[d] = bytes.Clone(data)
	m.mu.Unlock()
	return d
}

func (m *memReader) ReadChunk(ctx context.Context, blob *rafs.Blob, c *rafs.Chunk, buf []byte) ([]byte, error) {
	m.mu.Lock()
	data, ok := m.chunks[c.Digest]
	m.reads++
	m.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("no chunk %s in blob %s", c.Digest, blob.ID)
	}
	if cap(buf) < len(data) {
		buf = make([]byte, len(data))
	}
	return buf[:copy(buf[:len(data)], data)], nil
}

// spec describes one entry of a test image.
type spec struct {
	path   string
	mode   uint32 // S_IF* type bits | permission bits
	uid    uint32
	gid    uint32
	mtime  uint64
	nsec   uint32
	data   string // regular files; chunk-sized runs of zeros become holes
	size   uint64 // regular files: when larger than len(data), the rest is a trailing hole
	target string // symlinks
	rdev   uint64 // devices
	xattrs map[string]string
	linkOf string // another name for the inode of this path (all other fields ignored)
}

// buildModel makes an image from specs (parents before children, "/" first) whose chunks are
// served by the returned reader, cutting file data into chunkSize pieces.
func buildModel(t testing.TB, chunkSize int, specs ...spec) (*rafs.Image, *memReader) {
	t.Helper()
	src := newMemReader()
	img := &rafs.Image{Version: 6, ChunkSize: uint32(chunkSize), Digester: rafs.DigestSHA256,
		Blobs: []*rafs.Blob{{ID: "blob0", ChunkSize: uint32(chunkSize)}}}
	nodes := map[string]*rafs.Node{}
	for _, s := range specs {
		var ino *rafs.Inode
		if s.linkOf != "" {
			ino = nodes[s.linkOf].Inode
		} else {
			ino = &rafs.Inode{Mode: s.mode, UID: s.uid, GID: s.gid, Mtime: s.mtime, MtimeNsec: s.nsec, Rdev: s.rdev, Symlink: s.target}
			for k, v := range s.xattrs {
				ino.Xattrs = append(ino.Xattrs, rafs.Xattr{Name: k, Value: []byte(v)})
			}
			sort.Slice(ino.Xattrs, func(i, j int) bool { return ino.Xattrs[i].Name < ino.Xattrs[j].Name })
			if ino.IsReg() {
				ino.Size = max(uint64(len(s.data)), s.size)
				for off := 0; off < len(s.data); off += chunkSize {
					piece := []byte(s.data[off:min(off+chunkSize, len(s.data))])
					if bytes.Count(piece, []byte{0}) == len(piece) {
						ino.HasHole = true
						continue
					}
					ino.Chunks = append(ino.Chunks, rafs.Chunk{Digest: src.add(piece), UncompressedSize: uint32(len(piece)), FileOffset: uint64(off)})
				}
			}
			if ino.IsSymlink() {
				ino.Size = uint64(len(s.target))
			}
		}
		n := &rafs.Node{Name: path.Base(s.path), Inode: ino}
		if s.path == "/" {
			img.Root = n
		} else {
			parent := nodes[path.Dir(s.path)]
			if parent == nil {
				t.Fatalf("spec %s: parent not listed before it", s.path)
			}
			parent.AddChild(n)
		}
		nodes[s.path] = n
	}
	return img, src
}

// expectTree is what fstree.Snapshot should record for img, computed straight from the model (the
// unpack code is not involved): every node, file content rebuilt from the reader's chunks.
func expectTree(t testing.TB, img *rafs.Image, src *memReader) map[string]fstree.Entry {
	t.Helper()
	m := map[string]fstree.Entry{}
	groups := map[*rafs.Inode][]string{}
	err := img.Walk(func(p string, n *rafs.Node) error {
		ino := n.Inode
		e := fstree.Entry{Path: p, Mode: ino.Mode & 0o7777, UID: ino.UID, GID: ino.GID,
			Mtime: fstree.Timestamp{Sec: int64(ino.Mtime), Nsec: int64(ino.MtimeNsec)}}
		switch ino.Mode & rafs.SIFMT {
		case rafs.SIFDIR:
			e.Type = fstree.TypeDir
		case rafs.SIFREG:
			e.Type = fstree.TypeFile
			content := make([]byte, ino.Size)
			for _, c := range ino.Chunks {
				if c.Flags&rafs.ChunkHole == 0 {
					copy(content[c.FileOffset:], src.chunks[c.Digest])
				}
			}
			sum := sha256.Sum256(content)
			e.Size, e.ContentSHA256 = int64(ino.Size), hex.EncodeToString(sum[:])
		case rafs.SIFLNK:
			e.Type, e.Mode, e.LinkTarget = fstree.TypeSymlink, 0o777, ino.Symlink
		case rafs.SIFCHR:
			e.Type, e.Rdev = fstree.TypeChar, ino.Rdev
		case rafs.SIFBLK:
			e.Type, e.Rdev = fstree.TypeBlock, ino.Rdev
		case rafs.SIFIFO:
			e.Type = fstree.TypeFifo
		case rafs.SIFSOCK:
			e.Type = fstree.TypeSocket
		}
		for _, x := range ino.Xattrs {
			if e.Xattrs == nil {
				e.Xattrs = map[string]string{}
			}
			e.Xattrs[x.Name] = string(x.Value)
		}
		if !ino.IsDir() {
			groups[ino] = append(groups[ino], p)
		}
		m[p] = e
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range groups {
		if len(g) < 2 {
			continue
		}
		sort.Strings(g)
		for _, p := range g {
			e := m[p]
			e.HardLinkGroup = g[0]
			m[p] = e
		}
	}
	return m
}

// withoutSockets drops sockets and their hard links: tar cannot hold them.
func withoutSockets(m map[string]fstree.Entry) map[string]fstree.Entry {
	out := map[string]fstree.Entry{}
	for p, e := range m {
		if e.Type != fstree.TypeSocket {
			out[p] = e
		}
	}
	return out
}

// everyTypeSpecs is an image with every file type, special mode bits, owners, xattrs (on files,
// dirs, symlinks and devices), nanosecond mtimes, holes and hard links, chunked at 4 KiB.
func everyTypeSpecs() []spec {
	const k4 = 4096
	data := strings.Repeat("a", k4) + strings.Repeat("\x00", 2*k4) + strings.Repeat("b", k4+100)
	return []spec{
		{path: "/", mode: rafs.SIFDIR | 0o755, mtime: 1_700_000_000, nsec: 1},
		{path: "/bin", mode: rafs.SIFDIR | 0o2755, uid: 2, gid: 3, mtime: 1_600_000_000, nsec: 999_999_999, xattrs: map[string]string{"user.dir": "d"}},
		{path: "/bin/su", mode: rafs.SIFREG | 0o4755, uid: 0, gid: 0, mtime: 1_500_000_000, nsec: 5, data: "ELF\x7f su",
			xattrs: map[string]string{"security.capability": "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"}},
		{path: "/bin/sparse", mode: rafs.SIFREG | 0o640, uid: 1000, gid: 1000, mtime: 1_400_000_000, nsec: 123, data: data, size: uint64(len(data)) + 3*k4},
		{path: "/bin/empty", mode: rafs.SIFREG | 0o600, mtime: 1},
		{path: "/bin/abs", mode: rafs.SIFLNK | 0o777, uid: 7, gid: 8, mtime: 2, nsec: 3, target: "/etc/passwd", xattrs: map[string]string{"trusted.sym": "s"}},
		{path: "/bin/up", mode: rafs.SIFLNK | 0o777, mtime: 4, target: "../../../../x"},
		{path: "/dev", mode: rafs.SIFDIR | 0o755, mtime: 10},
		{path: "/dev/null", mode: rafs.SIFCHR | 0o666, mtime: 11, rdev: unix.Mkdev(1, 3), xattrs: map[string]string{"trusted.dev": "n"}},
		{path: "/dev/sda1", mode: rafs.SIFBLK | 0o660, gid: 6, mtime: 12, rdev: unix.Mkdev(8, 1)},
		{path: "/dev/big", mode: rafs.SIFCHR | 0o600, mtime: 13, rdev: unix.Mkdev(4095, 1<<20-1)},
		{path: "/dev/fifo", mode: rafs.SIFIFO | 0o620, mtime: 14, nsec: 14},
		{path: "/dev/sock", mode: rafs.SIFSOCK | 0o755, mtime: 15},
		{path: "/tmp", mode: rafs.SIFDIR | 0o1777, mtime: 20},
		{path: "/tmp/closed", mode: rafs.SIFDIR | 0o000, mtime: 21},
		{path: "/tmp/closed/f", mode: rafs.SIFREG | 0o000, mtime: 22, data: "inside a mode-0 dir"},
		{path: "/tmp/su-link", linkOf: "/bin/su"},
		{path: "/tmp/zz-abs-link", linkOf: "/bin/abs"},
		{path: "/usr", mode: rafs.SIFDIR | 0o755, mtime: 30},
		{path: "/usr/sparse2", linkOf: "/bin/sparse"},
		{path: "/usr/sock2", linkOf: "/dev/sock"},
	}
}
