package unpack

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dfnydus/dfnydus/internal/fstree"
	"github.com/dfnydus/dfnydus/rafs"
	"golang.org/x/sys/unix"
)

// fuzzMaxFileSize keeps fuzzed files small enough to rebuild in memory for the comparison.
const fuzzMaxFileSize = 1 << 20

// Opcodes of the little program decodeModel runs to build a tree.
const (
	opDir     = iota // name, mode u16, meta: push a directory
	opFile           // name, mode u16, size, chunk count (u8%4) x (offset u16, length u8+1, fill u8, hole u8), meta
	opSymlink        // name, target, meta
	opLink           // name, node index u8: another name for an earlier node's inode
	opPop            // leave the current directory
	opSpecial        // name, kind u8, major u8, minor u16, mode u16, meta
	opXattr          // kind u8, name suffix, value: an xattr on the last node made
	opShare          // node index u8: put an earlier *Node itself in the current directory again
	opCount
)

type fuzzInput struct{ b []byte }

func (in *fuzzInput) u8() byte {
	if len(in.b) == 0 {
		return 0
	}
	v := in.b[0]
	in.b = in.b[1:]
	return v
}

func (in *fuzzInput) u16() uint16 { return uint16(in.u8())<<8 | uint16(in.u8()) }
func (in *fuzzInput) u32() uint32 { return uint32(in.u16())<<16 | uint32(in.u16()) }

func (in *fuzzInput) str(maxLen int) string {
	n := min(int(in.u8())%(maxLen+1), len(in.b))
	s := string(in.b[:n])
	in.b = in.b[n:]
	return s
}

// decodeModel builds an image from fuzz bytes. Names, sizes, offsets and sharing are arbitrary (so
// hostile); xattr names are limited to user.* and trusted.* and device numbers to what dev_t holds,
// so that a tree ToDir accepts can be compared exactly.
func decodeModel(data []byte) (*rafs.Image, *memReader) {
	in := &fuzzInput{b: data}
	src := newMemReader()
	root := &rafs.Node{Inode: &rafs.Inode{Mode: rafs.SIFDIR | uint32(in.u16())&0o7777}}
	img := &rafs.Image{Version: 6, Root: root, Blobs: []*rafs.Blob{{ID: "fuzz"}}}
	stack := []*rafs.Node{root}
	all := []*rafs.Node{root}
	var last *rafs.Node
	meta := func(ino *rafs.Inode) {
		ino.UID, ino.GID = uint32(in.u8()), uint32(in.u8())
		ino.Mtime = uint64(in.u32())
		raw := in.u32()
		ino.MtimeNsec = raw % 1e9
		if raw == 0xffffffff {
			ino.MtimeNsec = 1e9
		}
	}
	add := func(n *rafs.Node) {
		dir := stack[len(stack)-1]
		n.Parent = dir
		dir.Children = append(dir.Children, n)
		all = append(all, n)
		last = n
	}
	for len(in.b) > 0 {
		switch in.u8() % opCount {
		case opDir:
			n := &rafs.Node{Name: in.str(12), Inode: &rafs.Inode{Mode: rafs.SIFDIR | uint32(in.u16())&0o7777}}
			meta(n.Inode)
			add(n)
			stack = append(stack, n)
		case opFile:
			n := &rafs.Node{Name: in.str(12), Inode: &rafs.Inode{Mode: rafs.SIFREG | uint32(in.u16())&0o7777}}
			switch s := in.u8(); s % 8 {
			case 7:
				n.Inode.Size = 1 << 62
			case 6:
				n.Inode.Size = uint64(in.u16()) << 8
			default:
				n.Inode.Size = uint64(in.u16())
			}
			for range in.u8() % 4 {
				c := rafs.Chunk{FileOffset: uint64(in.u16()), UncompressedSize: uint32(in.u8()) + 1}
				c.Digest = src.add(bytes.Repeat([]byte{in.u8()}, int(c.UncompressedSize)))
				if in.u8()%4 == 0 {
					c.Flags |= rafs.ChunkHole
				}
				n.Inode.Chunks = append(n.Inode.Chunks, c)
			}
			meta(n.Inode)
			add(n)
		case opSymlink:
			n := &rafs.Node{Name: in.str(12), Inode: &rafs.Inode{Mode: rafs.SIFLNK | 0o777, Symlink: in.str(40)}}
			meta(n.Inode)
			add(n)
		case opLink:
			name := in.str(12)
			add(&rafs.Node{Name: name, Inode: all[int(in.u8())%len(all)].Inode})
		case opPop:
			if len(stack) > 1 {
				stack = stack[:len(stack)-1]
			}
		case opSpecial:
			types := []uint32{rafs.SIFCHR, rafs.SIFBLK, rafs.SIFIFO, rafs.SIFSOCK}
			n := &rafs.Node{Name: in.str(12), Inode: &rafs.Inode{}}
			typ := types[in.u8()%4]
			if typ == rafs.SIFCHR || typ == rafs.SIFBLK {
				n.Inode.Rdev = unix.Mkdev(uint32(in.u8()), uint32(in.u16()))
			}
			n.Inode.Mode = typ | uint32(in.u16())&0o7777
			meta(n.Inode)
			add(n)
		case opXattr:
			prefix := []string{"user.", "trusted."}[in.u8()%2]
			x := rafs.Xattr{Name: prefix + in.str(8), Value: []byte(in.str(16))}
			if last != nil {
				last.Inode.Xattrs = append(last.Inode.Xattrs, x)
			}
		case opShare:
			n := all[int(in.u8())%len(all)]
			dir := stack[len(stack)-1]
			dir.Children = append(dir.Children, n)
		}
	}
	return img, src
}

// fuzzProgram encodes seed programs for decodeModel.
type fuzzProgram struct{ b []byte }

func (p *fuzzProgram) op(op byte, args ...any) *fuzzProgram {
	p.b = append(p.b, op)
	for _, a := range args {
		switch v := a.(type) {
		case string:
			p.b = append(p.b, byte(len(v)))
			p.b = append(p.b, v...)
		case byte:
			p.b = append(p.b, v)
		case uint16:
			p.b = binary.BigEndian.AppendUint16(p.b, v)
		case uint32:
			p.b = binary.BigEndian.AppendUint32(p.b, v)
		default:
			panic("bad seed argument")
		}
	}
	return p
}

func seedMeta(uid, gid byte, sec, nsec uint32) []any { return []any{uid, gid, sec, nsec} }

func fuzzSeeds() [][]byte {
	m := seedMeta(1, 2, 1_700_000_000, 5)
	with := func(args []any, more ...any) []any { return append(append([]any{}, args...), more...) }
	valid := (&fuzzProgram{b: []byte{0x01, 0xed}}).
		op(opDir, with([]any{"etc", uint16(0o755)}, m...)...).
		op(opFile, with([]any{"passwd", uint16(0o644), byte(0), uint16(600), byte(2),
			uint16(0), byte(255), byte('a'), byte(1), uint16(400), byte(100), byte('b'), byte(0)}, m...)...).
		op(opXattr, byte(0), "x", "val").
		op(opSymlink, with([]any{"abs", "/etc/shadow"}, m...)...).
		op(opPop).
		op(opLink, "hard", byte(2)).
		op(opSpecial, with([]any{"null", byte(0), byte(1), uint16(3), uint16(0o666)}, m...)...).
		op(opSpecial, with([]any{"fifo", byte(2), uint16(0o600)}, m...)...).
		op(opSpecial, with([]any{"sock", byte(3), uint16(0o755)}, m...)...).
		op(opDir, with([]any{"tmp", uint16(0o1777)}, m...)...)
	escape := (&fuzzProgram{b: []byte{0x01, 0xed}}).
		op(opSymlink, with([]any{"a", "../sentinel"}, m...)...).
		op(opDir, with([]any{"a", uint16(0o755)}, m...)...).
		op(opFile, with([]any{"f", uint16(0o644), byte(0), uint16(1), byte(1), uint16(0), byte(0), byte('x'), byte(1)}, m...)...)
	dotdot := (&fuzzProgram{b: []byte{0x01, 0xed}}).
		op(opFile, with([]any{"../../x", uint16(0o644), byte(0), uint16(0), byte(0)}, m...)...)
	linkDir := (&fuzzProgram{b: []byte{0x01, 0xed}}).
		op(opDir, with([]any{"d", uint16(0o755)}, m...)...).
		op(opPop).
		op(opLink, "e", byte(1))
	shared := (&fuzzProgram{b: []byte{0x01, 0xed}}).
		op(opDir, with([]any{"d", uint16(0o755)}, m...)...).
		op(opShare, byte(0))
	huge := (&fuzzProgram{b: []byte{0x01, 0xed}}).
		op(opFile, with([]any{"big", uint16(0o644), byte(7), byte(1), uint16(0xffff), byte(255), byte('z'), byte(1)}, m...)...)
	return [][]byte{valid.b, escape.b, dotdot.b, linkDir.b, shared.b, huge.b}
}

// FuzzToDir: whatever tree the bytes describe, ToDir never writes outside its output directory and
// never panics; when it succeeds the output is exactly the model, and when ToTar succeeds its
// stream holds exactly the model less sockets.
func FuzzToDir(f *testing.F) {
	if os.Geteuid() != 0 {
		f.Skip("needs root: creates devices and sets owners")
	}
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		img, src := decodeModel(data)
		base := fastTempDir(t)
		sentinel := filepath.Join(base, "sentinel")
		if err := os.Mkdir(sentinel, 0o755); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(base, "out")
		opts := Options{MaxFileSize: fuzzMaxFileSize, Concurrency: 2}
		dirErr := ToDir(context.Background(), img, src, out, opts)
		assertEmpty(t, sentinel)
		if ents, _ := os.ReadDir(base); len(ents) > 2 {
			t.Fatalf("entries appeared beside out: %v", ents)
		}
		var buf bytes.Buffer
		tarErr := ToTar(context.Background(), img, src, &buf, opts)
		if dirErr != nil && tarErr != nil {
			return
		}
		want := expectTree(t, img, src)
		if dirErr == nil {
			got, err := fstree.Snapshot(out, fstree.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if d := fstree.Diff(want, got); d != nil {
				t.Fatalf("ToDir output differs from the model:\n%s", strings.Join(d, "\n"))
			}
		}
		if tarErr == nil {
			got, err := fstree.FromTar(&buf, fstree.Options{})
			if err != nil {
				t.Fatalf("ToTar wrote a stream FromTar rejects: %v", err)
			}
			if d := fstree.Diff(withoutSockets(want), got); d != nil {
				t.Fatalf("ToTar stream differs from the model:\n%s", strings.Join(d, "\n"))
			}
		}
	})
}

// fastTempDir returns a fresh directory on tmpfs (/dev/shm) when there is one: metadata operations
// on this machine's ext4 take around a millisecond each, which would throttle fuzzing to a crawl.
func fastTempDir(t *testing.T) string {
	var st unix.Statfs_t
	if err := unix.Statfs("/dev/shm", &st); err != nil || st.Type != unix.TMPFS_MAGIC {
		return t.TempDir()
	}
	dir, err := os.MkdirTemp("/dev/shm", "unpack-fuzz-")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func TestFuzzSeedsCoverBothOutcomes(t *testing.T) {
	requireRoot(t)
	wantOK := []bool{true, false, false, false, false, false}
	for i, s := range fuzzSeeds() {
		img, src := decodeModel(s)
		err := ToDir(context.Background(), img, src, t.TempDir(), Options{MaxFileSize: fuzzMaxFileSize})
		if (err == nil) != wantOK[i] {
			t.Errorf("seed %d: ToDir error %v, want success %v", i, err, wantOK[i])
		}
	}
}
