// Package coldstart_test measures cold start over a slow link: the time until a program
// run by chroot from the image has finished, for a nydus image mounted lazily by dfnydus versus the
// same OCI image pulled and unpacked with skopeo + umoci, all in the same run, with the bytes each
// moved over the link. The registry and the client sit in network namespaces joined by a bridge;
// the registry's link is limited with tc tbf. It also measures the mount process's memory on an
// image of many small files. Figures are printed, never checked against thresholds.
//
//	go test -run '^$' -bench . -benchtime=1x ./test/bench/coldstart/
package coldstart_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/dfnydus/dfnydus/kernelfs"
	"github.com/dfnydus/dfnydus/peer"
	"github.com/dfnydus/dfnydus/test/internal/netns"
	"github.com/dfnydus/dfnydus/test/internal/testenv"
)

const (
	runs     = 3
	linkMbit = 100
)

// workload is the program run in the image: it reads dpkg's status database and the libraries it
// links, a few MB of a >300 MB image.
var workload = []string{"/usr/bin/dpkg-query", "-W"}

// sample is one cold start.
type sample struct {
	total    time.Duration // from the first command's start to the program's exit
	phases   []time.Duration
	link     int64 // bytes the registry sent over its link until the program exited
	fetched  int64 // dfnydus: bytes fetched back to source until then (stat bytes_fetched)
	mem      memory
	full     time.Duration // dfnydus --prefetch all: until the whole image was local
	fullLink int64
	stats    peer.Stats
}

// coldEnv is the network, registry and images shared by every run.
type coldEnv struct {
	client, regNode *netns.Node
	ociRef, nydus   string
	esgzRef         string   // the eStargz image
	esgzTOCs        []string // its layers' TOC digests, lowest first
	want            string   // the workload's output on the debootstrap tree
}

func requireTools(b *testing.B) {
	b.Helper()
	testenv.RequireRoot(b)
	for _, tool := range []string{"skopeo", "umoci", "chroot", "tar"} {
		testenv.RequireTool(b, tool)
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		b.Skip("no /dev/fuse")
	}
}

// BenchmarkColdStart: OCI pull + unpack + run versus dfnydus lazy mount + run, with and without
// background prefetch, and the eStargz lazy store, over a 100 Mbit/s link. Runs of the four modes
// alternate; medians of 3.
func BenchmarkColdStart(b *testing.B) {
	requireTools(b)
	info := coldstartLayout(b)
	root := testenv.Rootfs(b)

	nw := netns.Start(b, netns.Options{})
	env := &coldEnv{regNode: nw.MustAddNode(b, "registry"), client: nw.MustAddNode(b, "client")}
	reg := netns.MustStartRegistry(b, env.regNode, 5000)
	env.ociRef, env.nydus = pushAndConvert(b, env.regNode.Command, info.dir, reg.Host, "coldstart")
	esgz, tocs := estargzLayout(b, info)
	env.esgzRef, env.esgzTOCs = reg.Ref("coldstart-esgz", "v1"), tocs
	mustRun(b, env.regNode.Command, "skopeo", "copy", "--quiet", "--preserve-digests", "--dest-tls-verify=false",
		"oci:"+esgz.dir+":img", "docker://"+env.esgzRef)
	env.want = mustRun(b, onHost, "chroot", append([]string{root}, workload...)...)
	if err := env.regNode.ShapeEgress(context.Background(), netns.Shape{Rate: netns.Mbit(linkMbit)}); err != nil {
		b.Fatal(err)
	}

	// Kernel mode (the kernel's EROFS over view files) where this kernel has it.
	kernelErr := kernelfs.Supported()
	// DFNYDUS_COLDSTART_WINDOWS=0,262144,... adds lazy runs with those read windows (bytes), to
	// weigh bytes fetched against round trips; DFNYDUS_COLDSTART_ONLY_LAZY=1 skips the OCI,
	// prefetch, kernel and eStargz runs (a quick look at the lazy start alone).
	var windows []string
	if v := os.Getenv("DFNYDUS_COLDSTART_WINDOWS"); v != "" {
		windows = strings.Split(v, ",")
	}
	onlyLazy := os.Getenv("DFNYDUS_COLDSTART_ONLY_LAZY") != ""
	var oci, lazy, pf, es, kern []sample
	byWindow := make([][]sample, len(windows))
	for i := 0; i < runs; i++ {
		if !onlyLazy {
			oci = append(oci, env.runOCI(b))
		}
		lazy = append(lazy, env.runNydus(b, "off"))
		for j, w := range windows {
			byWindow[j] = append(byWindow[j], env.runNydus(b, "off", "--read-window", w))
		}
		if onlyLazy {
			continue
		}
		if kernelErr == nil {
			kern = append(kern, env.runNydus(b, "off", "--fs-driver", "erofs"))
		}
		pf = append(pf, env.runNydus(b, "all"))
		es = append(es, env.runEstargz(b))
	}
	for j, w := range windows {
		fmt.Printf("lazy, --read-window %s: %.2f s, %.2f MB fetched (default window: %.2f s, %.2f MB)\n", w,
			medianDur(byWindow[j], func(s sample) time.Duration { return s.total }).Seconds(),
			mb(medianInt(byWindow[j], func(s sample) int64 { return s.fetched })),
			medianDur(lazy, func(s sample) time.Duration { return s.total }).Seconds(),
			mb(medianInt(lazy, func(s sample) int64 { return s.fetched })))
	}
	if onlyLazy {
		return
	}
	printColdStart(info, esgz, oci, lazy, pf, es, kern)
	if kernelErr != nil {
		fmt.Printf("kernel mode not measured: %v\n", kernelErr)
	}
	b.ReportMetric(medianDur(oci, func(s sample) time.Duration { return s.total }).Seconds(), "oci-s")
	b.ReportMetric(medianDur(lazy, func(s sample) time.Duration { return s.total }).Seconds(), "lazy-s")
	b.ReportMetric(medianDur(pf, func(s sample) time.Duration { return s.total }).Seconds(), "prefetch-s")
	b.ReportMetric(medianDur(es, func(s sample) time.Duration { return s.total }).Seconds(), "estargz-s")
}

// runOCI pulls with skopeo (in the client's namespace), unpacks with umoci and runs the workload.
func (e *coldEnv) runOCI(b *testing.B) sample {
	b.Helper()
	dir := testenv.TempDir(b)
	defer os.RemoveAll(dir)
	pulled, bundle := filepath.Join(dir, "pulled"), filepath.Join(dir, "bundle")
	c0 := e.counters(b)
	start := time.Now()
	mustRun(b, e.client.Command, "skopeo", "copy", "--quiet", "--src-tls-verify=false", "docker://"+e.ociRef, "oci:"+pulled+":img")
	pulledAt := time.Now()
	mustRun(b, onHost, "umoci", "unpack", "--image", pulled+":img", bundle)
	unpackedAt := time.Now()
	out := mustRun(b, onHost, "chroot", append([]string{filepath.Join(bundle, "rootfs")}, workload...)...)
	end := time.Now()
	e.checkOutput(b, "OCI", out)
	return sample{total: end.Sub(start), link: e.counters(b) - c0,
		phases: []time.Duration{pulledAt.Sub(start), unpackedAt.Sub(pulledAt), end.Sub(unpackedAt)}}
}

// runNydus mounts the nydus image in the client's namespace with an empty store and runs the
// workload in it; with prefetch "all" it then waits until the whole image is local.
func (e *coldEnv) runNydus(b *testing.B, prefetch string, flags ...string) sample {
	b.Helper()
	dir := testenv.TempDir(b) // removed after the mount is gone: by hand below, or by b's cleanup on failure
	mp := filepath.Join(dir, "mnt")
	c0 := e.counters(b)
	start := time.Now()
	m := startMount(b, e.client.Command, e.nydus, mp, filepath.Join(dir, "cache"), prefetch, flags...)
	readyAt := time.Now()
	out := mustRun(b, onHost, "chroot", append([]string{mp}, workload...)...)
	end := time.Now()
	s := sample{total: end.Sub(start), link: e.counters(b) - c0, phases: []time.Duration{readyAt.Sub(start), end.Sub(readyAt)}}
	s.stats = m.stats(b)
	s.fetched = s.stats.BytesFetched
	s.mem = m.memory(b)
	e.checkOutput(b, strings.Join(append([]string{"dfnydus --prefetch", prefetch}, flags...), " "), out)
	if prefetch == "all" {
		m.waitPrefetch(b)
		s.full, s.fullLink = time.Since(start), e.counters(b)-c0
		s.mem = m.memory(b)
	}
	m.stop()
	os.RemoveAll(dir)
	return s
}

// counters is what the registry has sent over its link so far.
func (e *coldEnv) counters(b *testing.B) int64 {
	b.Helper()
	c, err := e.regNode.Counters(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	return c.TxBytes
}

func (e *coldEnv) checkOutput(b *testing.B, mode, out string) {
	b.Helper()
	if out != e.want {
		b.Fatalf("%s: the workload printed %d bytes, not the %d it prints on the debootstrap tree", mode, len(out), len(e.want))
	}
}

func printColdStart(info, esgz layoutInfo, oci, lazy, pf, es, kern []sample) {
	total := func(s sample) time.Duration { return s.total }
	o := medianDur(oci, total).Seconds()
	st := lazy[0].stats
	fmt.Printf("cold start over a %d Mbit/s link (tc tbf on the registry's veth), workload `chroot ROOT %s`,\n",
		linkMbit, strings.Join(workload, " "))
	fmt.Printf("empty caches each run, medians of %d; MB = 10^6 bytes\n", runs)
	fmt.Printf("image: %d gzip layers, %.1f MB compressed, %.1f MB of tar; nydus: %d chunks, %.1f MB uncompressed chunk data\n",
		info.layers, mb(info.compressed), mb(info.files), st.Chunks, mb(st.BytesTotal))
	fmt.Printf("eStargz image (estargz.Build, gzip level 6): %.1f MB compressed\n", mb(esgz.compressed))
	fmt.Printf("%-44s %8s %10s %11s %8s\n", "mode", "seconds", "link MB", "fetched MB", "speedup")
	row := func(name string, ss []sample, fetched bool) {
		sec := medianDur(ss, total).Seconds()
		f := "-"
		if fetched {
			f = fmt.Sprintf("%.2f", mb(medianInt(ss, func(s sample) int64 { return s.fetched })))
		}
		fmt.Printf("%-44s %8.2f %10.2f %11s %7.1fx\n", name, sec, mb(medianInt(ss, func(s sample) int64 { return s.link })), f, o/sec)
	}
	row("OCI: skopeo copy + umoci unpack + run", oci, false)
	row("dfnydus lazy: mount --prefetch off + run", lazy, true)
	if len(kern) > 0 {
		row("dfnydus kernel mode: --fs-driver erofs, off", kern, true)
	}
	row("dfnydus: mount --prefetch all + run", pf, true)
	row("eStargz store (no prefetch/bg fetch) + overlay", es, false)
	phase := func(ss []sample, i int) float64 {
		return medianDur(ss, func(s sample) time.Duration { return s.phases[i] }).Seconds()
	}
	fmt.Printf("OCI phases: pull %.2f s, unpack %.2f s, run %.2f s\n", phase(oci, 0), phase(oci, 1), phase(oci, 2))
	fmt.Printf("dfnydus lazy phases: mount ready %.2f s, run %.2f s; fetched %.2f%% of the image's chunk bytes\n",
		phase(lazy, 0), phase(lazy, 1), 100*float64(medianInt(lazy, func(s sample) int64 { return s.fetched }))/float64(max(st.BytesTotal, 1)))
	fmt.Printf("dfnydus --prefetch all phases: mount ready %.2f s, run %.2f s (prefetch shares the link with the run's reads);\n",
		phase(pf, 0), phase(pf, 1))
	fmt.Printf("  whole image local after %.2f s, %.2f MB over the link\n",
		medianDur(pf, func(s sample) time.Duration { return s.full }).Seconds(), mb(medianInt(pf, func(s sample) int64 { return s.fullLink })))
	fmt.Printf("eStargz phases: store ready + layers resolved + overlay %.2f s, run %.2f s\n", phase(es, 0), phase(es, 1))
	fmt.Printf("dfnydus mount process memory, lazy: VmHWM %.1f MiB, VmRSS %.1f MiB at the program's exit; --prefetch all, after prefetch: VmHWM %.1f MiB\n",
		mib(medianInt(lazy, func(s sample) int64 { return s.mem.hwm })), mib(medianInt(lazy, func(s sample) int64 { return s.mem.rss })),
		mib(medianInt(pf, func(s sample) int64 { return s.mem.hwm })))
	fmt.Printf("eStargz store process memory at the program's exit: VmHWM %.1f MiB\n", mib(medianInt(es, func(s sample) int64 { return s.mem.hwm })))
	fmt.Printf("per run (s): OCI %s; lazy %s; kernel mode %s; prefetch all %s; eStargz %s\n", secs(oci), secs(lazy), secs(kern), secs(pf), secs(es))
}

func mb(n int64) float64  { return float64(n) / 1e6 }
func mib(n int64) float64 { return float64(n) / (1 << 20) }

func secs(ss []sample) string {
	var parts []string
	for _, s := range ss {
		parts = append(parts, fmt.Sprintf("%.2f", s.total.Seconds()))
	}
	return strings.Join(parts, " ")
}

func medianDur(ss []sample, f func(sample) time.Duration) time.Duration {
	xs := make([]time.Duration, len(ss))
	for i, s := range ss {
		xs[i] = f(s)
	}
	sort.Slice(xs, func(i, j int) bool { return xs[i] < xs[j] })
	return xs[len(xs)/2]
}

func medianInt(ss []sample, f func(sample) int64) int64 {
	xs := make([]int64, len(ss))
	for i, s := range ss {
		xs[i] = f(s)
	}
	sort.Slice(xs, func(i, j int) bool { return xs[i] < xs[j] })
	return xs[len(xs)/2]
}
