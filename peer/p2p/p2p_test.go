package p2p

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	commonv2 "d7y.io/api/v2/pkg/apis/common/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"

	"github.com/dfnydus/dfnydus/blobstore"
	"github.com/dfnydus/dfnydus/peer"
	"github.com/dfnydus/dfnydus/peer/daemon"
	"github.com/dfnydus/dfnydus/peer/source"
	"github.com/dfnydus/dfnydus/peer/upload"
	"github.com/dfnydus/dfnydus/peer/vortex"
	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/builder"
	schedclient "github.com/dfnydus/dfnydus/scheduler-client"
)

func TestPieceLengthFor(t *testing.T) {
	for _, tc := range []struct{ size, want uint64 }{
		{0, 4 << 20},
		{1 << 20, 4 << 20},
		{2000 << 20, 4 << 20},  // 4 MiB exactly
		{2001 << 20, 8 << 20},  // just over: next power of two
		{5000 << 20, 16 << 20}, // 10 MiB -> 16 MiB
		{1 << 40, 64 << 20},    // clamped
	} {
		if got := PieceLengthFor(tc.size); got != tc.want {
			t.Errorf("PieceLengthFor(%d) = %d, want %d", tc.size, got, tc.want)
		}
	}
}

// countingSource counts bytes read from a local blob dir.
type countingSource struct {
	inner source.Source
	bytes atomic.Int64
	mu    sync.Mutex
	reqs  [][2]int64 // offset, length of every request, in order
}

func (s *countingSource) requests() [][2]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][2]int64(nil), s.reqs...)
}

func (s *countingSource) ReadRange(ctx context.Context, id string, off, n int64) (io.ReadCloser, error) {
	s.mu.Lock()
	s.reqs = append(s.reqs, [2]int64{off, n})
	s.mu.Unlock()
	rc, err := s.inner.ReadRange(ctx, id, off, n)
	if err != nil {
		return nil, err
	}
	data, err := io.ReadAll(rc)
	rc.Close()
	s.bytes.Add(int64(len(data)))
	return io.NopCloser(bytes.NewReader(data)), err
}
func (s *countingSource) String() string { return "local" }
func (s *countingSource) Close() error   { return nil }

// fixture is a nydus image of ~11 MB of incompressible data in one blob (3 pieces of 4 MiB; many
// 256 KiB chunks straddle piece boundaries).
type fixture struct {
	img     *rafs.Image
	blobDir string
	blob    []byte
	blobID  string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(1, 2))
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, size := range []int{3<<20 + 4321, 5<<20 + 12345, 3<<20 - 777} {
		data := make([]byte, size)
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		if err := os.WriteFile(filepath.Join(src, "f"+strconv.Itoa(i)), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	opts := builder.DefaultOptions()
	opts.ChunkSize = 256 << 10
	blobs := filepath.Join(dir, "blobs")
	res, err := builder.Build(context.Background(), opts, blobs, []builder.Layer{builder.PathLayer(src)})
	if err != nil {
		t.Fatal(err)
	}
	id := res.Image.Blobs[0].ID
	data, err := os.ReadFile(filepath.Join(blobs, id))
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{img: res.Image, blobDir: blobs, blob: data, blobID: id}
}

// testPeer is a node (blob store + fetcher) with a Manager, its upload gRPC and Vortex servers on
// loopback, and the fixture image mounted (attached + its chunk table in the fetcher).
type testPeer struct {
	m       *Manager
	f       *peer.Fetcher
	st      *blobstore.Store
	src     *countingSource
	attach  source.Source
	im      *peer.Image
	parent  schedclient.Parent
	reg     *prometheus.Registry
	stop    func()
	corrupt atomic.Int32 // 0 honest, 1 flips a byte (crc no longer matches), 2 flips a byte and sends its crc
	// corruptAt, when >= 0, is the blob offset of the byte mode 2 flips (else the piece's middle).
	corruptAt atomic.Int64
}

const testURL = "http://registry.test/v2/app/blobs/sha256:"

type peerOpts struct {
	dir         string // store directory (a temp dir if empty)
	pieceLength uint64
	noServers   bool
	ranges      bool // serve DownloadRange, as our daemons do (the test peers otherwise look like Rust peers)
	noComplete  bool // do not complete touched pieces in the background
	noSource    bool // never go back to source (DisableBackToSource)
}

func startPeer(t *testing.T, fx *fixture, name string) *testPeer {
	return startPeerWith(t, fx, name, peerOpts{})
}

func startPeerWith(t *testing.T, fx *fixture, name string, o peerOpts) *testPeer {
	t.Helper()
	if o.dir == "" {
		o.dir = t.TempDir()
	}
	st, err := blobstore.Open(o.dir, blobstore.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	p := &testPeer{st: st, src: &countingSource{inner: source.NewLocal(fx.blobDir)}, reg: prometheus.NewRegistry()}
	p.corruptAt.Store(-1)
	p.f = peer.NewFetcher(peer.Options{Store: st})
	p.m, err = New(Config{HostID: name, Fetcher: p.f, PieceLength: o.pieceLength, CompletePieces: !o.noComplete, DisableBackToSource: o.noSource, Metrics: p.reg,
		OpenURL: func(ctx context.Context, url string) (source.Source, string, int64, error) {
			return p.src, fx.blobID, int64(len(fx.blob)), nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	var stops []func()
	if !o.noServers {
		gl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		vl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		vport := vl.Addr().(*net.TCPAddr).Port
		up := upload.NewServer(upload.Config{HostID: name, IP: "127.0.0.1", TCPPort: vport}, p.m)
		g := grpc.NewServer()
		up.Register(g)
		go func() { _ = g.Serve(gl) }()
		var ranges vortex.RangeHandler
		if o.ranges {
			ranges = func(ctx context.Context, id string, off, n uint64) (vortex.Piece, io.ReadCloser, error) {
				pc, rc, err := p.m.ServeRange(ctx, id, off, n)
				return p.corrupted(pc, rc, err)
			}
		}
		vs := vortex.NewServerWithOptions(func(ctx context.Context, id string, n uint32) (vortex.Piece, io.ReadCloser, error) {
			pc, rc, err := p.m.ServePiece(ctx, id, n)
			return p.corrupted(pc, rc, err)
		}, nil, vortex.ServerOptions{Ranges: ranges})
		go func() { _ = vs.Serve(vl) }()
		p.parent = schedclient.Parent{PeerID: name, HostID: name, IP: "127.0.0.1", Port: gl.Addr().(*net.TCPAddr).Port, DownloadPort: vport}
		stops = append(stops, func() { up.Shutdown(); g.Stop(); vs.Close() })
	}
	p.attach, err = p.m.Attach(context.Background(), daemon.AttachedImage{Name: "test", RAFS: fx.img, Source: p.src,
		Blobs: []daemon.BlobRef{{ID: fx.blobID, URL: testURL + fx.blobID, Size: int64(len(fx.blob))}}})
	if err != nil {
		t.Fatal(err)
	}
	if p.im, err = p.f.NewImage("test", fx.img, p.attach); err != nil {
		t.Fatal(err)
	}
	var once bool
	p.stop = func() {
		if once {
			return
		}
		once = true
		for _, s := range stops {
			s()
		}
		p.im.Close()
		p.attach.Close()
		p.m.Close()
		st.Close()
	}
	t.Cleanup(p.stop)
	return p
}

// corrupted applies the peer's corruption mode to what it serves (a piece or a range).
func (p *testPeer) corrupted(pc vortex.Piece, rc io.ReadCloser, err error) (vortex.Piece, io.ReadCloser, error) {
	mode := p.corrupt.Load()
	if err != nil || mode == 0 {
		return pc, rc, err
	}
	data, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		return pc, nil, err
	}
	at := int64(len(data) / 2)
	if o := p.corruptAt.Load(); o >= 0 {
		if o < int64(pc.Offset) || o >= int64(pc.Offset+pc.Length) {
			return pc, io.NopCloser(bytes.NewReader(data)), nil
		}
		at = o - int64(pc.Offset)
	}
	data[at] ^= 0x5a
	if mode == 2 {
		pc.Digest = vortex.CRC32Digest(data)
	}
	return pc, io.NopCloser(bytes.NewReader(data)), nil
}

// useParents makes the peer's task download from the given parents, as a NormalTaskResponse would.
func (p *testPeer) useParents(parents ...*testPeer) {
	p.m.mu.Lock()
	defer p.m.mu.Unlock()
	for _, t := range p.m.tasks {
		t.mu.Lock()
		t.parents = nil
		for _, q := range parents {
			t.parents = append(t.parents, q.parent)
		}
		t.mu.Unlock()
	}
}

func (p *testPeer) task(t *testing.T) *task {
	t.Helper()
	p.m.mu.Lock()
	defer p.m.mu.Unlock()
	for _, tk := range p.m.tasks {
		return tk
	}
	t.Fatal("no task")
	return nil
}

// readAll reads every file of the image through the mount's chunk reader and checks the bytes.
func (p *testPeer) readAll(t *testing.T, fx *fixture) error {
	t.Helper()
	for _, c := range blobChunks(fx.img, 0) {
		if _, err := p.im.ReadChunk(context.Background(), fx.img.Blobs[0], &c, nil); err != nil {
			return err
		}
		rc, err := p.attach.ReadRange(context.Background(), fx.blobID, int64(c.CompressedOffset), int64(c.CompressedSize))
		if err != nil {
			return err
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return err
		}
		want := fx.blob[c.CompressedOffset : c.CompressedOffset+uint64(c.CompressedSize)]
		if !bytes.Equal(got, want) {
			t.Fatalf("chunk %d at %d: wrong bytes", c.Index, c.CompressedOffset)
		}
	}
	return nil
}

// holdAll asks the peer for every piece, as children do: the peer brings in whatever it lacks.
func (p *testPeer) holdAll(t *testing.T) {
	t.Helper()
	tk := p.task(t)
	for n := uint32(0); n < tk.lay.count; n++ {
		if _, err := p.m.WaitPiece(context.Background(), tk.id, n); err != nil {
			t.Fatalf("piece %d: %v", n, err)
		}
	}
}

// storedMatches checks every verified byte in the store against the blob.
func (p *testPeer) storedMatches(t *testing.T, fx *fixture) {
	t.Helper()
	b, ok := p.st.Lookup(fx.blobID)
	if !ok {
		return
	}
	for _, r := range b.Ranges() {
		got := make([]byte, r.Len)
		if err := b.ReadAt(got, r.Off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, fx.blob[r.Off:r.Off+r.Len]) {
			t.Fatalf("the store holds wrong bytes in [%d, +%d) as verified", r.Off, r.Len)
		}
	}
}

func counter(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	return testutil.ToFloat64(c)
}

// blobChunks lists the distinct chunks of blob bi by compressed offset.
func blobChunks(img *rafs.Image, bi uint32) []rafs.Chunk {
	byOff := map[uint64]rafs.Chunk{}
	_ = img.Walk(func(_ string, n *rafs.Node) error {
		if !n.Inode.IsReg() {
			return nil
		}
		for _, c := range n.Inode.Chunks {
			if c.BlobIndex == bi {
				byOff[c.CompressedOffset] = c
			}
		}
		return nil
	})
	out := make([]rafs.Chunk, 0, len(byOff))
	for _, c := range byOff {
		out = append(out, c)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].CompressedOffset < out[b].CompressedOffset })
	return out
}

// Every piece length Dragonfly peers cut, the forced long ones of model-sized blobs included.
func TestPeersShareVerifiedPieces(t *testing.T) {
	for _, pl := range []uint64{0, 32 << 20, 64 << 20} {
		t.Run(fmt.Sprintf("piece length %d MiB", pl>>20), func(t *testing.T) {
			fx := newFixture(t)
			a := startPeerWith(t, fx, "a", peerOpts{pieceLength: pl})
			b := startPeerWith(t, fx, "b", peerOpts{pieceLength: pl})
			if err := a.readAll(t, fx); err != nil {
				t.Fatal(err)
			}
			b.useParents(a)
			if err := b.readAll(t, fx); err != nil {
				t.Fatal(err)
			}
			b.holdAll(t)
			if got := b.src.bytes.Load(); got != 0 {
				t.Errorf("peer b read %d bytes from the source, want 0 (all from its parent)", got)
			}
			if got := a.src.bytes.Load(); got != int64(len(fx.blob)) {
				t.Errorf("peer a read %d bytes from the source, want every byte of the blob once (%d)", got, len(fx.blob))
			}
			tk := b.task(t)
			if got := counter(t, b.m.met.pieces.WithLabelValues(trafficParent)); got != float64(tk.lay.count) {
				t.Errorf("peer b got %v pieces from its parent, want %d", got, tk.lay.count)
			}
			for _, p := range []*testPeer{a, b} {
				info, err := p.m.Task(context.Background(), tk.id)
				if err != nil || !info.Done {
					t.Errorf("task %+v, %v: want every piece held", info, err)
				}
				p.storedMatches(t, fx)
			}
		})
	}
}

// One verified copy: a blob read through a mount is stored once, compressed, as it is in the blob.
func TestOneCopyInTheStore(t *testing.T) {
	fx := newFixture(t)
	a := startPeer(t, fx, "a")
	if err := a.readAll(t, fx); err != nil {
		t.Fatal(err)
	}
	a.holdAll(t)
	if err := a.st.Flush(); err != nil {
		t.Fatal(err)
	}
	s := a.st.Stats()
	if s.VerifiedBytes != int64(len(fx.blob)) || s.PendingBytes != 0 {
		t.Errorf("store: %+v, want exactly the blob's %d bytes verified", s, len(fx.blob))
	}
}

func TestDemandTravelsToTheParent(t *testing.T) {
	// b asks a for pieces a does not hold yet: a fetches them (from the source) to answer, so the
	// source serves every byte once.
	fx := newFixture(t)
	a, b := startPeer(t, fx, "a"), startPeer(t, fx, "b")
	b.useParents(a)
	if err := b.readAll(t, fx); err != nil {
		t.Fatal(err)
	}
	b.holdAll(t)
	if got := b.src.bytes.Load(); got != 0 {
		t.Errorf("peer b read %d bytes from the source, want 0", got)
	}
	if got := a.src.bytes.Load(); got != int64(len(fx.blob)) {
		t.Errorf("peer a read %d bytes from the source, want %d", got, len(fx.blob))
	}
}

func TestLyingParentIsCaughtAndAvoided(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode int32
	}{{"bytes that fail the piece crc", 1}, {"bytes with a matching crc that fail chunk digests", 2}} {
		t.Run(tc.name, func(t *testing.T) { testLyingParent(t, tc.mode) })
	}
}

func testLyingParent(t *testing.T, mode int32) {
	fx := newFixture(t)
	a, b := startPeer(t, fx, "a"), startPeer(t, fx, "b")
	if err := a.readAll(t, fx); err != nil {
		t.Fatal(err)
	}
	a.holdAll(t)
	a.corrupt.Store(mode)
	b.useParents(a)
	if err := b.readAll(t, fx); err != nil {
		t.Fatal(err) // readAll also checks every byte
	}
	if got := counter(t, b.m.met.badPieces); got < 1 {
		t.Errorf("bad pieces counted: %v, want >= 1", got)
	}
	if got := b.src.bytes.Load(); got == 0 || got > int64(len(fx.blob)) {
		t.Errorf("peer b read %d bytes from the source, want some and at most the blob (%d) once its parent was caught", got, len(fx.blob))
	}
	tk := b.task(t)
	tk.mu.Lock()
	blocked := tk.blocked["a"]
	tk.mu.Unlock()
	if !blocked {
		t.Error("the lying parent is not avoided")
	}
	b.storedMatches(t, fx)
}

// Bytes no chunk covers (the blob's tail: blob.meta, ToC, tar headers) are checked against the
// blob digest: a parent that lies there is caught, its bytes dropped, and the piece comes again.
func TestLyingParentInBytesNoChunkCovers(t *testing.T) {
	fx := newFixture(t)
	a, b := startPeer(t, fx, "a"), startPeer(t, fx, "b")
	a.holdAll(t)
	cs := blobChunks(fx.img, 0)
	last := cs[len(cs)-1]
	tail := int64(last.CompressedOffset) + int64(last.CompressedSize)
	if tail >= int64(len(fx.blob)) {
		t.Fatal("the fixture blob has no bytes after its chunks")
	}
	a.corruptAt.Store(tail + 3)
	a.corrupt.Store(2)
	b.useParents(a)
	tk := b.task(t)
	lastPiece := tk.lay.count - 1
	// The first attempt gets the lie; it is dropped, a is avoided, and the source gives the truth.
	deadline := time.Now().Add(20 * time.Second)
	for !tk.held(lastPiece) && time.Now().Before(deadline) {
		_, _ = b.m.WaitPiece(context.Background(), tk.id, lastPiece)
	}
	if !tk.held(lastPiece) {
		t.Fatal("the last piece never became held")
	}
	tk.mu.Lock()
	blocked := tk.blocked["a"]
	tk.mu.Unlock()
	if !blocked {
		t.Error("the parent that lied in uncovered bytes is not avoided")
	}
	b.storedMatches(t, fx)
}

func TestDeadParentFallsBackToSource(t *testing.T) {
	fx := newFixture(t)
	a, b := startPeer(t, fx, "a"), startPeer(t, fx, "b")
	if err := a.readAll(t, fx); err != nil {
		t.Fatal(err)
	}
	a.stop()
	b.useParents(a)
	if err := b.readAll(t, fx); err != nil {
		t.Fatal(err)
	}
	if got := counter(t, b.m.met.parentErrors); got < 1 {
		t.Errorf("parent errors: %v, want >= 1", got)
	}
}

// lyingOnce serves wrong bytes for the first request that covers off (every one with always),
// then the truth.
type lyingOnce struct {
	*countingSource
	off    int64
	always bool
	lied   atomic.Bool
}

func (s *lyingOnce) ReadRange(ctx context.Context, id string, off, n int64) (io.ReadCloser, error) {
	rc, err := s.countingSource.ReadRange(ctx, id, off, n)
	if err != nil || s.off < off || s.off >= off+n || (s.lied.Swap(true) && !s.always) {
		return rc, err
	}
	data, _ := io.ReadAll(rc)
	rc.Close()
	data[s.off-off] ^= 0xff
	return io.NopCloser(bytes.NewReader(data)), nil
}

// One wrong answer from the source for a chunk across two pieces costs one refetch.
func TestSourceLieCostsOneRefetch(t *testing.T) {
	fx := newFixture(t)
	a := startPeerWith(t, fx, "a", peerOpts{noServers: true})
	tk := a.task(t)
	var straddler rafs.Chunk
	for _, c := range blobChunks(fx.img, 0) {
		if f, l := tk.lay.span(c.CompressedOffset, uint64(c.CompressedSize)); f != l {
			straddler = c
			break
		}
	}
	if straddler.CompressedSize == 0 {
		t.Fatal("no chunk straddles two pieces")
	}
	liar := &lyingOnce{countingSource: a.src, off: int64(straddler.CompressedOffset) + int64(straddler.CompressedSize) - 5}
	tk.setSource(liar)
	// Fill the two pieces as peers would ask for them, then read the chunk through the mount.
	f, l := tk.lay.span(straddler.CompressedOffset, uint64(straddler.CompressedSize))
	for n := f; n <= l; n++ {
		off, ln := tk.lay.bounds(n)
		_ = tk.fill(context.Background(), int64(off), int64(ln))
	}
	data, err := a.im.ReadChunk(context.Background(), fx.img.Blobs[0], &straddler, nil)
	if err != nil {
		t.Fatalf("after one lie the chunk is still unreadable: %v", err)
	}
	if len(data) != int(straddler.UncompressedSize) {
		t.Fatalf("%d bytes", len(data))
	}
	if !liar.lied.Load() {
		t.Fatal("the source never lied: the test proves nothing")
	}
	a.storedMatches(t, fx)
}

func TestPiecesSurviveRestart(t *testing.T) {
	fx := newFixture(t)
	dir := t.TempDir()
	a := startPeerWith(t, fx, "a", peerOpts{dir: dir, noServers: true})
	if err := a.readAll(t, fx); err != nil {
		t.Fatal(err)
	}
	a.stop()
	b := startPeerWith(t, fx, "a", peerOpts{dir: dir, noServers: true})
	if err := b.readAll(t, fx); err != nil {
		t.Fatal(err)
	}
	if got := b.src.bytes.Load(); got != 0 {
		t.Errorf("after a restart the peer read %d bytes from the source, want 0", got)
	}
}

func TestUnknownTask(t *testing.T) {
	fx := newFixture(t)
	a := startPeer(t, fx, "a")
	if _, err := a.m.WaitPiece(context.Background(), "nope", 0); !errors.Is(err, upload.ErrTaskNotFound) {
		t.Errorf("WaitPiece of an unknown task: %v, want ErrTaskNotFound", err)
	}
	if _, _, err := a.m.ServePiece(context.Background(), "nope", 0); !errors.Is(err, vortex.ErrPieceNotFound) {
		t.Errorf("ServePiece of an unknown task: %v, want ErrPieceNotFound", err)
	}
}

func TestSmallReadBackToSourceComesFirstAndThePieceOnce(t *testing.T) {
	// A peer going back to source serves a small read with a request for just its bytes, then
	// fetches the rest of the piece around them: no byte of the piece is fetched twice.
	fx := newFixture(t)
	a := startPeer(t, fx, "a")
	var c rafs.Chunk
	for _, ch := range blobChunks(fx.img, 0) {
		if ch.CompressedOffset > 5<<20 && ch.CompressedOffset+uint64(ch.CompressedSize) < 8<<20 {
			c = ch
			break
		}
	}
	if c.CompressedSize == 0 {
		t.Fatal("no chunk inside piece 1")
	}
	rc, err := a.attach.ReadRange(context.Background(), fx.blobID, int64(c.CompressedOffset), int64(c.CompressedSize))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(got, fx.blob[c.CompressedOffset:c.CompressedOffset+uint64(c.CompressedSize)]) {
		t.Fatal("wrong bytes")
	}
	if reqs := a.src.requests(); len(reqs) == 0 || reqs[0] != [2]int64{int64(c.CompressedOffset), int64(c.CompressedSize)} {
		t.Fatalf("first source request %v, want just the read's range [%d +%d]", reqs, c.CompressedOffset, c.CompressedSize)
	}
	tk := a.task(t)
	deadline := time.Now().Add(10 * time.Second)
	for !tk.held(1) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !tk.held(1) {
		t.Fatal("the piece was not completed in the background")
	}
	// No byte twice: the requests are disjoint, and they cover the piece (and the parts of the
	// chunks across its edges).
	reqs := a.src.requests()
	sort.Slice(reqs, func(i, j int) bool { return reqs[i][0] < reqs[j][0] })
	var total int64
	for i, r := range reqs {
		total += r[1]
		if i > 0 && reqs[i-1][0]+reqs[i-1][1] > r[0] {
			t.Errorf("requests %v and %v overlap", reqs[i-1], r)
		}
	}
	if total < 4<<20 || total > 4<<20+2*int64(256<<10) {
		t.Errorf("source sent %d bytes, want the piece (%d) and at most the two chunks across its edges", total, 4<<20)
	}
}

// One blob pushed to two repositories is two tasks (two URLs) over one copy in the store: a peer
// holding the pieces of one serves the other without going back to source.
func TestSameBlobInAnotherRepositoryIsServedFromTheFirstTasksPieces(t *testing.T) {
	fx := newFixture(t)
	a := startPeer(t, fx, "a")
	a.holdAll(t)
	before := a.src.bytes.Load()
	other, err := a.m.Attach(context.Background(), daemon.AttachedImage{Name: "other", RAFS: fx.img, Source: a.src,
		Blobs: []daemon.BlobRef{{ID: fx.blobID, URL: "http://registry.test/v2/other/blobs/sha256:" + fx.blobID, Size: int64(len(fx.blob))}}})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	otherID := TaskID("http://registry.test/v2/other/blobs/sha256:"+fx.blobID, 0)
	info, err := a.m.Task(context.Background(), otherID)
	if err != nil || !info.Done {
		t.Errorf("second task: %+v, %v; want all pieces held", info, err)
	}
	if got := a.src.bytes.Load() - before; got != 0 {
		t.Errorf("the second repository's task read %d bytes from the source, want 0", got)
	}
}

// A manifest that lies about a blob's size is refused before anything is allocated for it.
func TestLyingManifestSizeIsRefused(t *testing.T) {
	fx := newFixture(t)
	a := startPeer(t, fx, "a")
	for _, size := range []int64{int64(len(fx.blob)) + 1, 1 << 50} {
		_, err := a.m.Attach(context.Background(), daemon.AttachedImage{Name: "liar", RAFS: fx.img, Source: a.src,
			Blobs: []daemon.BlobRef{{ID: fx.blobID, URL: "http://registry.test/v2/liar/blobs/sha256:" + fx.blobID, Size: size}}})
		if err == nil {
			t.Errorf("a manifest size of %d for a %d-byte blob was accepted", size, len(fx.blob))
		}
	}
}

// The last detach of an image ends its tasks: nothing of them is left in the manager.
func TestDetachReleasesTasks(t *testing.T) {
	fx := newFixture(t)
	a := startPeer(t, fx, "a")
	if err := a.readAll(t, fx); err != nil {
		t.Fatal(err)
	}
	tk := a.task(t)
	a.im.Close()
	a.attach.Close()
	a.m.mu.Lock()
	n := len(a.m.tasks)
	a.m.mu.Unlock()
	if n != 0 {
		t.Errorf("%d tasks left after the last detach", n)
	}
	if tk.ctx.Err() == nil {
		t.Error("the task's context is still live")
	}
	if _, err := a.m.Task(context.Background(), tk.id); !errors.Is(err, upload.ErrTaskNotFound) {
		t.Errorf("Task after detach: %v, want ErrTaskNotFound", err)
	}
}

// A seed download of a blob no mounted image describes holds nothing until the whole blob
// matches its digest; a source that lies once costs a refetch, one that keeps lying leaves
// nothing behind.
func TestSeedDownloadIsHeldOnlyOnceTheBlobMatches(t *testing.T) {
	fx := newFixture(t)
	for _, lie := range []bool{false, true} {
		t.Run(fmt.Sprintf("source keeps lying %v", lie), func(t *testing.T) {
			s := startPeerWith(t, fx, "seed", peerOpts{noServers: true})
			s.im.Close()
			s.attach.Close()
			var src source.Source = s.src
			if lie {
				src = &lyingOnce{countingSource: s.src, off: int64(len(fx.blob)) - 10, always: true}
			}
			s.m.cfg.OpenURL = func(ctx context.Context, url string) (source.Source, string, int64, error) {
				return src, fx.blobID, int64(len(fx.blob)), nil
			}
			url := "http://registry.test/v2/seeded/blobs/sha256:" + fx.blobID
			id := TaskID(url, 0)
			_, err := s.m.DownloadTask(context.Background(), id, &commonv2.Download{Url: url}, nil)
			b, _ := s.st.Lookup(fx.blobID)
			if lie {
				if !errors.Is(err, peer.ErrWholeBlob) {
					t.Fatalf("download from a lying source: %v, want ErrWholeBlob", err)
				}
				if b != nil && (b.VerifiedBytes() != 0 || len(b.Pending()) != 0) {
					t.Fatalf("a failed seed download left %d verified and %d pending ranges", b.VerifiedBytes(), len(b.Pending()))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if b == nil || b.VerifiedBytes() != int64(len(fx.blob)) {
				t.Fatal("the seed does not hold the blob")
			}
			s.storedMatches(t, fx)
		})
	}
}

// Seed tasks are bounded in number and released once unused for SeedTaskIdle.
func TestSeedTasksAreBoundedAndReleased(t *testing.T) {
	fx := newFixture(t)
	s := startPeerWith(t, fx, "seed", peerOpts{noServers: true})
	s.im.Close()
	s.attach.Close()
	s.m.cfg.MaxSeedTasks = 1
	s.m.cfg.SeedTaskIdle = 3 * time.Second
	download := func(repo string) error {
		url := "http://registry.test/v2/" + repo + "/blobs/sha256:" + fx.blobID
		_, err := s.m.DownloadTask(context.Background(), TaskID(url, 0), &commonv2.Download{Url: url}, nil)
		return err
	}
	if err := download("one"); err != nil {
		t.Fatal(err)
	}
	if err := download("two"); !errors.Is(err, upload.ErrUnavailable) {
		t.Fatalf("a second seed task over the limit of 1: %v, want ErrUnavailable", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.m.mu.Lock()
		n := len(s.m.tasks)
		s.m.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d seed tasks still held after the idle timeout", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := download("two"); err != nil {
		t.Errorf("after the first was released: %v", err)
	}
}

// readEvery reads every k-th chunk of the blob through the image (a container start reads a few
// chunks of many pieces) and checks the bytes; it returns their compressed bytes.
func (p *testPeer) readEvery(t *testing.T, fx *fixture, k int) int64 {
	t.Helper()
	var n int64
	for i, c := range blobChunks(fx.img, 0) {
		if i%k != 0 {
			continue
		}
		data, err := p.im.ReadChunk(context.Background(), fx.img.Blobs[0], &c, nil)
		if err != nil {
			t.Fatalf("chunk %d: %v", c.Index, err)
		}
		if len(data) != int(c.UncompressedSize) {
			t.Fatalf("chunk %d: %d bytes, want %d", c.Index, len(data), c.UncompressedSize)
		}
		n += int64(c.CompressedSize)
	}
	return n
}

// A peer starting a container takes the chunks it reads from a parent that read them before, as
// ranges of verified bytes, not as whole pieces the parent does not hold yet.
func TestStartTakesRangesFromParents(t *testing.T) {
	fx := newFixture(t)
	o := peerOpts{ranges: true, noComplete: true}
	a := startPeerWith(t, fx, "a", o)
	b := startPeerWith(t, fx, "b", o)
	a.readEvery(t, fx, 7)
	b.useParents(a)
	b.readEvery(t, fx, 7)
	if got := a.src.bytes.Load(); got > 0 && counter(t, a.m.met.servedRanges) == 0 {
		t.Errorf("a served no range")
	}
	if got := b.src.bytes.Load(); got != 0 {
		t.Errorf("b read %d bytes from the source, want 0: its parent holds every chunk it reads", got)
	}
	if got := counter(t, b.m.met.ranges); got == 0 {
		t.Errorf("b downloaded no range from its parent")
	}
	if got := counter(t, b.m.met.pieces.WithLabelValues(trafficParent)); got != 0 {
		t.Errorf("b downloaded %v whole pieces, want none (its parent holds none whole)", got)
	}
	if got, limit := counter(t, b.m.met.bytes.WithLabelValues(trafficParent)), float64(a.src.bytes.Load()); got > limit {
		t.Errorf("b took %v bytes from its parent, more than the %v its parent fetched", got, limit)
	}
	if got := a.src.bytes.Load(); got >= int64(len(fx.blob)) {
		t.Errorf("a fetched %d bytes from the source, the whole blob (%d): b's ranges should not need whole pieces", got, len(fx.blob))
	}
	b.storedMatches(t, fx)
}

// Ranges are served only from verified bytes: a parent that holds a range only pending, and cannot
// bring it in (no source, no parents), answers "not found", and the child gets the bytes elsewhere
// (here the source).
func TestRangesComeOnlyFromVerifiedBytes(t *testing.T) {
	fx := newFixture(t)
	a := startPeerWith(t, fx, "a", peerOpts{ranges: true, noComplete: true, noSource: true})
	b := startPeerWith(t, fx, "b", peerOpts{ranges: true, noComplete: true})
	tk := a.task(t)
	// a holds bytes pending (half a chunk): not verified, so not served.
	c := blobChunks(fx.img, 0)[3]
	half := int64(c.CompressedSize / 2)
	if _, err := tk.bl.Accept(int64(c.CompressedOffset), fx.blob[c.CompressedOffset:int64(c.CompressedOffset)+half], "someone"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.m.ServeRange(context.Background(), tk.id, c.CompressedOffset, uint64(half)); !errors.Is(err, vortex.ErrPieceNotFound) {
		t.Fatalf("serving pending bytes: %v, want ErrPieceNotFound", err)
	}
	b.useParents(a)
	data, err := b.im.ReadChunk(context.Background(), fx.img.Blobs[0], &c, nil)
	if err != nil || len(data) != int(c.UncompressedSize) {
		t.Fatalf("read chunk %d: %v", c.Index, err)
	}
	if got := counter(t, b.m.met.ranges); got != 0 {
		t.Errorf("b got %v ranges from a parent that held nothing verified", got)
	}
	b.storedMatches(t, fx)
}

// A parent that lies in a range is blamed and avoided; the reader still gets the right bytes.
func TestLyingRangeIsBlamed(t *testing.T) {
	fx := newFixture(t)
	o := peerOpts{ranges: true, noComplete: true}
	a := startPeerWith(t, fx, "a", o)
	b := startPeerWith(t, fx, "b", o)
	a.readEvery(t, fx, 3)
	a.corrupt.Store(2) // a flipped byte with a matching crc32: only the chunk digest catches it
	b.useParents(a)
	b.readEvery(t, fx, 3)
	if got := counter(t, b.m.met.badPieces); got == 0 {
		t.Errorf("no bad bytes counted from a lying parent")
	}
	if !b.task(t).blocked["a"] {
		t.Errorf("the lying parent is not avoided")
	}
	b.storedMatches(t, fx)
}

// A child's range that its parent lacks is fetched by the parent (once, from its source) and then
// served: demand travels up the tree, as for pieces, without whole pieces.
func TestRangeDemandTravelsUp(t *testing.T) {
	fx := newFixture(t)
	o := peerOpts{ranges: true, noComplete: true}
	a := startPeerWith(t, fx, "a", o)
	b := startPeerWith(t, fx, "b", o)
	a.task(t) // a knows the task (attached) but has read nothing
	b.useParents(a)
	want := b.readEvery(t, fx, 9)
	if got := b.src.bytes.Load(); got != 0 {
		t.Errorf("b read %d bytes from the source, want 0 (its parent fetches for it)", got)
	}
	if got := a.src.bytes.Load(); got == 0 || got >= int64(len(fx.blob)) {
		t.Errorf("a fetched %d bytes from the source for b's %d, want some but not the whole blob (%d)", got, want, len(fx.blob))
	}
	if got := counter(t, a.m.met.servedRanges); got == 0 {
		t.Errorf("a served no range")
	}
	a.storedMatches(t, fx)
	b.storedMatches(t, fx)
}

// A peer that fetched only the blob's last piece holds it, tail and all (ToC, blob.meta, tar
// headers verified against the bootstrap's ToC digest), without the rest of the blob: it can
// serve that piece to any peer.
func TestLastPieceIsHeldWithoutTheWholeBlob(t *testing.T) {
	fx := newFixture(t)
	a := startPeer(t, fx, "a")
	tk := a.task(t)
	lastPiece := tk.lay.count - 1
	if lastPiece == 0 {
		t.Fatal("the fixture blob is one piece")
	}
	if _, err := a.m.WaitPiece(context.Background(), tk.id, lastPiece); err != nil {
		t.Fatal(err)
	}
	if !tk.held(lastPiece) {
		t.Fatal("the last piece is not held")
	}
	var sent int64
	for _, r := range a.src.requests() {
		sent += r[1]
	}
	if sent >= int64(len(fx.blob))/2 {
		t.Errorf("the source sent %d of the blob's %d bytes for its last piece", sent, len(fx.blob))
	}
	a.storedMatches(t, fx)
}
