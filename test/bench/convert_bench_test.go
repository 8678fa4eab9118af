// Package bench_test holds benchmarks that need real servers (registry, FUSE, network namespaces).
// Each prints its figure next to the baseline it is compared with, measured in the same run.
package bench_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

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

func timed(b *testing.B, f func()) time.Duration {
	start := time.Now()
	f()
	return time.Since(start)
}

// BenchmarkConvertVsPullUnpack converts a ~300 MB three-layer image registry to registry on
// loopback and, in the same run, pulls and unpacks it with skopeo + umoci (what a node does to run
// the OCI image today). Medians of 3.
func BenchmarkConvertVsPullUnpack(b *testing.B) {
	testenv.RequireRoot(b)
	skopeo := testenv.RequireTool(b, "skopeo")
	layout := benchLayout(b)
	reg := registrytest.Start(b, registrytest.Options{})
	src := reg.Ref("bench", "v1")
	testenv.MustExec(b, skopeo, "copy", "--quiet", "--dest-tls-verify=false", "oci:"+layout+":img", "docker://"+src)
	var size int64
	for _, l := range testenv.OCILayers(b, layout, "img") {
		fi, _ := os.Stat(l)
		size += fi.Size()
	}
	var raw int64
	if data, err := os.ReadFile(filepath.Join(layout, "uncompressed-bytes")); err == nil {
		fmt.Sscan(string(data), &raw)
	}
	const runs = 3
	var conv, pull []time.Duration
	for i := 0; i < runs; i++ {
		dir := testenv.TempDir(b)
		conv = append(conv, timed(b, func() {
			testenv.MustRun(b, "convert", "--log-level", "warn", "--work-dir", filepath.Join(dir, "work"), src, reg.Ref(fmt.Sprintf("bench-nydus-%d", i), "v1"))
		}))
		pull = append(pull, timed(b, func() {
			testenv.MustExec(b, skopeo, "copy", "--quiet", "--src-tls-verify=false", "docker://"+src, "oci:"+filepath.Join(dir, "pulled")+":img")
			testenv.MustExec(b, "umoci", "unpack", "--image", filepath.Join(dir, "pulled")+":img", filepath.Join(dir, "bundle"))
		}))
		os.RemoveAll(dir)
	}
	c, p := median(conv), median(pull)
	fmt.Printf("image: 3 gzip layers, %.0f MB compressed, %.0f MB of tar; registry on loopback, medians of %d\n", float64(size)/1e6, float64(raw)/1e6, runs)
	fmt.Printf("  dfnydus convert (pull, build, push)   %6.2f s\n", c.Seconds())
	fmt.Printf("  skopeo copy + umoci unpack (baseline) %6.2f s\n", p.Seconds())
	fmt.Printf("  convert / baseline                    %6.2f\n", c.Seconds()/p.Seconds())
	b.ReportMetric(c.Seconds(), "convert-s")
	b.ReportMetric(p.Seconds(), "pull+unpack-s")
}
