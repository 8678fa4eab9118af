package p2p_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"d7y.io/dragonfly/v2/pkg/idgen"
	"google.golang.org/grpc"

	schedclient "github.com/dfnydus/dfnydus/scheduler-client"
	"github.com/dfnydus/dfnydus/test/internal/testenv"
)

// peerLogLine finds a task id and this peer's id in a daemon's "blob is a P2P task" log line.
var peerLogLine = regexp.MustCompile(`blob is a P2P task.*"task": "([0-9a-f]{64})", "peer": "([^"]+)"`)

var peerNames = []string{"p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8"}

// TestP2P runs every scenario of issue 5 on one cluster (registry + scheduler + 9 namespaces).
func TestP2P(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	c := newCluster(t, append(peerNames, "seed")...)
	t.Logf("image %s: %d data blobs, %.1f MB of distinct chunk bytes (what reading every file needs)", c.ref, len(c.blobs), mb(c.unique))
	var want string
	t.Run("eight peers share what one fetched", func(t *testing.T) { want = c.eightPeers(t) })
	if want == "" {
		t.FailNow()
	}
	t.Run("a parent killed mid-transfer", func(t *testing.T) { c.parentKilled(t, want) })
	t.Run("the scheduler stopped", func(t *testing.T) { c.schedulerStopped(t, want) })
	t.Run("a peer serving corrupted pieces", func(t *testing.T) { c.lyingPeer(t, want) })
	t.Run("preheat to a seed peer", func(t *testing.T) { c.preheat(t, want) })
}

func mb(n int64) float64 { return float64(n) / 1e6 }

// timedRuns is how many times the alone and P2P runs alternate: the time ratio is of medians, so
// one noisy run on a shared machine does not decide it.
const timedRuns = 3

// eightPeers: one peer alone and 8 peers at once with P2P, alternating timedRuns times, then 8
// peers at once without P2P; returns the workload's digest (the same on every peer of every run).
func (c *cluster) eightPeers(t *testing.T) string {
	var want string
	check := func(peers []*peerProc, sums []string) {
		for i, s := range sums {
			if want == "" {
				want = s
			}
			if s != want {
				t.Fatalf("peer %s read different bytes: md5 %s, want %s", peers[i].name, s, want)
			}
		}
	}
	// Peers run with the product's default prefetch (all): the image streams in the background
	// while the workload reads. Every run starts with empty caches.
	run := func(names []string, p2p bool) (int64, []time.Duration, []*peerProc) {
		var peers []*peerProc
		for _, n := range names {
			peers = append(peers, c.startPeer(t, n, peerOpts{p2p: p2p, prefetch: "all"}))
		}
		b0 := c.registryBytes(t)
		sums, durs := c.mountAndRun(t, peers)
		check(peers, sums)
		return c.registryBytes(t) - b0, durs, peers
	}
	stopAll := func(peers []*peerProc) {
		for _, p := range peers {
			p.stop(t)
		}
	}
	slowest := func(d []time.Duration) time.Duration {
		s := append([]time.Duration(nil), d...)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		return s[len(s)-1]
	}
	median := func(d []time.Duration) time.Duration {
		s := append([]time.Duration(nil), d...)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		return s[len(s)/2]
	}
	var (
		aloneDurs, onSlowest, onMedian []time.Duration
		aloneBytes, p2pBytes           int64
		fromParents, fromSource        float64
		served                         float64
		interopPeers                   []*peerProc
	)
	for i := 0; i < timedRuns; i++ {
		// One peer alone (P2P on: with nobody to share with it goes back to source).
		b, d, peers := run(peerNames[:1], true)
		stopAll(peers)
		aloneBytes = max(aloneBytes, b)
		aloneDurs = append(aloneDurs, d[0])

		b, d, peers = run(peerNames, true)
		p2pBytes = max(p2pBytes, b)
		onSlowest, onMedian = append(onSlowest, slowest(d)), append(onMedian, median(d))
		if i < timedRuns-1 {
			stopAll(peers)
			continue
		}
		for _, p := range peers {
			fromParents += p.metricLabel(t, "dfnydus_p2p_piece_bytes_total", `from="parent"`)
			fromSource += p.metricLabel(t, "dfnydus_p2p_piece_bytes_total", `from="source"`)
			served += p.metric(t, "dfnydus_p2p_served_bytes_total")
		}
		interopPeers = peers // kept for the interop checks below
	}
	defer stopAll(interopPeers)
	offBytes, offDurs, offPeers := run(peerNames, false)
	stopAll(offPeers)

	ratioOn, ratioOff := float64(p2pBytes)/float64(c.unique), float64(offBytes)/float64(c.unique)
	durs := func(d []time.Duration) string {
		var parts []string
		for _, x := range d {
			parts = append(parts, fmt.Sprintf("%.1f", x.Seconds()))
		}
		return strings.Join(parts, " / ")
	}
	report := fmt.Sprintf(`P2P figures (8 peers, registry link %d Mbit/s, workload reads every file; %.1f MB of distinct chunk bytes;
alone and P2P runs alternate %d times: times are medians, bytes the largest run):
  mode               registry bytes   x unique   slowest peer   median peer
  one peer alone     %10.1f MB   %8.2f   %10.2f s                  (runs: %s s)
  8 peers, P2P on    %10.1f MB   %8.2f   %10.2f s   %9.2f s   (runs: %s s)
  8 peers, P2P off   %10.1f MB   %8.2f   %10.2f s   %9.2f s
  last run with P2P: %.1f MB from parents, %.1f MB from source, %.1f MB served by peers
  slowest P2P peer / one peer alone (medians): %.2f
`, linkMbit, mb(c.unique), timedRuns,
		mb(aloneBytes), float64(aloneBytes)/float64(c.unique), median(aloneDurs).Seconds(), durs(aloneDurs),
		mb(p2pBytes), ratioOn, median(onSlowest).Seconds(), median(onMedian).Seconds(), durs(onSlowest),
		mb(offBytes), ratioOff, slowest(offDurs).Seconds(), median(offDurs).Seconds(),
		fromParents/1e6, fromSource/1e6, served/1e6,
		median(onSlowest).Seconds()/median(aloneDurs).Seconds())
	t.Log("\n" + report)
	if out := os.Getenv("DFNYDUS_P2P_REPORT"); out != "" {
		_ = os.WriteFile(out, []byte(report), 0o644)
	}
	c.checkInterop(t, interopPeers)
	if ratioOn > 1.1 {
		t.Errorf("with P2P the registry served %.2fx the unique bytes, want <= 1.1", ratioOn)
	}
	if ratioOff < 6 {
		t.Errorf("without P2P the registry served only %.2fx the unique bytes: the baseline is not what it should be (~8x)", ratioOff)
	}
	return want
}

// mountAndRun mounts the image on every peer at once and runs the workload on each as soon as its
// mount is up; durations count from the moment the mounts were asked for.
func (c *cluster) mountAndRun(t *testing.T, peers []*peerProc) ([]string, []time.Duration) {
	t.Helper()
	sums := make([]string, len(peers))
	durs := make([]time.Duration, len(peers))
	errs := make([]error, len(peers))
	start := time.Now()
	var wg sync.WaitGroup
	for i, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r := testenv.Exec(t, testenv.Binary(t), "mount", "--daemon-socket", p.socket, "--plain-http", c.ref, p.mp); r.Err != nil {
				errs[i] = fmt.Errorf("mount on %s: %v: %s", p.name, r.Err, r.Stderr)
				return
			}
			sums[i], _, errs[i] = p.workload(t)
			durs[i] = time.Since(start)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return sums, durs
}

// checkInterop asserts what a Rust peer would see of our peers at the scheduler: task ids are
// TaskIDV2ByURLBased of the blob URLs, the tasks succeeded with the blobs' sizes and were
// downloaded by all 8 peers, the hosts are announced with their ports; and a piece fetched over
// Vortex from a peer decodes with the spec's field layout.
func (c *cluster) checkInterop(t *testing.T, peers []*peerProc) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	schedNode := c.schedNode
	sc, err := schedclient.New(ctx, schedclient.Config{Addrs: []string{c.sched.Addr()},
		Host: schedclient.Host{Hostname: "observer", IP: schedNode.Addr.String(), Port: 4999, DisableShared: true},
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return schedNode.DialContext(ctx, "tcp", addr)
		})}})
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close(ctx)
	for _, u := range c.blobs {
		id := idgen.TaskIDV2ByURLBased(u, nil, "", "", nil, "")
		// The peers fetch the pieces no file lives in (the blob's chunk table) after the workload,
		// to finish the task: wait for that.
		task, err := sc.StatTask(ctx, id)
		for err == nil && task.GetState() != "Succeeded" && ctx.Err() == nil {
			time.Sleep(200 * time.Millisecond)
			task, err = sc.StatTask(ctx, id)
		}
		if err != nil {
			t.Errorf("scheduler StatTask(%s) for %s: %v", id, u, err)
			continue
		}
		if task.GetState() != "Succeeded" || task.GetPeerCount() < uint32(len(peers)) || task.GetContentLength() == 0 || task.GetPieceCount() == 0 {
			t.Errorf("task %s: state %s, %d peers, %d bytes in %d pieces; want Succeeded by %d peers", id, task.GetState(), task.GetPeerCount(),
				task.GetContentLength(), task.GetPieceCount(), len(peers))
		}
		// A piece over Vortex, decoded by hand from the spec (vortex-protocol docs/README.md):
		// header = packet id u8, tag u8, length u32 BE; DownloadPiece = 64-byte task id + u32 piece
		// number; PieceContent = u32 metadata length, metadata (number u32, offset u64, length u64,
		// digest len u32 + bytes, parent id len u32 + bytes, traffic type u8, cost u64, created at
		// u64), then the piece bytes.
		c.vortexPiece(t, peers[0], id, task.GetPieceCount()-1)
	}
	// StatPeer of one of our peers, found by the ids its daemon logs, looks like a Rust peer's: the
	// task's peer on our host (ip and ports), finished.
	if m := peerLogLine.FindStringSubmatch(peers[0].stderr.String()); m == nil {
		t.Errorf("peer %s did not log its task and peer ids", peers[0].name)
	} else {
		sp, err := sc.StatPeer(ctx, m[1], m[2])
		for err == nil && sp.GetState() != "Succeeded" && ctx.Err() == nil {
			time.Sleep(200 * time.Millisecond)
			sp, err = sc.StatPeer(ctx, m[1], m[2])
		}
		switch {
		case err != nil:
			t.Errorf("scheduler StatPeer(%s, %s): %v", m[1], m[2], err)
		case sp.GetId() != m[2] || sp.GetTask().GetId() != m[1] || sp.GetState() != "Succeeded" ||
			sp.GetHost().GetIp() != peers[0].node.Addr.String() || sp.GetHost().GetPort() != 4000 || sp.GetHost().GetDownloadPort() != 4005:
			t.Errorf("scheduler StatPeer: peer %s of task %s in state %s on host %s:%d/%d; want %s of %s Succeeded on %s:4000/4005",
				sp.GetId(), sp.GetTask().GetId(), sp.GetState(), sp.GetHost().GetIp(), sp.GetHost().GetPort(), sp.GetHost().GetDownloadPort(),
				m[2], m[1], peers[0].node.Addr)
		}
	}
	hosts, err := sc.ListHosts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, h := range hosts {
		if h.GetPort() == 4000 && h.GetDownloadPort() == 4005 {
			found[h.GetIp()] = true
		}
	}
	for _, p := range peers {
		if !found[p.node.Addr.String()] {
			t.Errorf("scheduler ListHosts has no host %s with ports 4000/4005", p.node.Addr)
		}
	}
}

func (c *cluster) vortexPiece(t *testing.T, p *peerProc, taskID string, number uint32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := p.node.DialContext(ctx, "tcp", net.JoinHostPort(p.node.Addr.String(), "4005"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	req := []byte{7, 0, 0, 0, 0, 68}
	req = append(req, taskID...)
	req = binary.BigEndian.AppendUint32(req, number)
	if _, err := conn.Write(req); err != nil {
		t.Fatal(err)
	}
	hdr := make([]byte, 6)
	if _, err := io.ReadFull(conn, hdr); err != nil {
		t.Fatal(err)
	}
	if hdr[1] != 1 {
		t.Fatalf("vortex answer tag %d, want 1 (PieceContent)", hdr[1])
	}
	// The header's length covers the metadata length and the metadata; the piece bytes follow
	// the TLV (vortex-protocol src/tlv/piece_content.rs).
	value := make([]byte, binary.BigEndian.Uint32(hdr[2:]))
	if _, err := io.ReadFull(conn, value); err != nil {
		t.Fatal(err)
	}
	mlen := binary.BigEndian.Uint32(value)
	if int(mlen) != len(value)-4 {
		t.Fatalf("PieceContent value of %d bytes with a metadata length of %d", len(value), mlen)
	}
	md := value[4 : 4+mlen]
	num := binary.BigEndian.Uint32(md)
	off := binary.BigEndian.Uint64(md[4:])
	length := binary.BigEndian.Uint64(md[12:])
	dlen := binary.BigEndian.Uint32(md[20:])
	digest := string(md[24 : 24+dlen])
	rest := md[24+dlen:]
	plen := binary.BigEndian.Uint32(rest)
	rest = rest[4+plen:]
	if len(rest) != 17 {
		t.Fatalf("piece metadata: %d bytes after the parent id, want 17 (traffic type, cost, created at)", len(rest))
	}
	traffic := rest[0]
	content := make([]byte, length)
	if _, err := io.ReadFull(conn, content); err != nil {
		t.Fatal(err)
	}
	if num != number || length != uint64(len(content)) || off == 0 && number != 0 {
		t.Errorf("vortex piece: number %d offset %d length %d with %d content bytes; asked for piece %d", num, off, length, len(content), number)
	}
	if want := "crc32:" + strconv.FormatUint(uint64(crc32.ChecksumIEEE(content)), 10); digest != want {
		t.Errorf("vortex piece digest %q, want %q", digest, want)
	}
	if traffic != 1 {
		t.Errorf("vortex traffic type %d, want 1 (REMOTE_PEER)", traffic)
	}
}

// parentKilled: p2 downloads from p1 while p1 is killed; every byte p2 reads is still right.
func (c *cluster) parentKilled(t *testing.T, want string) {
	p1 := c.startPeer(t, "p1", peerOpts{p2p: true})
	p1.mount(t, c.ref)
	p2 := c.startPeer(t, "p2", peerOpts{p2p: true})
	p2.mount(t, c.ref)
	go func() { _, _, _ = p1.workload(t) }() // it dies with its daemon
	time.Sleep(time.Second)
	done := make(chan error, 1)
	var sum string
	go func() {
		var err error
		sum, _, err = p2.workload(t)
		done <- err
	}()
	deadline := time.Now().Add(2 * time.Minute)
	for p2.metricLabel(t, "dfnydus_p2p_piece_bytes_total", `from="parent"`) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("p2 never downloaded from a parent")
		}
		time.Sleep(100 * time.Millisecond)
	}
	p1.kill9()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if sum != want {
		t.Fatalf("p2 read md5 %s after its parent died, want %s", sum, want)
	}
	if got := p2.metric(t, "dfnydus_p2p_parent_errors_total"); got < 1 {
		t.Errorf("p2 counted %v parent errors, want >= 1", got)
	}
	t.Logf("p2: %.1f MB from parents, %.1f MB from source after its parent was killed",
		p2.metricLabel(t, "dfnydus_p2p_piece_bytes_total", `from="parent"`)/1e6, p2.metricLabel(t, "dfnydus_p2p_piece_bytes_total", `from="source"`)/1e6)

	// Restarted with its cache, p2 serves everything from its own pieces.
	dir := p2.dir
	p2.stop(t)
	p2 = c.startPeer(t, "p2", peerOpts{p2p: true, dir: dir})
	p2.mount(t, c.ref)
	sum, _, err := p2.workload(t)
	if err != nil || sum != want {
		t.Fatalf("restarted p2: md5 %s (%v), want %s", sum, err, want)
	}
	if got := p2.metricLabel(t, "dfnydus_p2p_piece_bytes_total", `from="source"`) + p2.metricLabel(t, "dfnydus_p2p_piece_bytes_total", `from="parent"`); got != 0 {
		t.Errorf("restarted p2 downloaded %.0f bytes, want 0", got)
	}
	p2.stop(t)
}

// schedulerStopped: with the scheduler gone mid-workload, reads go back to source and are right.
func (c *cluster) schedulerStopped(t *testing.T, want string) {
	p3 := c.startPeer(t, "p3", peerOpts{p2p: true})
	p3.mount(t, c.ref)
	c.sched.Stop()
	defer c.sched.Restart()
	sum, _, err := p3.workload(t)
	if err != nil || sum != want {
		t.Fatalf("p3 without a scheduler: md5 %s (%v), want %s", sum, err, want)
	}
	p3.stop(t)
}

// lyingPeer: p4 serves corrupted pieces (fault injection); p5 catches them by verification,
// reports them, avoids p4 and reads the right bytes.
func (c *cluster) lyingPeer(t *testing.T, want string) {
	p4 := c.startPeer(t, "p4", peerOpts{p2p: true, env: []string{"DFNYDUS_FAULT_CORRUPT_PIECES=1"}})
	p4.mount(t, c.ref)
	if sum, _, err := p4.workload(t); err != nil || sum != want {
		t.Fatalf("p4 (reading from the source): md5 %s (%v), want %s", sum, err, want)
	}
	p5 := c.startPeer(t, "p5", peerOpts{p2p: true})
	p5.mount(t, c.ref)
	sum, _, err := p5.workload(t)
	if err != nil || sum != want {
		t.Fatalf("p5 with a lying parent: md5 %s (%v), want %s", sum, err, want)
	}
	if got := p5.metric(t, "dfnydus_p2p_bad_pieces_total"); got < 1 {
		t.Errorf("p5 caught %v bad pieces, want >= 1 (its parent p4 lies)", got)
	}
	if !strings.Contains(p5.stderr.String(), "parent failed") {
		t.Error("p5 did not log the failing parent")
	}
	p4.stop(t)
	p5.stop(t)
}

// preheat: a seed peer preheats the image; then peers read it with no byte from the registry.
func (c *cluster) preheat(t *testing.T, want string) {
	seed := c.startPeer(t, "seed", peerOpts{p2p: true, seed: true})
	// The scheduler finds seed peers by health-checking announced super seeds every 30 s.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		r := testenv.Exec(t, testenv.Binary(t), "preheat", "--daemon-socket", seed.socket, "--plain-http", c.ref)
		if r.Err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("preheat: %v\n%s", r.Err, r.Stderr)
		}
		time.Sleep(3 * time.Second)
	}
	b0 := c.registryBytes(t)
	var peers []*peerProc
	for _, n := range []string{"p6", "p7"} {
		p := c.startPeer(t, n, peerOpts{p2p: true})
		p.mount(t, c.ref)
		peers = append(peers, p)
	}
	sums, _ := runAll(t, peers)
	for i, p := range peers {
		if sums[i] != want {
			t.Fatalf("%s after preheat: md5 %s, want %s", p.name, sums[i], want)
		}
		if got := p.metricLabel(t, "dfnydus_p2p_piece_bytes_total", `from="source"`); got != 0 {
			t.Errorf("%s took %.0f bytes from the registry after preheat, want 0", p.name, got)
		}
	}
	t.Logf("after preheat: 2 peers read the whole image; the registry link carried %.2f MB (manifests and bootstraps only)",
		mb(c.registryBytes(t)-b0))
}
