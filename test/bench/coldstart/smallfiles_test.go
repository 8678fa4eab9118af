package coldstart_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dfnydus/dfnydus/peer"
	"github.com/dfnydus/dfnydus/test/internal/registrytest"
	"github.com/dfnydus/dfnydus/test/internal/testenv"
)

const (
	smallDirs        = 250
	smallFilesPerDir = 200 // 50,000 files
	smallMaxSize     = 4096
	readers          = 4 // parallel readers in the read step
)

// writeSmallTree writes smallDirs x smallFilesPerDir files of 0..smallMaxSize pseudo-random bytes
// (fixed seed) and returns the number of bytes written.
func writeSmallTree(b *testing.B, root string) int64 {
	b.Helper()
	rng := rand.New(rand.NewChaCha8([32]byte{'d', 'f', 'n', 'y', 'd', 'u', 's'}))
	buf := make([]byte, smallMaxSize)
	var total int64
	for d := 0; d < smallDirs; d++ {
		dir := filepath.Join(root, fmt.Sprintf("d%03d", d))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		for f := 0; f < smallFilesPerDir; f++ {
			n := rng.IntN(smallMaxSize + 1)
			for i := range buf[:n] {
				buf[i] = byte(rng.Uint32())
			}
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%03d.dat", f)), buf[:n], 0o644); err != nil {
				b.Fatal(err)
			}
			total += int64(n)
		}
	}
	return total
}

// BenchmarkManySmallFilesMemory mounts a nydus image of 50,000 small files (registry on loopback)
// and prints the mount process's VmRSS/VmHWM and Go heap: with --prefetch off after a find that
// prints every entry's stat fields (metadata only), then, in a second mount with --prefetch all,
// once every chunk has been fetched and every file read. One run.
//
// The data step prefetches before reading because on-demand reads of 50,000 single-chunk files
// cost one registry request each: about 4 minutes here, for the same memory picture.
func BenchmarkManySmallFilesMemory(b *testing.B) {
	requireTools(b)
	dir := testenv.TempDir(b)
	tree := filepath.Join(dir, "tree")
	dataBytes := writeSmallTree(b, tree)

	layout := filepath.Join(dir, "layout")
	testenv.MustExec(b, "umoci", "init", "--layout", layout)
	testenv.MustExec(b, "umoci", "new", "--image", layout+":img")
	tarball := filepath.Join(dir, "tree.tar")
	testenv.MustExec(b, "tar", "--numeric-owner", "-C", tree, "-cf", tarball, ".")
	testenv.MustExec(b, "umoci", "raw", "add-layer", "--image", layout+":img", tarball)
	os.Remove(tarball)
	reg := registrytest.Start(b, registrytest.Options{})
	_, ref := pushAndConvert(b, onHost, layout, reg.Host(), "smallfiles")

	type step struct {
		name string
		dur  time.Duration
		mem  memory
		heap int64
	}
	var steps []step
	record := func(m *peerMount, name string, d time.Duration) {
		steps = append(steps, step{name, d, m.memory(b), m.goHeap(b)})
	}
	measure := func(m *peerMount, name string, f func()) {
		start := time.Now()
		f()
		record(m, name, time.Since(start))
	}
	mount := func(n int, prefetch string) *peerMount {
		start := time.Now()
		m := startMount(b, onHost, ref, filepath.Join(dir, fmt.Sprintf("mnt%d", n)), filepath.Join(dir, fmt.Sprintf("cache%d", n)), prefetch)
		record(m, "mount --prefetch "+prefetch+" ready", time.Since(start))
		return m
	}

	// Metadata only.
	m := mount(1, "off")
	measure(m, "find+stat of every entry", func() {
		out := mustRun(b, onHost, "find", m.mp, "-printf", `%y %s %m %U %G %T@ %p\n`)
		if files := strings.Count(out, "\nf "); files != smallDirs*smallFilesPerDir {
			b.Fatalf("find listed %d regular files, want %d", files, smallDirs*smallFilesPerDir)
		}
	})
	m.stop()

	// All data through the fetcher, then every file read.
	m = mount(2, "all")
	var st peer.Stats
	measure(m, "prefetch all (4 MiB requests)", func() { st = m.waitPrefetch(b) })
	measure(m, fmt.Sprintf("read every file (%d parallel cat)", readers), func() {
		read := mustRun(b, onHost, "bash", "-c", `find "$1" -type f -print0 | xargs -0 -P `+strconv.Itoa(readers)+` -n 500 cat | wc -c`, "bash", m.mp)
		if n, err := strconv.ParseInt(strings.TrimSpace(read), 10, 64); err != nil || n != dataBytes {
			b.Fatalf("read %q bytes back, want %d (%v)", read, dataBytes, err)
		}
	})
	m.stop()

	fmt.Printf("many small files: %d files in %d directories, %.1f MB of data, one layer; registry on loopback, one run\n",
		smallDirs*smallFilesPerDir, smallDirs, mb(dataBytes))
	fmt.Printf("%-46s %8s %10s %10s %9s\n", "step", "seconds", "VmRSS MiB", "VmHWM MiB", "heap MiB")
	for _, s := range steps {
		fmt.Printf("%-46s %8.2f %10.1f %10.1f %9.1f\n", s.name, s.dur.Seconds(), mib(s.mem.rss), mib(s.mem.hwm), mib(s.heap))
	}
	fmt.Println("heap: go_memstats_heap_inuse_bytes from the mount's /metrics; the default --memory-cache is 16 MiB")
	fmt.Printf("prefetch fetched %.1f MB in %d requests; the image has %d chunks\n", mb(st.BytesFetched), st.Fetches, st.Chunks)
	b.ReportMetric(mib(steps[1].mem.hwm), "walk-VmHWM-MiB")
	b.ReportMetric(mib(steps[len(steps)-1].mem.hwm), "read-VmHWM-MiB")
}
