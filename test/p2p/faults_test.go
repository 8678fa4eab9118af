package p2p_test

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/dfnydus/dfnydus/kernelfs"
	"github.com/dfnydus/dfnydus/test/internal/testenv"
)

// parentKilled: p1 holds the image; p2 reads it on demand (prefetch off, so its piece downloads
// follow the workload) from p1, and p1 is killed after p2's first piece from it. p2 reads the right
// bytes, counts the failure, blames only p1 and avoids it: it does not try it again for every later
// piece (fewer parent errors after the kill than pieces it fetched after the kill). Restarted on its
// cache, p2 reads everything with no byte downloaded.
func (c *cluster) parentKilled(t *testing.T, want string) {
	w := c.wholeImage(t)
	p1 := c.startPeer(t, "p1", peerOpts{p2p: true})
	p1.mount(t, c.ref)
	sum1, _, err := p1.read(w)
	if want == "" { // -run picked this scenario alone
		want = sum1
	}
	if err != nil || sum1 != want {
		t.Fatalf("p1: md5 %s (%v), want %s", sum1, err, want)
	}
	p2 := c.startPeer(t, "p2", peerOpts{p2p: true})
	p2.mount(t, c.ref)
	done := make(chan error, 1)
	var sum string
	go func() {
		var err error
		sum, _, err = p2.read(w)
		done <- err
	}()
	deadline := time.Now().Add(2 * time.Minute)
	for p2.metricLabel(t, "dfnydus_p2p_piece_bytes_total", `from="parent"`) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("p2 never downloaded from a parent")
		}
		time.Sleep(100 * time.Millisecond)
	}
	bytesAtKill := p2.metric(t, "dfnydus_p2p_piece_bytes_total")
	errorsAtKill := p2.metric(t, "dfnydus_p2p_parent_errors_total")
	p1.kill9()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if sum != want {
		t.Fatalf("p2 read md5 %s after its parent died, want %s", sum, want)
	}
	errs := p2.metric(t, "dfnydus_p2p_parent_errors_total")
	if errs < 1 {
		t.Errorf("p2 counted %v parent errors, want >= 1", errs)
	}
	// Source bytes are not counted in pieces: pieces after the kill are bytes over the piece length.
	piecesAfter := math.Floor((p2.metric(t, "dfnydus_p2p_piece_bytes_total") - bytesAtKill) / float64(c.pieceLength()))
	errorsAfter := errs - errorsAtKill
	t.Logf("p2: %.1f MB from parents, %.1f MB from source; after the kill %.0f pieces and %.0f parent errors",
		p2.metricLabel(t, "dfnydus_p2p_piece_bytes_total", `from="parent"`)/1e6, p2.metricLabel(t, "dfnydus_p2p_piece_bytes_total", `from="source"`)/1e6,
		piecesAfter, errorsAfter)
	if piecesAfter >= 4 && errorsAfter >= piecesAfter {
		t.Errorf("after its parent died p2 fetched %.0f pieces and counted %.0f parent errors: it kept trying the dead parent", piecesAfter, errorsAfter)
	}
	for _, line := range strings.Split(p2.stderr.String(), "\n") {
		if strings.Contains(line, "parent failed") && !strings.Contains(line, `"addr": "`+p1.node.Addr.String()+`"`) {
			t.Errorf("p2 blamed a parent other than the killed p1 (%s): %s", p1.node.Addr, line)
		}
	}

	// Restarted with its cache, p2 serves everything from its own store.
	dir := p2.dir
	p2.stop(t)
	firstLog := p2.stderr.String()
	p2 = c.startPeer(t, "p2", peerOpts{p2p: true, dir: dir})
	p2.mount(t, c.ref)
	sum, _, err = p2.read(w)
	if err != nil || sum != want {
		t.Fatalf("restarted p2: md5 %s (%v), want %s", sum, err, want)
	}
	if got := p2.metricLabel(t, "dfnydus_p2p_piece_bytes_total", `from="source"`) + p2.metricLabel(t, "dfnydus_p2p_piece_bytes_total", `from="parent"`); got != 0 {
		t.Errorf("restarted p2 downloaded %.0f bytes, want 0 (chunks fetched by reads: %.0f, store chunks that failed their digest: %.0f); before the restart:\n%s\nafter:\n%s",
			got, p2.metric(t, "dfnydus_fetch_chunks_total"), p2.metric(t, "dfnydus_store_repaired_total"), tail(firstLog, 40), tail(p2.stderr.String(), 60))
	}
	p2.stop(t)
}

// schedulerStopped: with the scheduler gone mid-workload, reads go back to source and are right.
func (c *cluster) schedulerStopped(t *testing.T, want string) {
	p3 := c.startPeer(t, "p3", peerOpts{p2p: true})
	p3.mount(t, c.ref)
	c.sched.Stop()
	defer c.sched.Restart()
	sum, _, err := p3.read(c.wholeImage(t))
	if err != nil || sum != want {
		t.Fatalf("p3 without a scheduler: md5 %s (%v), want %s", sum, err, want)
	}
	p3.stop(t)
}

// lyingPeer: p4 serves corrupted pieces (fault injection); p5 catches them by verification,
// counts and reports them, blocks p4 (it does not ask p4 again for every later piece) and reads the
// right bytes.
func (c *cluster) lyingPeer(t *testing.T, want string) {
	w := c.wholeImage(t)
	p4 := c.startPeer(t, "p4", peerOpts{p2p: true, env: []string{"DFNYDUS_FAULT_CORRUPT_PIECES=1"}})
	p4.mount(t, c.ref)
	sum4, _, err := p4.read(w)
	if want == "" { // -run picked this scenario alone
		want = sum4
	}
	if err != nil || sum4 != want {
		t.Fatalf("p4 (reading from the source): md5 %s (%v), want %s", sum4, err, want)
	}
	p5 := c.startPeer(t, "p5", peerOpts{p2p: true})
	p5.mount(t, c.ref)
	sum, _, err := p5.read(w)
	if err != nil || sum != want {
		t.Fatalf("p5 with a lying parent: md5 %s (%v), want %s", sum, err, want)
	}
	bad := p5.metric(t, "dfnydus_p2p_bad_pieces_total")
	t.Logf("p5: %.0f bad pieces caught, %.1f MB from parents, %.1f MB from source; the image has %d pieces", bad,
		p5.metricLabel(t, "dfnydus_p2p_piece_bytes_total", `from="parent"`)/1e6, p5.metricLabel(t, "dfnydus_p2p_piece_bytes_total", `from="source"`)/1e6, c.pieces())
	if bad < 1 {
		t.Errorf("p5 caught %v bad pieces, want >= 1 (its parent p4 lies)", bad)
	}
	// p4 corrupts every piece it serves: a p5 that kept asking it would catch one per piece.
	if bad >= float64(c.pieces()) {
		t.Errorf("p5 caught %.0f bad pieces of the image's %d: it kept asking the lying parent", bad, c.pieces())
	}
	blamed := false
	for _, line := range strings.Split(p5.stderr.String(), "\n") {
		if strings.Contains(line, "parent failed") && strings.Contains(line, `"bad_bytes": true`) {
			blamed = true
			if !strings.Contains(line, `"addr": "`+p4.node.Addr.String()+`"`) {
				t.Errorf("p5 blamed a parent other than the lying p4 (%s): %s", p4.node.Addr, line)
			}
		}
	}
	if !blamed {
		t.Error("p5 did not log the lying parent (parent failed, bad_bytes)")
	}
	p4.stop(t)
	p5.stop(t)
}

// preheatOn has the seed preheat the image (every blob held, verified against its digest). The
// scheduler finds seed peers by health-checking announced super seeds every 30 s: until it has
// found this one, preheat is refused and asked again.
func (c *cluster) preheatOn(t *testing.T, seed *peerProc) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		r := testenv.Exec(t, testenv.Binary(t), "preheat", "--daemon-socket", seed.socket, "--plain-http", c.ref)
		if r.Err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("preheat: %v\n%s", r.Err, r.Stderr)
		}
		time.Sleep(3 * time.Second)
	}
}

// preheat: a seed peer preheats the image; then peers read it with no byte from the registry.
func (c *cluster) preheat(t *testing.T, want string) {
	seed := c.startPeer(t, "seed", peerOpts{p2p: true, seed: true})
	c.preheatOn(t, seed)
	// p7 serves its mount through the kernel's EROFS where this kernel can: the same P2P reads
	// through the other driver.
	peers := []*peerProc{c.startPeer(t, "p6", peerOpts{p2p: true}), c.startPeer(t, "p7", peerOpts{p2p: true, fsDriver: "auto"})}
	r := c.mountAndRead(t, peers, c.wholeImage(t))
	if want == "" { // -run picked this scenario alone
		want = r.sums[0]
	}
	if err := kernelfs.Supported(); err == nil {
		if got := testenv.FSType(t, peers[1].mp); got != "erofs" {
			t.Errorf("p7 (fsDriver auto) is served by %q, want erofs", got)
		}
	}
	for i, p := range peers {
		if r.sums[i] != want {
			t.Fatalf("%s after preheat: md5 %s, want %s", p.name, r.sums[i], want)
		}
		if got := p.metricLabel(t, "dfnydus_p2p_piece_bytes_total", `from="source"`); got != 0 {
			t.Errorf("%s took %.0f bytes from the registry after preheat, want 0", p.name, got)
		}
	}
	t.Logf("after preheat: 2 peers read the whole image; the registry link carried %.2f MB (manifests and bootstraps only)", mb(r.regBytes))
	stopAll(t, peers)
	seed.stop(t)
}

// pieces is how many pieces the image's blobs have.
func (c *cluster) pieces() int {
	n := 0
	for _, size := range c.blobSizes {
		pl := pieceLength(size)
		n += int((size + pl - 1) / pl)
	}
	return n
}

// pieceLength is the largest piece length of the image's blobs.
func (c *cluster) pieceLength() int64 {
	var most int64
	for _, size := range c.blobSizes {
		most = max(most, pieceLength(size))
	}
	return most
}

// pieceLength is what Dragonfly derives from a blob's size: size / 500 rounded up to a power of
// two, 4 MiB to 64 MiB.
func pieceLength(size int64) int64 {
	pl := int64(4 << 20)
	for pl < size/500 && pl < 64<<20 {
		pl *= 2
	}
	return pl
}
