// Package bench_test holds benchmarks that need real servers (registry, FUSE, network namespaces).
// Each prints its figure next to the baseline it is compared with, measured in the same run.
package bench_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/compress"
	"github.com/dfnydus/dfnydus/rafs/digest"
	"github.com/dfnydus/dfnydus/registry"
	"github.com/dfnydus/dfnydus/test/internal/registrytest"
	"github.com/dfnydus/dfnydus/test/internal/testenv"
)

// benchLayout builds (once, cached next to the debootstrap tree) an OCI layout "img" of about
// 300 MB in three layers: a Debian minbase rootfs, the Go toolchain's source tree, and a small layer.
func benchLayout(b *testing.B) string {
	b.Helper()
	root := testenv.Rootfs(b)
	layout := filepath.Join(filepath.Dir(root), "bench-layout")
	if _, err := os.Stat(filepath.Join(layout, "index.json")); err == nil {
		return layout
	}
	tmp := layout + ".tmp"
	os.RemoveAll(tmp)
	testenv.MustExec(b, "umoci", "init", "--layout", tmp)
	testenv.MustExec(b, "umoci", "new", "--image", tmp+":img")
	work := b.TempDir()
	var raw int64
	for i, src := range []string{root, filepath.Join(testenv.GoRoot(b), "src"), filepath.Join(testenv.GoRoot(b), "misc")} {
		tarball := filepath.Join(work, fmt.Sprintf("l%d.tar", i))
		testenv.MustExec(b, "tar", "--numeric-owner", "-C", src, "-cf", tarball, ".")
		if fi, err := os.Stat(tarball); err == nil {
			raw += fi.Size()
		}
		testenv.MustExec(b, "umoci", "raw", "add-layer", "--image", tmp+":img", tarball)
	}
	if err := os.WriteFile(filepath.Join(tmp, "uncompressed-bytes"), []byte(fmt.Sprint(raw)), 0o644); err != nil {
		b.Fatal(err)
	}
	if err := os.Rename(tmp, layout); err != nil {
		b.Fatal(err)
	}
	return layout
}

func median(xs []time.Duration) time.Duration {
	s := append([]time.Duration(nil), xs...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// childCPU is the CPU time (user + system) of the child processes this process has waited for.
func childCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// run times f, which runs commands to completion, and returns its wall time and the CPU time of
// those commands.
func run(f func()) (wall, cpu time.Duration) {
	c0, t0 := childCPU(), time.Now()
	f()
	return time.Since(t0), childCPU() - c0
}

// imageBytes is what pushing ref moves: the sum of its manifest's layer sizes, its config and the
// manifest itself, read from the registry.
type imageBytes struct {
	layers                 int
	layerBytes, otherBytes int64
}

func (b imageBytes) total() int64 { return b.layerBytes + b.otherBytes }

func pushedBytes(b *testing.B, ref string) imageBytes {
	b.Helper()
	c, err := registry.New(registry.Options{})
	if err != nil {
		b.Fatal(err)
	}
	r, err := registry.ParseRef(ref)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	data, _, err := c.GetManifest(ctx, r)
	if err != nil {
		b.Fatalf("manifest of %s: %v", ref, err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		b.Fatalf("manifest of %s: %v", ref, err)
	}
	out := imageBytes{layers: len(m.Layers), otherBytes: m.Config.Size + int64(len(data))}
	for _, l := range m.Layers {
		out.layerBytes += l.Size
	}
	return out
}

// buildLimit does the least work any conversion of these gzip layers into zstd + blake3 chunks
// must do, from memory and nothing else: check each pulled layer's sha256, gunzip it, cut each
// regular file into 1 MiB chunks, digest and compress each chunk and sha256 what it writes (the
// blob id), chunks on one goroutine per CPU, layers one after the other. It returns the wall and
// CPU time that took.
func buildLimit(b *testing.B, layers []string) (wall, cpu time.Duration) {
	b.Helper()
	var gz [][]byte
	for _, l := range layers {
		data, err := os.ReadFile(l)
		if err != nil {
			b.Fatal(err)
		}
		gz = append(gz, data)
	}
	self := func() time.Duration {
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	c0, t0 := self(), time.Now()
	chunks := make(chan []byte, 2*runtime.GOMAXPROCS(0))
	// Chunk buffers are recycled, as the builder does: fresh memory for every chunk costs page
	// faults that are no part of the work.
	free := make(chan []byte, cap(chunks)+runtime.GOMAXPROCS(0)+1)
	for range cap(free) {
		free <- make([]byte, rafs.DefaultChunkSize)
	}
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var dst []byte
			blobID := sha256.New()
			for c := range chunks {
				_ = digest.Sum(rafs.DigestBlake3, c)
				var err error
				if dst, err = compress.Compress(rafs.CompressZstd, dst, c); err != nil {
					panic(err)
				}
				blobID.Write(dst)
				free <- c[:cap(c)]
			}
		}()
	}
	for _, data := range gz {
		_ = sha256.Sum256(data)
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			b.Fatal(err)
		}
		tr := tar.NewReader(zr)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			if h.Typeflag != tar.TypeReg {
				continue
			}
			for {
				c := <-free
				n, err := io.ReadFull(tr, c)
				if n > 0 {
					chunks <- c[:n]
				} else {
					free <- c
				}
				if err == io.EOF || err == io.ErrUnexpectedEOF {
					break
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	close(chunks)
	wg.Wait()
	return time.Since(t0), self() - c0
}

// BenchmarkConvertVsPullUnpack converts a ~300 MB three-layer image registry to registry on
// loopback, medians of 3, and prints it against what a conversion cannot avoid: the CPU work of
// gunzip + chunk digest + zstd of the same layers (its limit), and the bytes the plain OCI image
// holds against those the nydus image pushes, counted from the two manifests in the registry.
// `skopeo copy` + `umoci unpack` of the OCI image is timed in the same run as context only: it is
// what a node does to run the image without nydus, not an alternative to converting it.
func BenchmarkConvertVsPullUnpack(b *testing.B) {
	testenv.RequireRoot(b)
	skopeo := testenv.RequireTool(b, "skopeo")
	layout := benchLayout(b)
	reg := registrytest.Start(b, registrytest.Options{})
	src := reg.Ref("bench", "v1")
	testenv.MustExec(b, skopeo, "copy", "--quiet", "--dest-tls-verify=false", "oci:"+layout+":img", "docker://"+src)
	var raw int64
	if data, err := os.ReadFile(filepath.Join(layout, "uncompressed-bytes")); err == nil {
		fmt.Sscan(string(data), &raw)
	}
	testenv.Binary(b) // built now, not inside the first timed convert
	const runs = 3
	var conv, convCPU, pull, pullCPU, limit, limitCPU []time.Duration
	var target string
	for i := 0; i < runs; i++ {
		dir := testenv.TempDir(b)
		target = reg.Ref(fmt.Sprintf("bench-nydus-%d", i), "v1")
		w, c := run(func() {
			testenv.MustRun(b, "convert", "--log-level", "warn", "--work-dir", filepath.Join(dir, "work"), src, target)
		})
		conv, convCPU = append(conv, w), append(convCPU, c)
		w, c = run(func() {
			testenv.MustExec(b, skopeo, "copy", "--quiet", "--src-tls-verify=false", "docker://"+src, "oci:"+filepath.Join(dir, "pulled")+":img")
			testenv.MustExec(b, "umoci", "unpack", "--image", filepath.Join(dir, "pulled")+":img", filepath.Join(dir, "bundle"))
		})
		pull, pullCPU = append(pull, w), append(pullCPU, c)
		w, c = buildLimit(b, testenv.OCILayers(b, layout, "img"))
		limit, limitCPU = append(limit, w), append(limitCPU, c)
		os.RemoveAll(dir)
	}
	oci, nydus := pushedBytes(b, src), pushedBytes(b, target)
	c, cc, l, lc := median(conv), median(convCPU), median(limit), median(limitCPU)
	fmt.Printf("image: %d gzip layers, %.1f MB, %.0f MB of tar; registry on loopback; medians of %d, alternating; %d CPUs, load %s\n",
		oci.layers, float64(oci.layerBytes)/1e6, float64(raw)/1e6, runs, runtime.NumCPU(), loadAvg())
	fmt.Printf("  %-66s %9s %9s\n", "(CPU-s: the commands' own; the registry's is not counted)", "wall s", "CPU-s")
	fmt.Printf("  %-66s %9.2f %9.2f\n", "dfnydus convert (pull, gunzip, build, push)", c.Seconds(), cc.Seconds())
	fmt.Printf("  %-66s %9.2f %9.2f\n", "limit: sha256+gunzip layers, chunk blake3+zstd+sha256, in memory", l.Seconds(), lc.Seconds())
	fmt.Printf("  %-66s %9.2f %9.2f\n", "convert / limit", c.Seconds()/l.Seconds(), cc.Seconds()/lc.Seconds())
	fmt.Printf("  bytes to push (layers + config + manifest, from the registry's manifests):\n")
	fmt.Printf("  %-66s %12d bytes\n", fmt.Sprintf("OCI image (%d gzip layers)", oci.layers), oci.total())
	fmt.Printf("  %-66s %12d bytes, %.2fx\n", fmt.Sprintf("nydus image (%d zstd blobs + bootstrap layer)", nydus.layers-1), nydus.total(), float64(nydus.total())/float64(oci.total()))
	fmt.Printf("  context, a node-side figure (not the convert's baseline): running the OCI image without nydus\n")
	fmt.Printf("  %-66s %9.2f %9.2f\n", "skopeo copy + umoci unpack (pull, verify, unpack, hash files)", median(pull).Seconds(), median(pullCPU).Seconds())
	b.ReportMetric(c.Seconds(), "convert-s")
	b.ReportMetric(cc.Seconds(), "convert-cpu-s")
	b.ReportMetric(l.Seconds(), "limit-s")
	b.ReportMetric(lc.Seconds(), "limit-cpu-s")
	b.ReportMetric(float64(oci.total()), "oci-bytes")
	b.ReportMetric(float64(nydus.total()), "nydus-bytes")
	b.ReportMetric(median(pull).Seconds(), "pull+unpack-s")
}

// loadAvg is the machine's 1, 5 and 15 minute load, as uptime prints it.
func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.Join(strings.Fields(string(data))[:3], " ")
}
