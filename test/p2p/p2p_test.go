package p2p_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// scale is how large the scenarios run: the small versions `make test` runs, or the benchmark.
type scale struct {
	runs         int      // one peer alone and the many peers with P2P alternate this many times
	many         []string // the peers that read the whole image at once; the first also runs alone
	withoutP2P   bool     // also run the many peers without a scheduler (the baseline)
	start        []string // the peers of the 5% start
	outage       time.Duration
	rollout      []string // the peers reading when the scheduler goes away
	fresh        string   // the peer that mounts after the outage
	pieceLengths []string // forced scheduler.pieceLength values
	pair         []string // the two peers of a forced piece length
	drivers      []string // the fsDriver of each series of whole-image runs (a, b); the first is the baseline
}

// smallScale keeps the whole package within ~15 minutes on a quiet 2-core machine.
var smallScale = scale{
	runs:         1,
	many:         names("p", 8),
	start:        names("p", 8),
	outage:       20 * time.Second,
	rollout:      names("p", 3),
	fresh:        "fresh",
	pieceLengths: []string{"32MiB"},
	pair:         names("p", 2),
	drivers:      []string{"fuse", "erofs"},
}

// benchScale is `make bench-p2p`.
var benchScale = scale{
	runs:         3,
	many:         names("p", 8),
	withoutP2P:   true,
	start:        names("p", 64),
	outage:       90 * time.Second,
	rollout:      names("p", 4),
	fresh:        "fresh",
	pieceLengths: []string{"32MiB", "64MiB"},
	pair:         names("p", 2),
	drivers:      []string{"fuse", "erofs"},
}

// names are prefix1 .. prefixN.
func names(prefix string, n int) []string {
	var out []string
	for i := 1; i <= n; i++ {
		out = append(out, fmt.Sprintf("%s%d", prefix, i))
	}
	return out
}

// nodesFor lists every node a scale's scenarios use, plus extra.
func (s scale) nodes(extra ...string) []string {
	seen := map[string]bool{}
	var out []string
	for _, group := range [][]string{s.many, s.start, s.rollout, s.pair, {s.fresh}, extra} {
		for _, n := range group {
			if !seen[n] {
				seen[n] = true
				out = append(out, n)
			}
		}
	}
	return out
}

// linkMbit is the registry's link in every scenario but the large blob's.
const linkMbit = 100

// TestP2P is the small version of every scenario, on the Debian minbase image: it asserts the
// bytes each peer reads and the registry byte ratios, and prints the figures. `make bench-p2p`
// runs the same scenarios at full size (TestP2PBench).
func TestP2P(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	requireTools(t)
	layout, srcs := minbaseLayout(t)
	c := newCluster(t, clusterOpts{layout: layout, srcs: srcs, peers: smallScale.nodes("seed"), linkMbit: linkMbit})
	rep := newReport(t, c.title("make test (small versions)"))
	want := c.scenarios(t, rep, smallScale)
	t.Run("a parent killed mid-transfer", func(t *testing.T) { c.parentKilled(t, want) })
	t.Run("the scheduler stopped", func(t *testing.T) { c.schedulerStopped(t, want) })
	t.Run("a peer serving corrupted pieces", func(t *testing.T) { c.lyingPeer(t, want) })
	t.Run("preheat to a seed peer", func(t *testing.T) { c.preheat(t, want) })
}

// TestP2PBench is `make bench-p2p`: scenarios a-g on the realistic image (Debian minbase + the Go
// toolchain), 8 peers for the whole image, 64 for the start. It runs only with DFNYDUS_BENCH_P2P=1.
func TestP2PBench(t *testing.T) {
	if os.Getenv("DFNYDUS_BENCH_P2P") != "1" {
		t.Skip("set DFNYDUS_BENCH_P2P=1 (make bench-p2p)")
	}
	requireTools(t)
	s := benchScale
	if v := os.Getenv("DFNYDUS_BENCH_START_PEERS"); v != "" {
		// Fewer peers for the start scenario, when studying it.
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("DFNYDUS_BENCH_START_PEERS=%q: want a positive number", v)
		}
		s.start = names("p", n)
	}
	// Fewer runs and peers for the whole-image scenarios, when studying them.
	if v := os.Getenv("DFNYDUS_BENCH_RUNS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("DFNYDUS_BENCH_RUNS=%q: want a positive number", v)
		}
		s.runs = n
	}
	if v := os.Getenv("DFNYDUS_BENCH_DRIVERS"); v != "" {
		// Only some file system drivers for the whole-image scenarios (e.g. erofs), when studying them.
		s.drivers = strings.Split(v, ",")
	}
	if v := os.Getenv("DFNYDUS_BENCH_PEERS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("DFNYDUS_BENCH_PEERS=%q: want a positive number", v)
		}
		s.many = names("p", n)
	}
	layout, srcs := realisticLayout(t)
	c := newCluster(t, clusterOpts{layout: layout, srcs: srcs, peers: s.nodes("seed"), linkMbit: linkMbit})
	rep := newReport(t, c.title("make bench-p2p"))
	c.scenarios(t, rep, s)
}

// title heads the report: what the image is.
func (c *cluster) title(what string) string {
	link := fmt.Sprintf("registry link shaped to %d Mbit/s (rate measured before each run)", c.linkMbit)
	if c.linkMbit == 0 {
		link = "registry link unshaped (veth)"
	}
	return fmt.Sprintf(`P2P figures, %s: image of %d files, %.1f MB of file data, %.1f MB of distinct compressed chunks (unique), %d data blobs; %s.
Times count from the mount request to the workload's end; limit = the bytes the workload needs (its files' distinct chunks) / the measured link rate;
registry bytes are what the registry's link sent (x unique: over the workload's distinct chunk bytes); CPU is utime+stime of the dfnydus daemons
over the run, per GB of file data the workloads read; readers CPU is that of the workloads' xargs, cat and md5sum (with the kernel's work in
their reads: FUSE's copies, or EROFS in kernel mode); machine CPU is every core's busy time over the run (everything: daemons, readers,
kernel threads, registry, scheduler), per GB read by all peers. Series marked (erofs) mount with fsDriver erofs (kernel mode).`,
		what, len(c.files), mb(c.fileBytes), mb(c.unique), len(c.blobs), link)
}

// scenarios runs a-g in order and returns the digest of the whole image (for the fault scenarios).
func (c *cluster) scenarios(t *testing.T, rep *report, s scale) string {
	var want string
	// With -run picking later scenarios, want stays "" and each scenario checks its peers agree.
	if !t.Run("a-d the whole image: one peer alone, many with and without P2P", func(t *testing.T) { want = c.wholeImageRuns(t, rep, s) }) {
		t.FailNow()
	}
	var alone run
	t.Run("e many peers start at once", func(t *testing.T) { alone = c.startRuns(t, rep, s.start) })
	t.Run("e many peers start at once from a preheated seed", func(t *testing.T) { c.startFromSeed(t, rep, s.start, alone) })
	t.Run("f scheduler outage", func(t *testing.T) { c.outage(t, rep, s, want) })
	for _, l := range s.pieceLengths {
		t.Run("g forced piece length "+l, func(t *testing.T) { c.forcedPieces(t, rep, l, s.pair, want) })
	}
	return want
}

// wholeImageRuns (a-d): one peer alone and the many peers with P2P read every file, alternating
// s.runs times with empty caches, then (s.withoutP2P) the many peers without a scheduler. Every
// peer of every run reads the same bytes; with P2P the registry sends at most 1.05x the unique
// bytes. Peers run with the product's default prefetch (all): the image streams in while the
// workload reads.
func (c *cluster) wholeImageRuns(t *testing.T, rep *report, s scale) string {
	w := c.wholeImage(t)
	type series struct{ alone, many []run }
	byDriver := make([]series, len(s.drivers))
	var last []*peerProc
	for i := 0; i < s.runs; i++ {
		for d, driver := range s.drivers {
			o := peerOpts{p2p: true, prefetch: "all", fsDriver: driver}
			peers := c.startPeers(t, s.many[:1], o)
			byDriver[d].alone = append(byDriver[d].alone, c.mountAndRead(t, peers, w))
			stopAll(t, peers)

			peers = c.startPeers(t, s.many, o)
			byDriver[d].many = append(byDriver[d].many, c.mountAndRead(t, peers, w))
			if i < s.runs-1 || d < len(s.drivers)-1 {
				stopAll(t, peers)
			}
			last = peers
		}
	}
	defer stopAll(t, last)
	want := byDriver[0].alone[0].sums[0]
	c.checkSource(t, w, want)
	for _, sr := range byDriver {
		for _, r := range append(sr.alone, sr.many...) {
			if r.sums[0] != want {
				t.Fatalf("runs read different bytes: md5 %s and %s", r.sums[0], want)
			}
		}
	}
	for d, driver := range s.drivers {
		rep.add("a. one peer alone"+driverSuffix(driver), byDriver[d].alone...)
		rep.add(fmt.Sprintf("b. %d peers at once, P2P%s", len(s.many), driverSuffix(driver)), byDriver[d].many...)
	}
	alone, many := byDriver[0].alone, byDriver[0].many
	var fromParents, fromSource float64
	for _, p := range last {
		fromParents += p.metricLabel(t, "dfnydus_p2p_piece_bytes_total", `from="parent"`)
		fromSource += p.metricLabel(t, "dfnydus_p2p_piece_bytes_total", `from="source"`)
	}
	slowMany := medianSlowest(many)
	rep.note("registry bytes include each peer's manifest, config and bootstrap layer (%.2f MB), fetched from the registry, not through P2P; the assertions count blob data only", mb(c.metaBytes))
	for d, driver := range s.drivers {
		a, m := medianSlowest(byDriver[d].alone), medianSlowest(byDriver[d].many)
		rep.note("a%s. one peer alone / limit: %.2f (goal <= 1.2)", driverSuffix(driver), a.Seconds()/medianDur(limits(byDriver[d].alone)).Seconds())
		rep.note("b%s. slowest P2P peer / one peer alone: %.2f (goal <= 1.3)", driverSuffix(driver), m.Seconds()/a.Seconds())
	}
	rep.note("b. last P2P run (%s): %.1f MB from parents, %.1f MB from source", s.drivers[len(s.drivers)-1], fromParents/1e6, fromSource/1e6)
	// What the data path owes: a peer the scheduler did not send back to source takes its blob
	// bytes from parents (the registry's access log sent it its manifest and bootstrap, and at most
	// a sliver of the blob: a piece no parent could give); the registry sends at most 1.05x the
	// unique bytes for each peer the scheduler did send back. The scheduler sends one in most runs
	// but is free to send more (scheduler.backToSourceCount, default 200: a peer that finds no
	// parent within retryBackToSourceLimit tries goes back to source), and every peer it sends
	// fetches from the source as a Rust peer would: the report counts them.
	sentBack, mostServed := 0, int64(0)
	var allMany []run
	for _, sr := range byDriver {
		allMany = append(allMany, sr.many...)
	}
	for i, r := range allMany {
		n := r.backToSource()
		sentBack = max(sentBack, n)
		isLast := i == len(allMany)-1
		if ratio := float64(c.blobBytes(r)) / float64(c.unique); n == 0 || ratio > 1.05*float64(n) {
			t.Errorf("with P2P the registry sent %.2fx the unique bytes in blob data (%.2fx with each peer's manifest and bootstrap) with %d peers sent back to source, want <= 1.05x per such peer; %s",
				ratio, float64(r.regBytes)/float64(c.unique), n, c.explainRegistry(t, r, last, isLast))
		}
		for j, sent := range r.regByPeer {
			if !r.sentBack[j] {
				mostServed = max(mostServed, sent)
			}
			if extra := sent - c.metaBytes; !r.sentBack[j] && float64(extra) > 0.05*float64(c.unique) {
				t.Errorf("peer %s was not sent back to source but the registry sent it %.1f MB of blob data (%.0f%% of the unique bytes); %s",
					last[j].name, mb(extra), 100*float64(extra)/float64(c.unique), c.explainRegistry(t, r, last, isLast))
			}
		}
	}
	rep.note("b. the scheduler sent at most %d of the %d peers back to source in a run; the registry sent a peer it did not send back at most %.2f MB (its manifest and bootstrap: %.2f MB)",
		sentBack, len(s.many), mb(mostServed), mb(c.metaBytes))
	c.checkInterop(t, last)
	stopAll(t, last)

	if s.withoutP2P {
		peers := c.startPeers(t, s.many, peerOpts{prefetch: "all"})
		off := c.mountAndRead(t, peers, w)
		stopAll(t, peers)
		if off.sums[0] != want {
			t.Fatalf("without P2P: md5 %s, want %s", off.sums[0], want)
		}
		rep.add(fmt.Sprintf("c. %d peers at once, no P2P", len(s.many)), off)
		rep.note("c. slowest P2P peer / slowest without P2P: %.2f (goal <= 0.3)", slowMany.Seconds()/off.slowest().Seconds())
	}
	rep.note("d. goal: per-peer CPU-s/GB <= 3 (columns above)")
	if c.srcs != nil {
		fl := c.measureFloor(t, w, s.runs, want)
		gb := float64(w.bytes) / 1e9
		perPeer := func(runs []run) float64 {
			var xs []float64
			for _, r := range runs {
				xs = append(xs, medianF(r.cpuPerGB()))
			}
			return medianF(xs)
		}
		rep.note("d. CPU floor of this read on this machine: %.2f CPU-s/GB = FUSE serving the same files from memory %.2f (median of %d) + decoding and verifying each distinct chunk once %.2f; one peer alone spent %.2fx the floor, a P2P peer %.2fx",
			fl.total()/gb, fl.fuse/gb, s.runs, fl.decode/gb, perPeer(alone)/(fl.total()/gb), perPeer(many)/(fl.total()/gb))
	}
	return want
}

// driverSuffix names a file system driver in the report ("" for FUSE, the default).
func driverSuffix(driver string) string {
	if driver == "" || driver == "fuse" {
		return ""
	}
	return " (" + driver + ")"
}

func medianSlowest(runs []run) time.Duration {
	var d []time.Duration
	for _, r := range runs {
		d = append(d, r.slowest())
	}
	return medianDur(d)
}

func limits(runs []run) []time.Duration {
	var d []time.Duration
	for _, r := range runs {
		d = append(d, r.limit())
	}
	return d
}

// startRuns (e): one peer alone, then every peer of names at the same moment, mount the image with
// prefetch off and read the same 5% of its files (a container start). The registry sends at most
// 1.1x what the peer alone fetched; the daemons' memory is printed.
func (c *cluster) startRuns(t *testing.T, rep *report, names []string) run {
	w := c.startSlice(t)
	peers := c.startPeers(t, names[:1], peerOpts{p2p: true})
	alone := c.mountAndRead(t, peers, w)
	stopAll(t, peers)
	peers = c.startPeers(t, names, peerOpts{p2p: true})
	many := c.mountAndRead(t, peers, w)
	// The scheduler sends peers that register before any peer holds a piece back to source after
	// its retries (scheduling.go: no parent in BackToSource or Succeeded state yet): each of them
	// fetches what it reads from the registry, as Rust peers would. Count them from the peers' logs.
	backToSource := 0
	for _, p := range peers {
		if strings.Contains(p.stderr.String(), "scheduler: back to source") {
			backToSource++
		}
	}
	stopAll(t, peers)
	c.checkSource(t, w, alone.sums[0])
	if many.sums[0] != alone.sums[0] {
		t.Fatalf("the start read md5 %s with %d peers, %s alone", many.sums[0], len(names), alone.sums[0])
	}
	rep.add("e. one peer alone, 5% start", alone)
	rep.add(fmt.Sprintf("e. %d peers at once, 5%% start", len(names)), many)
	var sum, most int64
	for _, r := range many.rss {
		sum += r
		most = max(most, r)
	}
	rep.note("e. the start reads %d files, %.1f MB (%.1f MB of distinct chunks); slowest of %d / one alone: %.2f (goal <= 2); daemons' VmRSS: sum %.0f MB, max %.0f MB (memoryCache %s)",
		w.files, mb(w.bytes), mb(w.unique), len(names), many.slowest().Seconds()/alone.slowest().Seconds(), mb(sum), mb(most), peerMemoryCache)
	rep.note("e. registry bytes with %d peers / one alone: %.2f (%.2f in blob data, without each peer's %.2f MB of manifest and bootstrap)",
		len(names), float64(many.regBytes)/float64(alone.regBytes), float64(c.blobBytes(many))/float64(c.blobBytes(alone)), mb(c.metaBytes))
	rep.note("e. the scheduler sent %d of the %d peers back to source", backToSource, len(names))
	var cpu float64
	for _, v := range many.cpu {
		cpu += v
	}
	// The machine's own limit: every daemon shares its cores, so no start can end before the CPU
	// they all spent has run (64 daemons on 2 cores; on a real rollout each node has its own).
	rep.note("e. CPU floor of the %d-peer run on this machine: the daemons spent %.1f CPU-s, %.1f s of its %d cores; the alone peer spent %.2f CPU-s",
		len(names), cpu, cpu/float64(runtime.NumCPU()), runtime.NumCPU(), alone.cpu[0])
	// What the data path owes: no byte fetched twice by one peer, every other peer served by
	// parents: the registry sends at most what one peer alone fetches for each peer the
	// scheduler sent back to source (the goal, 1.1x overall, also needs the scheduler to send
	// only one, e.g. with a seed peer in the cluster).
	ratio := float64(c.blobBytes(many)) / float64(c.blobBytes(alone))
	if backToSource == 0 || ratio > 1.1*float64(backToSource) {
		t.Errorf("%d peers starting at once made the registry send %.1f MB of blob data, %.2fx what one peer alone fetched (%.1f MB), with %d peers sent back to source; want <= 1.1x per such peer",
			len(names), mb(c.blobBytes(many)), ratio, mb(c.blobBytes(alone)), backToSource)
	}
	return alone
}

// startFromSeed (e, the rollout way): a seed peer preheats the image, then every peer of names
// starts it at the same moment. The scheduler sends none of them back to source (the task has a
// parent that holds it all): the start costs the registry nothing but each peer's manifest and
// bootstrap, and the whole rollout (preheat + start) costs one fetch of the image's blobs; that is
// compared with what one peer alone fetched for the start without a seed (alone).
func (c *cluster) startFromSeed(t *testing.T, rep *report, names []string, alone run) {
	w := c.startSlice(t)
	seed := c.startPeer(t, "seed", peerOpts{p2p: true, seed: true})
	defer seed.stop(t)
	b0 := c.registryBytes(t)
	c.preheatOn(t, seed)
	preheated := c.settledRegistryBytes(t) - b0
	peers := c.startPeers(t, names, peerOpts{p2p: true})
	r := c.mountAndRead(t, peers, w)
	stopAll(t, peers)
	if alone.sums != nil && r.sums[0] != alone.sums[0] {
		t.Fatalf("the start from a seed read md5 %s, without one %s", r.sums[0], alone.sums[0])
	}
	c.checkSource(t, w, r.sums[0])
	rep.add(fmt.Sprintf("e. %d peers, 5%% start, preheated", len(names)), r)
	sentBack := r.backToSource()
	rep.note("e (seed). preheat: the registry sent the seed %.1f MB; the start then %.2f MB of blob data; the scheduler sent %d of the %d peers back to source",
		mb(preheated), mb(c.blobBytes(r)), sentBack, len(names))
	if alone.sums != nil {
		rep.note("e (seed). the rollout's registry bytes (preheat + start) / one peer alone's start without a seed: %.2f (goal <= 1.1); slowest of %d / one alone: %.2f (goal <= 2)",
			float64(preheated+c.blobBytes(r))/float64(c.blobBytes(alone)), len(names), r.slowest().Seconds()/alone.slowest().Seconds())
	}
	// What the data path owes: with a parent holding every piece, no peer reads from the registry
	// (a peer the scheduler still sent back to source would, as a Rust peer would: counted).
	if extra := c.blobBytes(r); float64(extra) > 0.05*float64(c.unique)*float64(1+sentBack) {
		t.Errorf("after a preheat, %d peers starting made the registry send %.1f MB of blob data (%d sent back to source); want their bytes from the seed and each other",
			len(names), mb(extra), sentBack)
	}
	var blobs int64
	for _, n := range c.blobSizes {
		blobs += n
	}
	if float64(preheated) > 1.1*float64(blobs+c.metaBytes) {
		t.Errorf("the preheat made the registry send %.1f MB, the image's blobs are %.1f MB", mb(preheated), mb(blobs))
	}
}

// outage (f): the rollout peers read the whole image; the scheduler stops for s.outage while they
// do, and starts again (empty). Reads stay correct (from the source while the scheduler is away);
// within 2 minutes every task is registered again with every rollout peer; then a fresh peer reads
// the whole image from them: the registry sends less than 5% of the unique bytes for it.
func (c *cluster) outage(t *testing.T, rep *report, s scale, want string) {
	w := c.wholeImage(t)
	peers := c.startPeers(t, s.rollout, peerOpts{p2p: true, prefetch: "all"})
	var stopped, back time.Time
	r := c.mountAndReadDuring(t, peers, w, func() {
		time.Sleep(2 * time.Second) // the rollout is under way: mounts made, tasks registered
		c.sched.Stop()
		stopped = time.Now()
		time.Sleep(s.outage)
		c.sched.Restart()
		back = time.Now()
	})
	if want == "" {
		want = r.sums[0]
	}
	if r.sums[0] != want {
		t.Fatalf("rollout through the outage: md5 %s, want %s", r.sums[0], want)
	}
	rep.add(fmt.Sprintf("f. %d peers, %.0f s outage", len(peers), s.outage.Seconds()), r)
	rep.note("f. the rollout's slowest peer finished %.1f s after the scheduler stopped (it was away %.0f s)",
		r.start.Add(r.slowest()).Sub(stopped).Seconds(), s.outage.Seconds())

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	obs := c.observer(t, ctx)
	defer obs.Close(context.Background())
	registered := true
	for _, u := range c.blobs {
		id := taskID(u)
		for {
			sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
			task, err := obs.StatTask(sctx, id)
			scancel()
			if err == nil && task.GetPeerCount() >= uint32(len(peers)) {
				break
			}
			if ctx.Err() != nil {
				// Printed, not failed: the scheduler's StatTask may count only some peer states;
				// the fresh peer below is what the recovery must deliver (its pieces from parents).
				t.Logf("2 min after the scheduler came back, StatTask of %s counts %d peers (%v); the rollout had %d",
					id, task.GetPeerCount(), err, len(peers))
				registered = false
				break
			}
			time.Sleep(time.Second)
		}
	}
	if registered {
		rep.note("f. every task was registered again with the rollout's %d peers %.1f s after the scheduler came back", len(peers), time.Since(back).Seconds())
	} else {
		rep.note("f. StatTask did not count every rollout peer within 2 min after the scheduler came back")
	}

	fresh := c.startPeers(t, []string{s.fresh}, peerOpts{p2p: true, prefetch: "all"})
	f := c.mountAndRead(t, fresh, w)
	parents := fresh[0].metricLabel(t, "dfnydus_p2p_piece_bytes_total", `from="parent"`)
	stopAll(t, fresh)
	stopAll(t, peers)
	if f.sums[0] != want {
		t.Fatalf("fresh peer after the outage: md5 %s, want %s", f.sums[0], want)
	}
	rep.add("f. a fresh peer after the outage", f)
	rep.note("f. the fresh peer took %.1f MB from parents; the registry sent %.2f MB", parents/1e6, mb(f.regBytes))
	if ratio := float64(c.blobBytes(f)) / float64(c.unique); ratio >= 0.05 {
		t.Errorf("after the outage a fresh peer made the registry send %.1f MB of blob data, %.2fx the unique bytes; want < 0.05 (its pieces from parents)",
			mb(c.blobBytes(f)), ratio)
	}
}

// forcedPieces (g): with scheduler.pieceLength forced, the first peer reads the whole image from the
// source and the second from the first: the registry sends at most 1.05x the unique bytes in all.
func (c *cluster) forcedPieces(t *testing.T, rep *report, length string, pair []string, want string) {
	w := c.wholeImage(t)
	var runs []run
	for _, n := range pair {
		peers := c.startPeers(t, []string{n}, peerOpts{p2p: true, prefetch: "all", pieceLength: length})
		r := c.mountAndRead(t, peers, w)
		if want == "" {
			want = r.sums[0]
		}
		if r.sums[0] != want {
			t.Fatalf("%s with %s pieces: md5 %s, want %s", n, length, r.sums[0], want)
		}
		runs = append(runs, r)
		defer stopAll(t, peers) // the first serves the second
	}
	rep.add(fmt.Sprintf("g. %s pieces: first peer", length), runs[0])
	rep.add(fmt.Sprintf("g. %s pieces: second peer", length), runs[1])
	if ratio := float64(c.blobBytes(runs[0])+c.blobBytes(runs[1])) / float64(c.unique); ratio > 1.05 {
		t.Errorf("with %s pieces two peers made the registry send %.2fx the unique bytes, want <= 1.05", length, ratio)
	}
}
