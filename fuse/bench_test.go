package fuse

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	gofuse "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/blob"
	"github.com/dfnydus/dfnydus/rafs/bootstrap"
	"github.com/dfnydus/dfnydus/rafs/builder"
)

// TestPerformanceReport prints the mount's figures next to baselines measured in the same run:
//   - sequential read of a 256 MiB file whose chunks are already in memory, against a minimal
//     go-fuse file served from a []byte with the same mount options, for several option variants;
//   - the same read with the chunks coming through the real read path (fetcher, blob store, zstd
//     decode), next to the plain file, the in-memory chunks and the limits of each (readpath_bench_test.go);
//   - a metadata walk (readdir + lstat of every entry) of a 50k-entry tree, against the kernel's
//     EROFS mounting the same v6 bootstrap over the blob's uncompressed view.
//
// It prints figures and asserts nothing about them. Run it with
//
//	DFNYDUS_FUSE_BENCH=1 go test ./fuse -run TestPerformanceReport -v -timeout 30m
func TestPerformanceReport(t *testing.T) {
	if os.Getenv("DFNYDUS_FUSE_BENCH") == "" {
		t.Skip("set DFNYDUS_FUSE_BENCH=1 to run the performance report")
	}
	requireFUSE(t)
	t.Run("sequential-read", benchSequentialRead)
	t.Run("read-path", benchReadPath)
	t.Run("metadata-walk", benchMetadataWalk)
}

// readVariant is one set of mount options tried by the sequential-read benchmark.
type readVariant struct {
	name      string
	opts      func(*Options)
	readAhead int  // KiB written to the mount's bdi read_ahead_kb after mounting; 0 leaves it
	small     bool // the image with 4 KiB chunks instead of 1 MiB
}

func benchSequentialRead(t *testing.T) {
	const size = 256 << 20
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	data := make([]byte, size)
	_, _ = rand.NewChaCha8([32]byte{1}).Read(data)
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "big"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	b := buildImage(t, src, 6, rafs.DefaultChunkSize)
	mem := loadAll(t, b.img, dirReader(t, b.blobDir))
	small := buildImage(t, src, 6, 4096)
	smallMem := loadAll(t, small.img, dirReader(t, small.blobDir))

	variants := []readVariant{
		{name: "defaults", opts: func(o *Options) {}},
		{name: "4 KiB chunks", opts: func(o *Options) {}, small: true},
		{name: "MaxWrite=128K", opts: func(o *Options) { o.MaxWrite = 128 << 10 }},
		{name: "no KEEP_CACHE", opts: func(o *Options) { o.noKeepCache = true }},
		{name: "SyncRead", opts: func(o *Options) { o.syncRead = true }},
		{name: "MaxBackground=12", opts: func(o *Options) { o.MaxBackground = 12 }},
		{name: "read_ahead_kb=128", opts: func(o *Options) {}, readAhead: 128},
		{name: "read_ahead_kb=4096", opts: func(o *Options) {}, readAhead: 4096},
	}
	if only := os.Getenv("DFNYDUS_FUSE_BENCH_VARIANT"); only != "" {
		variants = slices.DeleteFunc(variants, func(v readVariant) bool { return !strings.Contains(v.name, only) })
	}
	const rounds = 5
	t.Logf("sequential read of %d MiB, 1 MiB read(2) calls, page cache dropped before each round (median of %d); "+
		"'reopen' is a second open+read without dropping", size>>20, rounds)
	t.Logf("%-20s %12s %12s %7s %14s %14s", "variant", "ours MB/s", "plain MB/s", "ratio", "ours reopen", "plain reopen")
	for _, v := range variants {
		opts := DefaultOptions()
		v.opts(&opts)
		img, r := b.img, rafs.ChunkReader(mem)
		if v.small {
			img, r = small.img, smallMem
		}
		ours, _ := mountImage(t, img, r, opts)
		plain := mountPlain(t, data, opts)
		if err := SetReadAhead(plain, opts.MaxReadAhead); err != nil { // as Mount did for ours
			t.Fatal(err)
		}
		setReadAhead(t, ours, v.readAhead)
		setReadAhead(t, plain, v.readAhead)
		var o, p []float64
		for range rounds { // interleaved, so drift affects both alike
			o = append(o, readThroughput(t, filepath.Join(ours, "big"), true))
			p = append(p, readThroughput(t, filepath.Join(plain, "big"), true))
		}
		mo, mp := median(o), median(p)
		ro := readThroughput(t, filepath.Join(ours, "big"), false)
		rp := readThroughput(t, filepath.Join(plain, "big"), false)
		t.Logf("%-20s %12.0f %12.0f %7.2f %14.0f %14.0f", v.name, mo, mp, mo/mp, ro, rp)
	}
}

// readThroughput reads p to the end in 1 MiB read(2) calls and returns MB/s. With drop, the
// file's page cache is dropped first, so every byte goes through the filesystem.
func readThroughput(t *testing.T, p string, drop bool) float64 {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if drop {
		if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 1<<20)
	start := time.Now()
	var n int64
	for {
		k, err := f.Read(buf)
		n += int64(k)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return float64(n) / time.Since(start).Seconds() / 1e6
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// setReadAhead writes the readahead window (KiB) of the filesystem mounted at mnt; 0 leaves it.
func setReadAhead(t *testing.T, mnt string, kib int) {
	t.Helper()
	if kib == 0 {
		return
	}
	var st unix.Stat_t
	if err := unix.Stat(mnt, &st); err != nil {
		t.Fatal(err)
	}
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	if err := os.WriteFile(p, []byte(fmt.Sprint(kib)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// memFile is the baseline: the simplest go-fuse file served from a []byte.
type memFile struct {
	gofuse.Inode
	data      []byte
	keepCache bool
}

func (m *memFile) Open(ctx context.Context, flags uint32) (gofuse.FileHandle, uint32, syscall.Errno) {
	if m.keepCache {
		return nil, fuse.FOPEN_KEEP_CACHE, 0
	}
	return nil, 0, 0
}

func (m *memFile) Read(ctx context.Context, f gofuse.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	end := min(off+int64(len(dest)), int64(len(m.data)))
	if off >= end {
		return fuse.ReadResultData(nil), 0
	}
	return fuse.ReadResultData(m.data[off:end]), 0
}

func (m *memFile) Getattr(ctx context.Context, f gofuse.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = fuse.S_IFREG | 0o444
	out.Size = uint64(len(m.data))
	return 0
}

// mountPlain mounts a directory holding one memFile named "big", with the go-fuse options the
// image mount would get from opts.
func mountPlain(t *testing.T, data []byte, opts Options) string {
	t.Helper()
	mnt := filepath.Join(t.TempDir(), "plain")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	root := &gofuse.Inode{}
	gopts := GoFuseOptions(opts)
	gopts.RootStableAttr = nil
	gopts.OnAdd = func(ctx context.Context) {
		f := &memFile{data: data, keepCache: !opts.noKeepCache}
		root.AddChild("big", root.NewPersistentInode(ctx, f, gofuse.StableAttr{Ino: 2}), false)
	}
	srv, err := gofuse.Mount(mnt, root, gopts)
	if err != nil {
		t.Fatalf("mount plain go-fuse file: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	return mnt
}

func benchMetadataWalk(t *testing.T) {
	const dirs, perDir = 50, 1000
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	for d := range dirs {
		sub := filepath.Join(src, fmt.Sprintf("dir%02d", d))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		for f := range perDir {
			var data []byte
			if f%100 == 0 {
				data = []byte(strings.Repeat("x", 100+f))
			}
			if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("file%04d", f)), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	opts := builder.DefaultOptions()
	blobDir := filepath.Join(dir, "blobs")
	res, err := builder.Build(context.Background(), opts, blobDir, []builder.Layer{builder.PathLayer(src)})
	if err != nil {
		t.Fatal(err)
	}
	img, err := bootstrap.Decode(res.Bootstrap)
	if err != nil {
		t.Fatal(err)
	}
	boot := filepath.Join(dir, "image.boot")
	if err := os.WriteFile(boot, res.Bootstrap, 0o644); err != nil {
		t.Fatal(err)
	}
	view := uncompressedView(t, img, blobDir, dir)
	reader := dirReader(t, blobDir)

	const rounds = 5
	var oursCold, oursWarm, kernCold, kernWarm []float64
	var entries int
	for range rounds {
		mnt, srv := mountImage(t, img, reader, DefaultOptions())
		n, cold := walk(t, mnt)
		_, warm := walk(t, mnt)
		entries = n
		oursCold, oursWarm = append(oursCold, cold), append(oursWarm, warm)
		if err := srv.Unmount(); err != nil {
			t.Fatal(err)
		}

		emnt := mountEROFS(t, boot, view)
		kn, kcold := walk(t, emnt)
		_, kwarm := walk(t, emnt)
		if kn != n {
			t.Errorf("EROFS walk saw %d entries, ours %d", kn, n)
		}
		kernCold, kernWarm = append(kernCold, kcold), append(kernWarm, kwarm)
		if err := unix.Unmount(emnt, 0); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("metadata walk (readdir + lstat) of %d entries, median of %d fresh mounts", entries, rounds)
	t.Logf("%-12s %12s %12s %7s", "", "ours ms", "EROFS ms", "ratio")
	t.Logf("%-12s %12.1f %12.1f %7.2f", "first walk", median(oursCold), median(kernCold), median(oursCold)/median(kernCold))
	t.Logf("%-12s %12.1f %12.1f %7.2f", "second walk", median(oursWarm), median(kernWarm), median(oursWarm)/median(kernWarm))
}

// walk lists every directory and lstats every entry under root, returning the number of entries
// and the milliseconds it took.
func walk(t *testing.T, root string) (int, float64) {
	t.Helper()
	n := 0
	start := time.Now()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		n++
		return unix.Lstat(p, &st)
	})
	if err != nil {
		t.Fatal(err)
	}
	return n, float64(time.Since(start).Microseconds()) / 1000
}

// uncompressedView writes the image's (single) blob's uncompressed view, which EROFS reads as
// its extra device.
func uncompressedView(t *testing.T, img *rafs.Image, blobDir, dir string) string {
	t.Helper()
	if len(img.Blobs) != 1 {
		t.Fatalf("image has %d blobs, want 1", len(img.Blobs))
	}
	var chunks []rafs.Chunk
	seen := map[*rafs.Inode]bool{}
	_ = img.Walk(func(_ string, n *rafs.Node) error {
		if !seen[n.Inode] {
			seen[n.Inode] = true
			chunks = append(chunks, n.Inode.Chunks...)
		}
		return nil
	})
	p := filepath.Join(dir, "blob.view")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := blob.NewDir(blobDir)
	defer r.Close()
	if err := blob.WriteUncompressedView(f, r, img.Blobs[0], chunks); err != nil {
		t.Fatal(err)
	}
	return p
}

// mountEROFS mounts a v6 bootstrap with the kernel's EROFS, the blob view as its device.
func mountEROFS(t *testing.T, boot, view string) string {
	t.Helper()
	mnt := filepath.Join(t.TempDir(), "erofs")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(boot, mnt, "erofs", unix.MS_RDONLY, "device="+view); err != nil {
		t.Skipf("kernel EROFS mount: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(mnt, 0) })
	return mnt
}
