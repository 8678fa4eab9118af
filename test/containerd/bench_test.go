package containerd_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dfnydus/dfnydus/test/internal/netns"
	"github.com/dfnydus/dfnydus/test/internal/schedtest"
	"github.com/dfnydus/dfnydus/test/internal/testenv"
)

// Container start benchmark (`make bench-containers`): per image, pull + create + run-to-ready of a
// real container through containerd, for the OCI image on overlayfs (full pull) and the nydus image
// served lazily by dfnydus through nydus-snapshotter, in the same run, with the registry behind a
// 100 Mbit/s tc tbf link in a network namespace. Figures are printed, never checked.
//
//	DFNYDUS_BENCH_JSON=out.json go test -run '^$' -bench BenchmarkContainerStart -benchtime=1x -timeout 90m ./test/containerd/

const benchLinkMbit = 100

// benchImage is an image made here from real software and the workload that says it is ready.
type benchImage struct {
	name  string
	trees func(b *testing.B) []string // layer directories, lowest first
	args  []string
	ready string // the workload prints this once it is up
}

var benchImages = []benchImage{
	{name: "python", trees: func(b *testing.B) []string { return []string{pythonRootfs(b)} },
		args:  []string{"/usr/bin/python3", "-c", "import json, email.mime.text, http.server, asyncio, sqlite3; print('ready')"},
		ready: "ready"},
	{name: "golang", trees: func(b *testing.B) []string { return []string{testenv.Rootfs(b), goTree(b)} },
		args: []string{"/usr/local/go/bin/go", "version"}, ready: "go version"},
	{name: "large", trees: func(b *testing.B) []string { return []string{pythonRootfs(b), dataTree(b, 16, 64<<20)} },
		args:  []string{"/usr/bin/python3", "-c", "import os; print('ready', len(os.listdir('/opt/data')))"},
		ready: "ready"},
}

// benchResult is one measured start.
type benchResult struct {
	Image   string  `json:"image"`
	Mode    string  `json:"mode"`
	ImageMB float64 `json:"image_mb"` // the OCI image's compressed layers
	Pull    float64 `json:"pull_s"`
	Create  float64 `json:"create_s"`
	Ready   float64 `json:"ready_s"`
	Total   float64 `json:"total_s"`
	LinkMB  float64 `json:"link_mb"` // bytes the registry sent over its shaped link
	// NydusdCPU is the user + system CPU seconds of the image's nydusd (the FUSE server or, in
	// kernel mode, the view server) from its start to ready; the kernel's own EROFS and overlay
	// work is charged to the container. Not measured (0) without a nydusd or through a daemon.
	NydusdCPU float64 `json:"nydusd_cpu_s"`
	Skipped   string  `json:"skipped,omitempty"`
	Completed bool    `json:"completed"`
}

const (
	modeOCI  = "OCI, overlayfs (full pull)"
	modeLazy = "dfnydus lazy"
	modePf   = "dfnydus + prefetch all"
	modeP2P  = "dfnydus, warm P2P neighbour"
	// Kernel mode: the same nydusd with DFNYDUS_FS_DRIVER=erofs, the image mounted by the
	// kernel's EROFS over the blobs' views (docs/kernel.md).
	modeKLazy = "dfnydus lazy, kernel mode"
	modeKPf   = "dfnydus + prefetch, kernel"
	cacheRoot = "/var/cache/dfnydus"
)

func BenchmarkContainerStart(b *testing.B) {
	testenv.RequireRoot(b)
	for _, tool := range []string{"skopeo", "umoci", "tar"} {
		testenv.RequireTool(b, tool)
	}
	runs := 1
	if v, err := strconv.Atoi(os.Getenv("DFNYDUS_BENCH_RUNS")); err == nil && v > 0 {
		runs = v
	}
	// DFNYDUS_BENCH_IMAGES / DFNYDUS_BENCH_MODES (comma-separated names, modes by their hook
	// names oci, lazy, prefetch, p2p, kernel, kernel-prefetch) narrow a run; the full-pull
	// baseline always runs.
	images := benchImages
	if v := os.Getenv("DFNYDUS_BENCH_IMAGES"); v != "" {
		images = nil
		for _, img := range benchImages {
			if slices.Contains(strings.Split(v, ","), img.name) {
				images = append(images, img)
			}
		}
	}
	modes := []string{modeOCI, modeLazy, modeKLazy, modePf, modeKPf, modeP2P}
	if v := os.Getenv("DFNYDUS_BENCH_MODES"); v != "" {
		modes = []string{modeOCI}
		for _, m := range []struct{ name, mode string }{{"lazy", modeLazy}, {"kernel", modeKLazy}, {"prefetch", modePf},
			{"kernel-prefetch", modeKPf}, {"p2p", modeP2P}} {
			if slices.Contains(strings.Split(v, ","), m.name) {
				modes = append(modes, m.mode)
			}
		}
	}
	layouts := map[string]string{}
	for _, img := range images {
		layouts[img.name] = benchLayout(b, img)
	}

	nw := netns.Start(b, netns.Options{})
	regNode, client := nw.MustAddNode(b, "registry"), nw.MustAddNode(b, "client")
	schedNode, neighNode := nw.MustAddNode(b, "sched"), nw.MustAddNode(b, "neighbour")
	reg := netns.MustStartRegistry(b, regNode, 5000)
	refs := map[string][2]string{}
	for _, img := range images {
		oci, nydus := reg.Ref(img.name, "v1"), reg.Ref(img.name+"-nydus", "v1")
		runIn(b, regNode, "skopeo", "copy", "--quiet", "--dest-tls-verify=false", "oci:"+layouts[img.name]+":img", "docker://"+oci)
		runIn(b, regNode, testenv.Binary(b), "convert", "--log-level", "warn", "--plain-http",
			"--work-dir", filepath.Join(testenv.TempDir(b), "work"), oci, nydus)
		refs[img.name] = [2]string{oci, nydus}
		for _, ref := range []string{oci, nydus} {
			if out, err := client.Command(context.Background(), "skopeo", "inspect", "--raw", "--tls-verify=false", "docker://"+ref).CombinedOutput(); err != nil {
				b.Fatalf("%s is not in the registry as seen from the client: %v\n%s\nregistry:\n%s", ref, err, out, reg.Logs())
			}
		}
	}
	// The warm P2P neighbour: the real scheduler in its own node, and a dfnydus daemon with P2P in
	// another that has mounted every nydus image and read all of it (before the link is limited).
	// Only when the P2P mode runs: warming reads every image once.
	var sched *schedtest.Scheduler
	var neighbour *dfnydusDaemon
	if slices.Contains(modes, modeP2P) {
		sched = schedtest.Start(b, schedtest.Options{ListenIP: schedNode.Addr.String(), Port: 8002,
			Command: func(name string, args ...string) *exec.Cmd {
				return schedNode.Command(context.Background(), name, args...)
			},
			DialContext: schedNode.DialContext})
		neighbour = startDfnydusDaemon(b, daemonOptions{Node: neighNode, Extra: p2pConfig(sched, neighNode, "neighbour")})
		for _, img := range images {
			neighbour.warm(b, neighNode, refs[img.name][1], img.name)
		}
	}
	if err := regNode.ShapeEgress(context.Background(), netns.Shape{Rate: netns.Mbit(benchLinkMbit)}); err != nil {
		b.Fatal(err)
	}
	// Lazy means lazy: no background prefetch competing with the start's own reads.
	lazyConfig := strings.Replace(defaultNydusdConfig, `"fs_prefetch": {"enable": true`, `"fs_prefetch": {"enable": false`, 1)
	h := startHarness(b, harnessOptions{NetNS: client.Path(), NydusdConfig: lazyConfig})
	// The snapshotter's default: prefetch everything in the background while the container starts.
	hPf := startHarness(b, harnessOptions{NetNS: client.Path()})
	// The same two in kernel mode: nydusd reads the driver from the snapshotter's environment.
	kernelEnv := []string{"DFNYDUS_FS_DRIVER=erofs"}
	var hK, hKPf *harness
	if slices.Contains(modes, modeKLazy) {
		hK = startHarness(b, harnessOptions{NetNS: client.Path(), NydusdConfig: lazyConfig, SnapshotterEnv: kernelEnv})
	}
	if slices.Contains(modes, modeKPf) {
		hKPf = startHarness(b, harnessOptions{NetNS: client.Path(), SnapshotterEnv: kernelEnv})
	}
	// The container node's own dfnydus daemon with P2P, which its nydusd mount through; a fresh
	// one (cold store) for every start, on the same control socket.
	p2pDir, err := os.MkdirTemp("/var/tmp", "dfs-") // short: a socket path
	must(b, err)
	b.Cleanup(func() { os.RemoveAll(p2pDir) })
	p2pSock := filepath.Join(p2pDir, "dfnydus.sock")
	hP2P := startHarness(b, harnessOptions{NetNS: client.Path(), NydusdConfig: lazyConfig, SnapshotterEnv: []string{"DFNYDUS_SOCKET=" + p2pSock}})
	starts := 0

	var results []benchResult
	for _, img := range images {
		size := layoutMB(b, layouts[img.name])
		for i := 0; i < runs; i++ {
			for _, mode := range modes {
				r := benchResult{Image: img.name, Mode: mode, ImageMB: size}
				switch mode {
				case modeOCI:
					h.benchStart(b, regNode, &r, "overlayfs", refs[img.name][0], img, i)
				case modeLazy:
					h.benchStart(b, regNode, &r, "nydus", refs[img.name][1], img, i)
				case modePf:
					// Link bytes include what the prefetch moved until ready; it goes on afterwards.
					hPf.benchStart(b, regNode, &r, "nydus", refs[img.name][1], img, i)
				case modeKLazy:
					hK.benchStart(b, regNode, &r, "nydus", refs[img.name][1], img, i)
				case modeKPf:
					hKPf.benchStart(b, regNode, &r, "nydus", refs[img.name][1], img, i)
				case modeP2P:
					// Lazy (fs_prefetch off) through the node's daemon, whose reads the scheduler
					// sends to the warm neighbour. A new hostname per start: the scheduler still
					// knows the previous daemon's host for a while.
					starts++
					host := fmt.Sprintf("client-%d", starts)
					logDir := os.Getenv("DFNYDUS_BENCH_LOGS") // debug logs of the P2P daemons go there
					level := ""
					if logDir != "" {
						level = "debug"
					}
					d := startDfnydusDaemon(b, daemonOptions{Node: client, Socket: p2pSock, Extra: p2pConfig(sched, client, host), LogLevel: level})
					hP2P.benchStart(b, regNode, &r, "nydus", refs[img.name][1], img, i)
					d.close()
					if logDir != "" {
						must(b, os.WriteFile(filepath.Join(logDir, host+"-"+img.name+".log"), []byte(d.logs.String()), 0o644))
						must(b, os.WriteFile(filepath.Join(logDir, "neighbour.log"), []byte(neighbour.logs.String()), 0o644))
					}
				}
				results = append(results, r)
			}
		}
	}
	printBench(results, runs)
	if out := os.Getenv("DFNYDUS_BENCH_JSON"); out != "" {
		data, err := json.MarshalIndent(results, "", "  ")
		must(b, err)
		must(b, os.WriteFile(out, data, 0o644))
	}
}

// p2pConfig is the daemon configuration that makes it a P2P peer of sched on node nd.
func p2pConfig(sched *schedtest.Scheduler, nd *netns.Node, hostname string) string {
	return fmt.Sprintf("registry:\n  plainHTTP: true\nscheduler:\n  addrs: [%q]\n  advertiseIP: %s\n  hostname: %s\n  uploadPort: 4000\n  piecePort: 4005\n",
		sched.Addr(), nd.Addr, hostname)
}

// warm mounts ref on the daemon (in node nd) with prefetch all and waits until every chunk is read.
func (d *dfnydusDaemon) warm(b *testing.B, nd *netns.Node, ref, name string) {
	b.Helper()
	mp := filepath.Join(d.dir, "mnt-"+name)
	must(b, os.MkdirAll(mp, 0o755))
	runIn(b, nd, testenv.Binary(b), "mount", "--daemon-socket", d.socket, "--plain-http", "--prefetch", "all", ref, mp)
	deadline := time.Now().Add(30 * time.Minute)
	for {
		out, err := nd.Command(context.Background(), testenv.Binary(b), "stat", "--daemon-socket", d.socket, "--json", mp).Output()
		must(b, err)
		var info struct {
			Images []struct {
				Chunks       int `json:"chunks"`
				ChunksCached int `json:"chunks_cached"`
				Prefetch     struct {
					State string `json:"state"`
				} `json:"prefetch"`
			} `json:"images"`
		}
		must(b, json.Unmarshal(out, &info))
		if len(info.Images) == 1 {
			st := info.Images[0]
			if st.Prefetch.State == "done" && st.ChunksCached == st.Chunks {
				return
			}
			if st.Prefetch.State == "incomplete" {
				b.Fatalf("neighbour: prefetch of %s incomplete: %s\n%s", ref, out, tail(d.logs.String(), 20))
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("neighbour: %s never fully read: %s", ref, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// benchStart pulls, creates and runs one container until it is ready, then removes the image so
// that the next start is cold again.
func (h *harness) benchStart(b *testing.B, regNode *netns.Node, r *benchResult, snapshotter, ref string, img benchImage, run int) {
	b.Helper()
	c0 := txBytes(b, regNode)
	args := append([]string{"run", "-pull", "-plain-http", "-snapshotter", snapshotter, "-id", fmt.Sprintf("%s-%s-%d", img.name, snapshotter, run),
		"-ready", img.ready, ref}, img.args...)
	res := h.mustCtr(args...)
	var tm struct{ Pull, Create, Ready float64 }
	for _, l := range strings.Split(res.Stderr, "\n") {
		if rest, ok := strings.CutPrefix(l, "TIMINGS "); ok {
			must(b, json.Unmarshal([]byte(rest), &tm))
		}
	}
	if !strings.Contains(res.Stdout, img.ready) {
		b.Fatalf("%s (%s): output %q has no %q", img.name, snapshotter, res.Stdout, img.ready)
	}
	r.Pull, r.Create, r.Ready = tm.Pull, tm.Create, tm.Ready
	r.Total = tm.Pull + tm.Create + tm.Ready
	r.LinkMB = float64(txBytes(b, regNode)-c0) / 1e6
	if snapshotter == "nydus" && r.Mode != modeP2P {
		// Read before rmi ends it; it has served the start and (with prefetch) what followed.
		for _, p := range h.nydusds() {
			r.NydusdCPU += procCPU(b, p.pid)
			// A kernel-mode start that fell back to FUSE would measure the wrong thing.
			src := mountSource(p.flag("--mountpoint"))
			if kernel := r.Mode == modeKLazy || r.Mode == modeKPf; kernel != strings.HasPrefix(src, "erofs") {
				b.Fatalf("%s (%s): the image is mounted as %q", img.name, r.Mode, src)
			}
		}
	}
	r.Completed = true
	h.mustCtr("rmi", ref)
	h.waitFor("the image's nydusd to stop", func() bool { return len(h.nydusds()) == 0 })
}

// procCPU is the user + system CPU seconds pid has used (proc(5) stat fields 14 and 15, in clock
// ticks of USER_HZ = 100 on Linux).
func procCPU(b *testing.B, pid int) float64 {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	must(b, err)
	// The command name (field 2) may hold spaces: fields are counted after its closing parenthesis.
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("/proc/%d/stat: utime %q stime %q", pid, f[11], f[12])
	}
	return float64(utime+stime) / 100
}

func txBytes(b *testing.B, nd *netns.Node) int64 {
	b.Helper()
	c, err := nd.Counters(context.Background())
	must(b, err)
	return c.TxBytes
}

func runIn(b *testing.B, nd *netns.Node, prog string, args ...string) {
	b.Helper()
	out, err := nd.Command(context.Background(), prog, args...).CombinedOutput()
	if err != nil {
		b.Fatalf("%s %s: %v\n%s", prog, strings.Join(args, " "), err, out)
	}
}

func pythonRootfs(b *testing.B) string {
	b.Helper()
	testenv.RequireTool(b, "debootstrap")
	return strings.TrimSpace(testenv.MustExec(b, "bash", filepath.Join(testenv.RepoRoot(), "scripts", "rootfs.sh"), "python3"))
}

// goTree is the Go toolchain of this machine under usr/local/go (cached).
func goTree(b *testing.B) string {
	b.Helper()
	dir := filepath.Join(cacheRoot, "containers-go-tree")
	if _, err := os.Stat(dir); err == nil {
		return dir
	}
	tmp := dir + ".tmp"
	must(b, os.RemoveAll(tmp))
	must(b, os.MkdirAll(filepath.Join(tmp, "usr", "local"), 0o755))
	testenv.MustExec(b, "cp", "-a", testenv.GoRoot(b), filepath.Join(tmp, "usr", "local", "go"))
	must(b, os.Rename(tmp, dir))
	return dir
}

// dataTree is n incompressible files of size bytes under opt/data (cached): the bulk of an image
// that its start never reads.
func dataTree(b *testing.B, n int, size int64) string {
	b.Helper()
	dir := filepath.Join(cacheRoot, fmt.Sprintf("containers-data-%dx%d", n, size>>20))
	if _, err := os.Stat(dir); err == nil {
		return dir
	}
	tmp := dir + ".tmp"
	must(b, os.RemoveAll(tmp))
	must(b, os.MkdirAll(filepath.Join(tmp, "opt", "data"), 0o755))
	rng := rand.NewChaCha8([32]byte{'d', 'f', 'n', 'y', 'd', 'u', 's'})
	buf := make([]byte, 1<<20)
	for i := 0; i < n; i++ {
		f, err := os.Create(filepath.Join(tmp, "opt", "data", fmt.Sprintf("blob-%02d.bin", i)))
		must(b, err)
		for w := int64(0); w < size; w += int64(len(buf)) {
			_, _ = rng.Read(buf)
			_, err := f.Write(buf)
			must(b, err)
		}
		must(b, f.Close())
	}
	must(b, os.Rename(tmp, dir))
	return dir
}

// benchLayout returns the image's OCI layout (tag "img"), building it once under /var/cache/dfnydus.
func benchLayout(b *testing.B, img benchImage) string {
	b.Helper()
	layout := filepath.Join(cacheRoot, "containers-"+img.name+"-layout")
	if _, err := os.Stat(filepath.Join(layout, "index.json")); err == nil {
		return layout
	}
	trees := img.trees(b)
	tmp := layout + ".tmp"
	must(b, os.RemoveAll(tmp))
	work := testenv.TempDir(b)
	testenv.MustExec(b, "umoci", "init", "--layout", tmp)
	testenv.MustExec(b, "umoci", "new", "--image", tmp+":img")
	for i, tree := range trees {
		tarball := filepath.Join(work, fmt.Sprintf("l%d.tar", i))
		testenv.MustExec(b, "tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-C", tree, "-cf", tarball, ".")
		testenv.MustExec(b, "umoci", "raw", "add-layer", "--image", tmp+":img", tarball)
		os.Remove(tarball)
	}
	must(b, os.Rename(tmp, layout))
	return layout
}

// layoutMB is the compressed size of the layout's layers.
func layoutMB(b *testing.B, layout string) float64 {
	b.Helper()
	var idx struct {
		Manifests []struct{ Digest string } `json:"manifests"`
	}
	testenv.ReadJSON(b, filepath.Join(layout, "index.json"), &idx)
	var m struct {
		Layers []struct{ Size int64 } `json:"layers"`
	}
	testenv.ReadJSON(b, testenv.BlobPath(layout, idx.Manifests[0].Digest), &m)
	var n int64
	for _, l := range m.Layers {
		n += l.Size
	}
	return float64(n) / 1e6
}

func printBench(results []benchResult, runs int) {
	fmt.Printf("container start over a %d Mbit/s link (tc tbf on the registry's veth): containerd 1.6 + runc, nydus-snapshotter v0.16.1\n", benchLinkMbit)
	fmt.Printf("launching dfnydus as nydusd (lazy: fs_prefetch off; + prefetch all: the snapshotter's default template;\n")
	fmt.Printf("warm P2P neighbour: lazy, nydusd mounting through the node's dfnydus daemon, the real scheduler, a neighbour that read the image);\n")
	fmt.Printf("pull + create + run until the workload's ready line; cold caches; %d run(s) each, means; MB = 10^6 bytes\n", runs)
	fmt.Printf("kernel mode: the same nydusd with DFNYDUS_FS_DRIVER=erofs (the kernel's EROFS over the blobs' views); nydusd CPU s: its\n")
	fmt.Printf("user + system seconds until ready (- = no nydusd of its own)\n")
	fmt.Printf("%-8s %9s  %-28s %7s %7s %7s %8s %9s %8s %10s\n", "image", "OCI MB", "mode", "pull s", "create", "ready", "total s", "link MB", "speedup", "nydusd CPU")
	type key struct{ image, mode string }
	sum := map[key]*benchResult{}
	var order []key
	for _, r := range results {
		k := key{r.Image, r.Mode}
		s, ok := sum[k]
		if !ok {
			cp := r
			cp.Pull, cp.Create, cp.Ready, cp.Total, cp.LinkMB, cp.NydusdCPU = 0, 0, 0, 0, 0, 0
			s = &cp
			sum[k] = s
			order = append(order, k)
		}
		n := float64(runs)
		s.Pull += r.Pull / n
		s.Create += r.Create / n
		s.Ready += r.Ready / n
		s.Total += r.Total / n
		s.LinkMB += r.LinkMB / n
		s.NydusdCPU += r.NydusdCPU / n
	}
	for _, k := range order {
		s := sum[k]
		if s.Skipped != "" {
			fmt.Printf("%-8s %9.1f  %-28s %s\n", s.Image, s.ImageMB, s.Mode, "skipped: "+s.Skipped)
			continue
		}
		base := sum[key{k.image, modeOCI}]
		cpu := "-"
		if s.Mode != modeOCI && s.Mode != modeP2P {
			cpu = fmt.Sprintf("%.2f", s.NydusdCPU)
		}
		fmt.Printf("%-8s %9.1f  %-28s %7.2f %7.2f %7.2f %8.2f %9.1f %7.1fx %10s\n", s.Image, s.ImageMB, s.Mode, s.Pull, s.Create, s.Ready, s.Total,
			s.LinkMB, base.Total/max(s.Total, 1e-9), cpu)
	}
}
