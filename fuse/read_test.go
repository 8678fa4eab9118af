package fuse

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"

	"github.com/dfnydus/dfnydus/rafs"
)

// modelChunk is one chunk of a hand-made image's regular file:
// its file offset, size and whether it is a hole chunk.
type modelChunk struct {
	off  uint64
	size uint32
	hole bool
}

// modelImage returns an image whose root holds one regular file "f" with the given chunks,
// random chunk bytes served by the returned reader, and the file's expected content.
func modelImage(size uint64, chunks []modelChunk) (*rafs.Image, memReader, []byte) {
	rng := rand.New(rand.NewPCG(3, 4))
	want := make([]byte, size)
	mem := memReader{}
	in := &rafs.Inode{Ino: 2, Mode: rafs.SIFREG | 0o644, Size: size, Nlink: 1}
	for i, mc := range chunks {
		c := rafs.Chunk{FileOffset: mc.off, UncompressedSize: mc.size, CompressedSize: mc.size,
			CompressedOffset: uint64(i) << 24, Index: uint32(i)}
		c.Digest[0], c.Digest[1] = byte(i), byte(i>>8)
		if mc.hole {
			c.Flags |= rafs.ChunkHole
		} else {
			data := make([]byte, mc.size)
			for j := range data {
				data[j] = byte(rng.Uint32() | 1) // never zero, so a missed copy shows
			}
			mem[c.Digest] = data
			copy(want[mc.off:], data)
		}
		in.Chunks = append(in.Chunks, c)
	}
	root := &rafs.Node{Inode: &rafs.Inode{Ino: 1, Mode: rafs.SIFDIR | 0o755, Nlink: 2}}
	root.AddChild(&rafs.Node{Name: "f", Inode: in})
	img := &rafs.Image{Version: 6, ChunkSize: 4096, Root: root,
		Blobs: []*rafs.Blob{{ID: "b0", ChunkSize: 4096}}}
	return img, mem, want
}

// A read returns exactly the file's bytes for any offset and size: chunk boundaries, gaps
// between chunks, hole chunks, a short last chunk and the end of the file.
func TestReadAtMapsRangesToChunks(t *testing.T) {
	img, mem, want := modelImage(40000, []modelChunk{
		{off: 0, size: 4096},
		{off: 4096, size: 4096},
		{off: 8192, size: 4096, hole: true},
		// gap [12288, 20480)
		{off: 20480, size: 4096},
		{off: 24576, size: 4096},
		{off: 28672, size: 1000}, // short chunk, then a gap to the end of the file
	})
	fs, err := newFilesystem(img, mem, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	in := img.Root.Children[0].Inode
	t.Run("through the mount", func(t *testing.T) {
		requireFUSE(t)
		mnt, _ := mountImage(t, img, mem, DefaultOptions())
		for _, mode := range readModes {
			got, err := preadFile(filepath.Join(mnt, "f"), mode.flags, 0, len(want)+100)
			if !bytes.Equal(got, want) || (err != nil && !errors.Is(err, io.EOF)) {
				t.Errorf("%s: read %d bytes (want %d), equal %v, err %v", mode.name, len(got), len(want), bytes.Equal(got, want), err)
			}
		}
	})
	cases := []struct{ off, size int }{
		{0, 1}, {0, 4096}, {0, 4097}, {4095, 2}, {4000, 9000}, {8192, 4096}, {12000, 10000},
		{12288, 8192}, {20479, 2}, {28672, 1000}, {29000, 11000}, {29672, 100}, {39999, 10},
		{40000, 10}, {50000, 10}, {0, 40000}, {0, 1 << 20}, {100, 0},
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for range 200 {
		cases = append(cases, struct{ off, size int }{rng.IntN(41000), rng.IntN(20000)})
	}
	for _, tc := range cases {
		dest := bytes.Repeat([]byte{0xee}, tc.size) // garbage where zeros must be written
		got, h, err := fs.readAt(context.Background(), in, dest, int64(tc.off))
		defer h.release()
		if err != nil {
			t.Fatalf("read [%d, +%d): %v", tc.off, tc.size, err)
		}
		end := min(tc.off+tc.size, len(want))
		var exp []byte
		if tc.off < end {
			exp = want[tc.off:end]
		}
		if !bytes.Equal(got, exp) {
			t.Errorf("read [%d, +%d): got %d bytes, want %d; contents differ: %v", tc.off, tc.size, len(got), len(exp), !bytes.Equal(got, exp))
		}
	}
}

// readMode opens files on the mount with buffered or direct I/O.
var readModes = []struct {
	name  string
	flags int
}{{"buffered", os.O_RDONLY}, {"direct", os.O_RDONLY | unix.O_DIRECT}}

func preadFile(p string, flags int, off int64, n int) ([]byte, error) {
	f, err := os.OpenFile(p, flags, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, n)
	k, err := f.ReadAt(buf, off)
	if k == n {
		err = nil
	}
	return buf[:k], err
}

// A chunk the reader cannot deliver makes exactly the reads that touch it fail with EIO, logged
// with the file's path and the chunk; the rest of the file and other files read correctly.
func TestFailingChunkGivesEIOOnlyWhereTouched(t *testing.T) {
	requireFUSE(t)
	src := filepath.Join(t.TempDir(), "src")
	makeTree(t, src, treeSpec{bigFile: 1 << 20, wideDir: 1, deepDirs: 1})
	b := buildImage(t, src, 6, 4096)
	big := b.img.Lookup("/big").Inode
	const badIndex = 100
	bad := big.Chunks[badIndex]
	core, logs := observer.New(zap.ErrorLevel)
	opts := DefaultOptions()
	opts.Log = zap.New(core)
	r := &failingReader{r: dirReader(t, b.blobDir), bad: map[rafs.Digest]bool{bad.Digest: true}}
	mnt, _ := mountImage(t, b.img, r, opts)
	want, err := os.ReadFile(filepath.Join(src, "big"))
	if err != nil {
		t.Fatal(err)
	}
	badOff := int64(bad.FileOffset)

	for _, mode := range readModes {
		t.Run(mode.name, func(t *testing.T) {
			p := filepath.Join(mnt, "big")
			for _, tc := range []struct {
				name    string
				off     int64
				n       int
				wantEIO bool
			}{
				{"the bad chunk", badOff, 4096, true},
				{"a range across it", badOff - 4096, 3 * 4096, true},
				{"a long read ending in it", badOff - 60000, 60001, true},
				{"the file's start", 0, 64 << 10, false},
				{"the chunk before", badOff - 4096, 4096, false},
				{"the chunk after", badOff + 4096, 4096, false},
				{"the file's end", int64(len(want)) - 8192, 8192, false},
			} {
				got, err := preadFile(p, mode.flags, tc.off, tc.n)
				if tc.wantEIO {
					if !errors.Is(err, unix.EIO) {
						t.Errorf("%s: got %v, want EIO", tc.name, err)
					}
					continue
				}
				if err != nil {
					t.Errorf("%s: %v", tc.name, err)
				} else if !bytes.Equal(got, want[tc.off:tc.off+int64(tc.n)]) {
					t.Errorf("%s: wrong data", tc.name)
				}
			}
			hello, err := os.ReadFile(filepath.Join(mnt, "hello.txt"))
			if err != nil || string(hello) != "hello, world\n" {
				t.Errorf("other file: %q, %v", hello, err)
			}
		})
	}

	entries := logs.FilterMessage("read failed").All()
	if len(entries) == 0 {
		t.Fatal("no error logged")
	}
	fields := entries[0].ContextMap()
	if fields["path"] != "/big" || fields["chunk"] != uint32(bad.Index) || fields["blob"] != b.img.Blobs[bad.BlobIndex].ID {
		t.Errorf("log fields %v do not name /big, chunk %d of blob %s", fields, bad.Index, b.img.Blobs[bad.BlobIndex].ID)
	}
}

// Bytes that fail verification are never returned: a corrupted blob or a reader returning the
// wrong number of bytes gives EIO.
func TestBadChunkDataGivesEIO(t *testing.T) {
	requireFUSE(t)
	src := filepath.Join(t.TempDir(), "src")
	makeTree(t, src, treeSpec{bigFile: 64 << 10, wideDir: 1, deepDirs: 1})
	b := buildImage(t, src, 5, 4096)
	big := b.img.Lookup("/big").Inode
	c := big.Chunks[3]

	corrupt := filepath.Join(t.TempDir(), "blobs")
	if err := os.CopyFS(corrupt, os.DirFS(b.blobDir)); err != nil {
		t.Fatal(err)
	}
	blobFile := filepath.Join(corrupt, b.img.Blobs[c.BlobIndex].ID)
	data, err := os.ReadFile(blobFile)
	if err != nil {
		t.Fatal(err)
	}
	data[c.CompressedOffset+uint64(c.CompressedSize)/2] ^= 0x55
	if err := os.WriteFile(blobFile, data, 0o644); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		r    rafs.ChunkReader
	}{
		{"corrupted blob", dirReader(t, corrupt)},
		{"short chunk from the reader", shortReader{dirReader(t, b.blobDir)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mnt, _ := mountImage(t, b.img, tc.r, DefaultOptions())
			_, err := preadFile(filepath.Join(mnt, "big"), os.O_RDONLY|unix.O_DIRECT, int64(c.FileOffset), 4096)
			if !errors.Is(err, unix.EIO) {
				t.Errorf("got %v, want EIO", err)
			}
		})
	}
}

// shortReader drops the last byte of every chunk.
type shortReader struct{ r rafs.ChunkReader }

func (s shortReader) ReadChunk(ctx context.Context, b *rafs.Blob, c *rafs.Chunk, buf []byte) ([]byte, error) {
	data, err := s.r.ReadChunk(ctx, b, c, buf)
	if err != nil {
		return nil, err
	}
	return data[:len(data)-1], nil
}

// Listing and stat-ing the whole tree reads no chunk; reading one small file reads its chunk
// and nothing else.
func TestMetadataReadsNoData(t *testing.T) {
	requireFUSE(t)
	src := filepath.Join(t.TempDir(), "src")
	makeTree(t, src, fullTree)
	b := buildImage(t, src, 6, 4096)
	counter := newCountingReader(dirReader(t, b.blobDir))
	mnt, _ := mountImage(t, b.img, counter, DefaultOptions())

	if out, err := runCmd("ls", "-lRa", "--full-time", mnt); err != nil {
		t.Fatalf("ls -lR: %v\n%s", err, out)
	}
	snapshotMetadata(t, mnt)
	if n := counter.total.Load(); n != 0 {
		t.Fatalf("metadata walk read %d chunks, want 0", n)
	}

	got, err := os.ReadFile(filepath.Join(mnt, "hello.txt"))
	if err != nil || string(got) != "hello, world\n" {
		t.Fatalf("read hello.txt: %q, %v", got, err)
	}
	chunks := b.img.Lookup("/hello.txt").Inode.Chunks
	if n := counter.total.Load(); n != int64(len(chunks)) || len(chunks) != 1 {
		t.Errorf("reading a one-chunk file read %d chunks (file has %d)", n, len(chunks))
	}
	if k := counter.reads(chunks[0].Digest); k != 1 {
		t.Errorf("the file's own chunk was read %d times", k)
	}
}

// snapshotMetadata does what a metadata-only tool does on every entry: lstat, readlink,
// listxattr and getxattr.
func snapshotMetadata(t *testing.T, root string) {
	t.Helper()
	err := filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if info.Mode()&os.ModeSymlink != 0 {
			if _, err := os.Readlink(p); err != nil {
				return err
			}
		}
		buf := make([]byte, 64<<10)
		n, err := unix.Llistxattr(p, buf)
		if err != nil {
			return fmt.Errorf("listxattr %s: %w", p, err)
		}
		for _, name := range bytes.Split(bytes.TrimSuffix(buf[:n], []byte{0}), []byte{0}) {
			if len(name) == 0 {
				continue
			}
			if _, err := unix.Lgetxattr(p, string(name), make([]byte, 64<<10)); err != nil {
				return fmt.Errorf("getxattr %s %s: %w", p, name, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Reading a file sequentially in the kernel's small requests fetches each chunk once: the
// requests that fall in one chunk share it.
func TestSequentialReadFetchesEachChunkOnce(t *testing.T) {
	requireFUSE(t)
	src := filepath.Join(t.TempDir(), "src")
	makeTree(t, src, treeSpec{bigFile: 8<<20 + 5000, wideDir: 1, deepDirs: 1})
	b := buildImage(t, src, 6, rafs.DefaultChunkSize)
	for _, mode := range readModes {
		t.Run(mode.name, func(t *testing.T) {
			counter := newCountingReader(dirReader(t, b.blobDir))
			mnt, srv := mountImage(t, b.img, counter, DefaultOptions())
			f, err := os.OpenFile(filepath.Join(mnt, "big"), mode.flags, 0)
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 128<<10)
			var got []byte
			for {
				n, err := f.Read(buf)
				got = append(got, buf[:n]...)
				if n == 0 || err != nil {
					break
				}
			}
			want, _ := os.ReadFile(filepath.Join(src, "big"))
			if !bytes.Equal(got, want) {
				t.Fatalf("read %d bytes, content differs from the source's %d", len(got), len(want))
			}
			chunks := b.img.Lookup("/big").Inode.Chunks
			if n := counter.total.Load(); n != int64(len(chunks)) {
				t.Errorf("%d chunk reads for a %d-chunk file", n, len(chunks))
			}
			for i, c := range chunks {
				if k := counter.reads(c.Digest); k != 1 {
					t.Errorf("chunk %d read %d times", i, k)
				}
			}
			// Closing the file's last handle empties the chunk cache (RELEASE is asynchronous).
			if n, _ := srv.fs.cache.stats(); n == 0 {
				t.Error("no chunk cached while the file is open")
			}
			f.Close()
			waitFor(t, func() bool { n, _ := srv.fs.cache.stats(); return n == 0 })
		})
	}
}

// A file whose chunk list breaks the rules fails to open with EIO; the rest of the image works.
func TestBadChunkListFailsOpen(t *testing.T) {
	requireFUSE(t)
	img, mem, want := modelImage(8192, []modelChunk{{off: 0, size: 4096}, {off: 4096, size: 4096}})
	good := &rafs.Node{Name: "good", Inode: img.Root.Children[0].Inode}
	bad := *img.Root.Children[0].Inode
	bad.Ino = 3
	bad.Chunks = []rafs.Chunk{bad.Chunks[1], bad.Chunks[0]} // out of order
	img.Root.RemoveChild("f")
	img.Root.AddChild(good)
	img.Root.AddChild(&rafs.Node{Name: "bad", Inode: &bad})
	mnt, _ := mountImage(t, img, mem, DefaultOptions())
	if _, err := os.ReadFile(filepath.Join(mnt, "bad")); !errors.Is(err, unix.EIO) {
		t.Errorf("open bad: got %v, want EIO", err)
	}
	if got, err := os.ReadFile(filepath.Join(mnt, "good")); err != nil || !bytes.Equal(got, want) {
		t.Errorf("read good: %v", err)
	}
}

func runCmd(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}
