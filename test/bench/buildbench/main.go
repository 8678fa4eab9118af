// Command buildbench measures `dfnydus build` throughput on a real tree against the limit measured
// in the same run: the same file bytes, already in memory, cut into the same chunks and pushed through
// the same digester and compressor by as many goroutines as there are CPUs. It also reports the
// build's peak resident memory, on the tree and on a large generated tar, to show memory does not grow
// with input size.
package main

import (
	"archive/tar"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/compress"
	"github.com/dfnydus/dfnydus/rafs/digest"
)

func main() {
	bin := flag.String("bin", "bin/dfnydus", "dfnydus binary")
	tree := flag.String("tree", runtime.GOROOT(), "source tree (default: the Go toolchain, ~270 MB)")
	runs := flag.Int("runs", 3, "runs per measurement (the median is reported)")
	bigMB := flag.Int("big-mb", 2048, "size of the generated tar for the memory check (0 to skip)")
	comps := flag.String("compressors", "zstd,lz4_block,gzip,none", "compressors to measure")
	flag.Parse()

	data, ends := loadTree(*tree)
	files := len(ends)
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Printf("tree %s: %d files, %.1f MB of file data; medians of %d, build and limit alternating; %d CPUs, load %s\n\n",
		*tree, files, mb(int64(len(data))), *runs, runtime.NumCPU(), strings.Join(strings.Fields(string(load))[:3], " "))
	fmt.Printf("%-10s %-7s %12s %12s %7s %12s %12s %7s %12s\n", "compressor", "digest", "build MB/s", "limit MB/s", "ratio",
		"build CPU-s", "limit CPU-s", "ratio", "peak RSS")
	for _, name := range splitComma(*comps) {
		comp, err := rafs.ParseCompressor(name)
		check(err)
		var rate, limit, cpu, limitCPU []float64
		var rss int64
		for range *runs { // alternating, so drift on a shared machine affects both alike
			l, lc := limitRate(data, ends, comp, rafs.DigestBlake3)
			r, c, m := buildRate(*bin, *tree, name, int64(len(data)))
			limit, limitCPU = append(limit, l), append(limitCPU, lc)
			rate, cpu = append(rate, r), append(cpu, c)
			rss = max(rss, m)
		}
		r, l, c, lc := median(rate), median(limit), median(cpu), median(limitCPU)
		fmt.Printf("%-10s %-7s %12.1f %12.1f %7.2f %12.2f %12.2f %7.2f %9.1f MiB\n", name, "blake3", r, l, r/l, c, lc, c/lc, float64(rss)/(1<<20))
	}
	if *bigMB > 0 {
		fmt.Println()
		bigMemory(*bin, int64(*bigMB)<<20)
	}
}

// loadTree reads every regular file of the tree into one buffer, in the builder's order, and
// returns where each file ends.
func loadTree(root string) ([]byte, []int) {
	var paths []string
	check(filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			paths = append(paths, p)
		}
		return err
	}))
	sort.Strings(paths)
	var buf []byte
	var ends []int
	for _, p := range paths {
		b, err := os.ReadFile(p)
		check(err)
		buf = append(buf, b...)
		ends = append(ends, len(buf))
	}
	return buf, ends
}

// limitRate cuts every file into the builder's chunks (1 MiB pieces, a file's last piece shorter),
// then digests and compresses them on every CPU as fast as it can, from memory. It returns MB/s and
// the CPU-seconds it took.
func limitRate(data []byte, ends []int, comp rafs.Compressor, dig rafs.Digester) (float64, float64) {
	const cs = rafs.DefaultChunkSize
	type span struct{ off, end int }
	var spans []span
	start := 0
	for _, end := range ends {
		for off := start; off < end; off += cs {
			spans = append(spans, span{off, min(off+cs, end)})
		}
		start = end
	}
	next := make(chan span, 64)
	go func() {
		for _, s := range spans {
			next <- s
		}
		close(next)
	}()
	c0, t0 := selfCPU(), time.Now()
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var dst []byte
			for s := range next {
				chunk := data[s.off:s.end]
				_ = digest.Sum(dig, chunk)
				var err error
				dst, err = compress.Compress(comp, dst, chunk)
				check(err)
			}
		}()
	}
	wg.Wait()
	return mb(int64(len(data))) / time.Since(t0).Seconds(), selfCPU() - c0
}

// selfCPU is this process's CPU-seconds so far, user and system, all threads.
func selfCPU() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// buildRate runs dfnydus build on the tree and returns MB/s of file data, the build's CPU-seconds
// and its peak RSS in bytes.
func buildRate(bin, tree, comp string, bytes int64) (float64, float64, int64) {
	dir, err := os.MkdirTemp("/var/tmp", "buildbench-")
	check(err)
	defer os.RemoveAll(dir)
	cmd := exec.Command(bin, "build", "--log-level", "warn", "--compressor", comp, "--bootstrap", filepath.Join(dir, "boot"), "--blob-dir", filepath.Join(dir, "blobs"), tree)
	cmd.Stderr = os.Stderr
	start := time.Now()
	check(cmd.Start())
	hwm := watchHWM(cmd.Process.Pid)
	check(cmd.Wait())
	wall := time.Since(start)
	cpu := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return mb(bytes) / wall.Seconds(), cpu.Seconds(), <-hwm
}

// bigMemory builds a generated tar of size bytes (compressible, few large files and many small
// ones) from a pipe and reports the build's peak RSS.
func bigMemory(bin string, size int64) {
	dir, err := os.MkdirTemp("/var/tmp", "buildbench-")
	check(err)
	defer os.RemoveAll(dir)
	cmd := exec.Command(bin, "build", "--log-level", "warn", "--bootstrap", filepath.Join(dir, "boot"), "--blob-dir", filepath.Join(dir, "blobs"), "/dev/stdin")
	stdin, err := cmd.StdinPipe()
	check(err)
	cmd.Stderr = os.Stderr
	check(cmd.Start())
	hwm := watchHWM(cmd.Process.Pid)
	start := time.Now()
	check(writeTar(stdin, size))
	check(stdin.Close())
	check(cmd.Wait())
	rss := <-hwm
	fmt.Printf("generated tar %.0f MB via a pipe: %.1f MB/s, peak RSS %.1f MiB\n", mb(size), mb(size)/time.Since(start).Seconds(), float64(rss)/(1<<20))
}

// watchHWM polls the child's VmHWM (peak resident set since its exec) every 10 ms until it exits.
// rusage's ru_maxrss is no use here: a child forked from this large process inherits its peak.
func watchHWM(pid int) <-chan int64 {
	out := make(chan int64, 1)
	go func() {
		var peak int64
		for {
			data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
			if err != nil {
				break
			}
			for _, line := range strings.Split(string(data), "\n") {
				if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
					var kb int64
					fmt.Sscanf(strings.TrimSpace(v), "%d", &kb)
					peak = max(peak, kb<<10)
				}
			}
			if strings.Contains(string(data), "State:\tZ") {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		out <- peak
	}()
	return out
}

func writeTar(w io.Writer, size int64) error {
	tw := tar.NewWriter(w)
	rng := rand.New(rand.NewPCG(1, 2))
	block := make([]byte, 1<<20)
	for i := range block {
		block[i] = byte(rng.IntN(16)) // compressible, but not trivially
	}
	var written int64
	for i := 0; written < size; i++ {
		n := int64(64 << 20)
		if i%2 == 1 {
			n = 4096
		}
		if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("d%d/f%d", i/100, i), Mode: 0o644, Size: n, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		for left := n; left > 0; {
			k := min(left, int64(len(block)))
			block[0], block[1] = byte(i), byte(left) // keep chunks distinct so dedup does not hide work
			block[2] = byte(left >> 8)
			if _, err := tw.Write(block[:k]); err != nil {
				return err
			}
			left -= k
		}
		written += n
	}
	return tw.Close()
}

func median(xs []float64) float64 {
	xs = append([]float64(nil), xs...)
	sort.Float64s(xs)
	return xs[len(xs)/2]
}

func mb(n int64) float64 { return float64(n) / 1e6 }

func splitComma(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			if i > start {
				out = append(out, s[start:i])
			}
			start = i + 1
		}
	}
	return out
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "buildbench:", err)
		os.Exit(1)
	}
}
