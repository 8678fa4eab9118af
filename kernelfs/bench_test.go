package kernelfs

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
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dfnydus/dfnydus/fuse"
	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/blob"
)

// TestKernelModeReport prints, side by side in one run, kernel mode (EROFS over our FUSE view
// files) against the FUSE mode and against plain kernel EROFS over a local view file (metadata
// walk), or a local file (sequential read): wall time and CPU seconds (getrusage of this process,
// which runs the reader and both FUSE servers; kernel work done in worker threads is not in it),
// medians of 3. It asserts nothing about the figures. Run it with
//
//	DFNYDUS_KERNEL_BENCH=1 go test ./kernelfs -run TestKernelModeReport -v -timeout 30m
func TestKernelModeReport(t *testing.T) {
	if os.Getenv("DFNYDUS_KERNEL_BENCH") == "" {
		t.Skip("set DFNYDUS_KERNEL_BENCH=1 to run the kernel-mode report")
	}
	requireKernel(t)
	t.Run("metadata-walk", benchWalk)
	t.Run("sequential-read", benchRead)
}

const benchRounds = 3

// sample is one measurement: wall seconds and CPU seconds (user + system) of this process.
type sample struct{ wall, cpu float64 }

func measure(t *testing.T, f func()) sample {
	t.Helper()
	var a, b unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &a)
	start := time.Now()
	f()
	wall := time.Since(start).Seconds()
	_ = unix.Getrusage(unix.RUSAGE_SELF, &b)
	cpu := func(r unix.Rusage) float64 {
		return float64(r.Utime.Sec+r.Stime.Sec) + float64(r.Utime.Usec+r.Stime.Usec)/1e6
	}
	return sample{wall: wall, cpu: cpu(b) - cpu(a)}
}

func medianOf(ss []sample) sample {
	w, c := make([]float64, len(ss)), make([]float64, len(ss))
	for i, s := range ss {
		w[i], c[i] = s.wall, s.cpu
	}
	slices.Sort(w)
	slices.Sort(c)
	return sample{wall: w[len(w)/2], cpu: c[len(c)/2]}
}

// writeView writes blob 0's uncompressed view to a local file, what plain EROFS mounts.
func writeView(t *testing.T, b built, dir string) string {
	t.Helper()
	views, err := newViews(b.img)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "blob.view")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var chunks []rafs.Chunk
	for _, c := range views[0].chunks {
		chunks = append(chunks, *c)
	}
	if err := blob.WriteUncompressedView(f, dirReader(t, b.blobDir), views[0].blob, chunks); err != nil {
		t.Fatal(err)
	}
	return p
}

// mountPlainEROFS mounts the bootstrap with the kernel's EROFS over a local view file.
func mountPlainEROFS(t *testing.T, b built, view string) (string, func()) {
	t.Helper()
	dir := t.TempDir()
	boot := filepath.Join(dir, "image.boot")
	if err := os.WriteFile(boot, b.raw, 0o644); err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(boot, mnt, "erofs", unix.MS_RDONLY, "device="+view); err != nil {
		t.Fatalf("plain EROFS mount: %v", err)
	}
	return mnt, func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	}
}

func mountKernelBench(t *testing.T, b built, r rafs.ChunkReader) (string, *Server) {
	t.Helper()
	dir := t.TempDir()
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := Mount(mnt, filepath.Join(dir, "work"), b.img, b.raw, r, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return mnt, s
}

func mountFUSEBench(t *testing.T, b built, r rafs.ChunkReader) (string, *fuse.Server) {
	t.Helper()
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := fuse.Mount(mnt, b.img, r, fuse.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	return mnt, s
}

func benchWalk(t *testing.T) {
	const dirs, perDir = 50, 1000
	src := filepath.Join(t.TempDir(), "src")
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
	b := buildV6(t, src, 0)
	view := writeView(t, b, t.TempDir())
	r := dirReader(t, b.blobDir)

	modes := []struct {
		name  string
		mount func() (string, func())
	}{
		{"kernel mode", func() (string, func()) {
			mnt, s := mountKernelBench(t, b, r)
			return mnt, func() {
				if err := s.Unmount(); err != nil {
					t.Error(err)
				}
			}
		}},
		{"FUSE mode", func() (string, func()) {
			mnt, s := mountFUSEBench(t, b, r)
			return mnt, func() {
				if err := s.Unmount(); err != nil {
					t.Error(err)
				}
			}
		}},
		{"plain EROFS", func() (string, func()) { return mountPlainEROFS(t, b, view) }},
	}
	cold := make([][]sample, len(modes))
	warm := make([][]sample, len(modes))
	entries := make([]int, len(modes))
	for range benchRounds { // interleaved, so drift affects every mode alike
		for i, m := range modes {
			mnt, unmount := m.mount()
			cold[i] = append(cold[i], measure(t, func() { entries[i] = walkTree(t, mnt) }))
			warm[i] = append(warm[i], measure(t, func() { walkTree(t, mnt) }))
			unmount()
		}
	}
	t.Logf("metadata walk (readdir + lstat) of %d entries, fresh mount per round, median of %d", entries[0], benchRounds)
	t.Logf("%-12s %10s %8s %9s %10s %8s %9s", "", "first ms", "CPU s", "vs EROFS", "second ms", "CPU s", "vs EROFS")
	base := len(modes) - 1
	for i, m := range modes {
		c, w := medianOf(cold[i]), medianOf(warm[i])
		bc, bw := medianOf(cold[base]), medianOf(warm[base])
		t.Logf("%-12s %10.1f %8.3f %9.2f %10.1f %8.3f %9.2f", m.name, c.wall*1000, c.cpu, c.wall/bc.wall, w.wall*1000, w.cpu, w.wall/bw.wall)
		if entries[i] != entries[0] {
			t.Errorf("%s walked %d entries, %s %d", m.name, entries[i], modes[0].name, entries[0])
		}
	}
}

// walkTree lists every directory and lstats every entry under root; it returns the entries.
func walkTree(t *testing.T, root string) int {
	t.Helper()
	n := 0
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
	return n
}

// memReader serves chunks decoded in memory, as a daemon whose memory cache holds the image:
// what "warm" means here. It counts the chunk reads, to show which reads reached it.
type memReader struct {
	mu     sync.Mutex
	chunks map[rafs.Digest][]byte
	reads  atomic.Int64
}

func loadChunks(t *testing.T, b built) *memReader {
	t.Helper()
	r := dirReader(t, b.blobDir)
	m := &memReader{chunks: map[rafs.Digest][]byte{}}
	_ = b.img.Walk(func(_ string, n *rafs.Node) error {
		for i := range n.Inode.Chunks {
			c := &n.Inode.Chunks[i]
			if _, ok := m.chunks[c.Digest]; ok {
				continue
			}
			data, err := r.ReadChunk(context.Background(), b.img.Blobs[c.BlobIndex], c, nil)
			if err != nil {
				t.Fatal(err)
			}
			m.chunks[c.Digest] = slices.Clone(data)
		}
		return nil
	})
	return m
}

func (m *memReader) ReadChunk(ctx context.Context, b *rafs.Blob, c *rafs.Chunk, buf []byte) ([]byte, error) {
	m.reads.Add(1)
	m.mu.Lock()
	data, ok := m.chunks[c.Digest]
	m.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("chunk %d not loaded", c.Index)
	}
	return data, nil
}

func benchRead(t *testing.T) {
	const size = 256 << 20
	dir := testTempDir(t)
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, size)
	_, _ = rand.NewChaCha8([32]byte{1}).Read(data)
	local := filepath.Join(src, "big")
	if err := os.WriteFile(local, data, 0o644); err != nil {
		t.Fatal(err)
	}
	data = nil
	b := buildV6(t, src, 0)
	mem := loadChunks(t, b)

	kmnt, ks := mountKernelBench(t, b, mem)
	defer func() {
		if err := ks.Unmount(); err != nil {
			t.Error(err)
		}
	}()
	fmnt, fs := mountFUSEBench(t, b, mem)
	defer func() {
		if err := fs.Unmount(); err != nil {
			t.Error(err)
		}
	}()
	viewFile := filepath.Join(ks.dir, viewDirName, viewName(0))
	modes := []struct {
		name, path string
		also       []string // files whose page cache is dropped with it
	}{
		{"kernel mode", filepath.Join(kmnt, "big"), []string{viewFile}},
		{"FUSE mode", filepath.Join(fmnt, "big"), nil},
		{"local file", local, nil},
	}
	cold := make([][]sample, len(modes))
	warm := make([][]sample, len(modes))
	reads := make([]int64, len(modes))
	for range benchRounds {
		for i, m := range modes {
			for _, p := range append([]string{m.path}, m.also...) {
				dropCache(t, p)
			}
			before := mem.reads.Load()
			cold[i] = append(cold[i], measure(t, func() { readAll(t, m.path, size) }))
			reads[i] = mem.reads.Load() - before
			warm[i] = append(warm[i], measure(t, func() { readAll(t, m.path, size) }))
		}
	}
	t.Logf("sequential read of %d MiB in 1 MiB read(2) calls, chunks in the daemon's memory, median of %d", size>>20, benchRounds)
	t.Logf("%-12s %10s %8s %9s %10s %8s %9s %8s", "", "cold MB/s", "CPU s", "vs local", "warm MB/s", "CPU s", "vs local", "chunks")
	base := len(modes) - 1
	for i, m := range modes {
		c, w := medianOf(cold[i]), medianOf(warm[i])
		bc, bw := medianOf(cold[base]), medianOf(warm[base])
		t.Logf("%-12s %10.0f %8.3f %9.2f %10.0f %8.3f %9.2f %8d", m.name, size/c.wall/1e6, c.cpu, bc.wall/c.wall,
			size/w.wall/1e6, w.cpu, bw.wall/w.wall, reads[i])
	}
	t.Logf("cold: page cache of the file (and of the view file in kernel mode) dropped first; warm: read again at once; " +
		"chunks: chunk reads the daemon served during the cold read")
}

// testTempDir is a disk-backed directory (not tmpfs), so the local file's cold read is a disk read.
func testTempDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("/var/tmp", "dfnydus-kbench-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func dropCache(t *testing.T, p string) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
}

func readAll(t *testing.T, p string, want int64) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
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
	if n != want {
		t.Fatalf("%s: read %d bytes, want %d", p, n, want)
	}
}
