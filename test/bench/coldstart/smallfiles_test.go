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

// BenchmarkManySmallFilesMemory mounts a nydus image of 50,000 small files (registry on loopback,
// no prefetch), walks it with find printing every entry's stat fields, then reads every file, and
// prints the mount process's VmRSS/VmHWM after each step. One run.
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

	mp := filepath.Join(dir, "mnt")
	start := time.Now()
	m := startMount(b, onHost, ref, mp, filepath.Join(dir, "cache"), "off")
	ready := time.Since(start)
	afterMount, heapMount := m.memory(b), m.goHeap(b)

	start = time.Now()
	out := mustRun(b, onHost, "find", mp, "-printf", `%y %s %m %U %G %T@ %p\n`)
	walk := time.Since(start)
	afterWalk, heapWalk := m.memory(b), m.goHeap(b)
	entries := strings.Count(out, "\n")
	if files := strings.Count(out, "\nf "); files != smallDirs*smallFilesPerDir {
		b.Fatalf("find listed %d regular files, want %d", files, smallDirs*smallFilesPerDir)
	}
	out = ""

	start = time.Now()
	read := mustRun(b, onHost, "bash", "-c", `find "$1" -type f -print0 | xargs -0 -P `+strconv.Itoa(readers)+` -n 500 cat | wc -c`, "bash", mp)
	readDur := time.Since(start)
	afterRead, heapRead := m.memory(b), m.goHeap(b)
	st := m.stats(b)
	if n, err := strconv.ParseInt(strings.TrimSpace(read), 10, 64); err != nil || n != dataBytes {
		b.Fatalf("read %q bytes back, want %d (%v)", read, dataBytes, err)
	}
	m.stop()

	fmt.Printf("many small files: %d files in %d directories, %.1f MB of data, one layer; registry on loopback, --prefetch off, one run\n",
		smallDirs*smallFilesPerDir, smallDirs, mb(dataBytes))
	fmt.Printf("%-44s %8s %10s %10s %9s\n", "step", "seconds", "VmRSS MiB", "VmHWM MiB", "heap MiB")
	fmt.Printf("%-44s %8.2f %10.1f %10.1f %9.1f\n", "mount ready (manifest, bootstrap)", ready.Seconds(), mib(afterMount.rss), mib(afterMount.hwm), mib(heapMount))
	fmt.Printf("%-44s %8.2f %10.1f %10.1f %9.1f\n", fmt.Sprintf("find+stat of all %d entries", entries), walk.Seconds(), mib(afterWalk.rss), mib(afterWalk.hwm), mib(heapWalk))
	fmt.Printf("%-44s %8.2f %10.1f %10.1f %9.1f\n", fmt.Sprintf("read every file (%d parallel cat)", readers), readDur.Seconds(), mib(afterRead.rss), mib(afterRead.hwm), mib(heapRead))
	fmt.Println("heap: go_memstats_heap_inuse_bytes from the mount's /metrics; the default --memory-cache is 64 MiB")
	fmt.Printf("read fetched %.1f MB in %d requests; the image has %d chunks\n", mb(st.BytesFetched), st.Fetches, st.Chunks)
	b.ReportMetric(mib(afterWalk.hwm), "walk-VmHWM-MiB")
	b.ReportMetric(mib(afterRead.hwm), "read-VmHWM-MiB")
}
