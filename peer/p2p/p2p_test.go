package p2p

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"

	"github.com/dfnydus/dfnydus/peer/daemon"
	"github.com/dfnydus/dfnydus/peer/source"
	"github.com/dfnydus/dfnydus/peer/upload"
	"github.com/dfnydus/dfnydus/peer/vortex"
	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/builder"
	schedclient "github.com/dfnydus/dfnydus/scheduler-client"
	"github.com/dfnydus/dfnydus/store"
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
	for i, size := range []int{3 << 20, 5<<20 + 12345, 3<<20 - 777} {
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

// testPeer is a Manager with its upload gRPC and Vortex servers on loopback.
type testPeer struct {
	m       *Manager
	src     *countingSource
	attach  source.Source
	parent  schedclient.Parent
	reg     *prometheus.Registry
	stop    func()
	corrupt atomic.Int32 // 0 honest, 1 flips a byte (crc no longer matches), 2 flips a byte and sends its crc
}

func startPeer(t *testing.T, fx *fixture, name string) *testPeer {
	t.Helper()
	st, err := store.Open(t.TempDir(), store.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	p := &testPeer{src: &countingSource{inner: source.NewLocal(fx.blobDir)}, reg: prometheus.NewRegistry()}
	p.m, err = New(Config{HostID: name, Store: st, IndexPath: filepath.Join(t.TempDir(), "pieces.db"), Metrics: p.reg})
	if err != nil {
		t.Fatal(err)
	}
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
	vs := vortex.NewServer(vortex.BytesHandler(func(ctx context.Context, id string, n uint32) (vortex.Piece, []byte, error) {
		pc, data, err := p.m.ServePiece(ctx, id, n)
		if mode := p.corrupt.Load(); err == nil && mode != 0 {
			data = bytes.Clone(data)
			data[len(data)/2] ^= 0x5a
			if mode == 2 {
				pc.Digest = vortex.CRC32Digest(data)
			}
		}
		return pc, data, err
	}), nil)
	go func() { _ = vs.Serve(vl) }()
	p.parent = schedclient.Parent{PeerID: name, HostID: name, IP: "127.0.0.1", Port: gl.Addr().(*net.TCPAddr).Port, DownloadPort: vport}
	p.attach, err = p.m.Attach(context.Background(), daemon.AttachedImage{Name: "test", RAFS: fx.img, Source: p.src,
		Blobs: []daemon.BlobRef{{ID: fx.blobID, URL: "http://registry.test/v2/app/blobs/sha256:" + fx.blobID, Size: int64(len(fx.blob))}}})
	if err != nil {
		t.Fatal(err)
	}
	var once bool
	p.stop = func() {
		if once {
			return
		}
		once = true
		up.Shutdown()
		g.Stop()
		vs.Close()
		p.attach.Close()
		p.m.Close()
		st.Close()
	}
	t.Cleanup(p.stop)
	return p
}

// useParents makes the peer's task download from the given parents, as a NormalTaskResponse would.
func (p *testPeer) useParents(parents ...*testPeer) {
	for _, t := range p.m.tasks {
		t.mu.Lock()
		t.parents = nil
		for _, q := range parents {
			t.parents = append(t.parents, q.parent)
		}
		t.mu.Unlock()
	}
}

// readAll reads every chunk's range through the attached source and checks it against the blob.
func (p *testPeer) readAll(t *testing.T, fx *fixture) error {
	t.Helper()
	for _, c := range blobChunks(fx.img, 0) {
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

func counter(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	return testutil.ToFloat64(c)
}

func TestPeersShareVerifiedPieces(t *testing.T) {
	fx := newFixture(t)
	a, b := startPeer(t, fx, "a"), startPeer(t, fx, "b")
	if err := a.readAll(t, fx); err != nil {
		t.Fatal(err)
	}
	if got := a.src.bytes.Load(); got != int64(len(fx.blob)) {
		t.Errorf("peer a read %d bytes from the source, want the whole blob once (%d)", got, len(fx.blob))
	}
	info, err := a.m.Task(context.Background(), TaskID("http://registry.test/v2/app/blobs/sha256:"+fx.blobID, 0))
	if err != nil {
		t.Fatal(err)
	}
	if !info.Done || len(info.Held) != 3 {
		t.Fatalf("peer a holds %d verified pieces (done %v), want all 3", len(info.Held), info.Done)
	}
	b.useParents(a)
	if err := b.readAll(t, fx); err != nil {
		t.Fatal(err)
	}
	if got := b.src.bytes.Load(); got != 0 {
		t.Errorf("peer b read %d bytes from the source, want 0 (all from its parent)", got)
	}
	if got := counter(t, b.m.met.pieces.WithLabelValues(trafficParent)); got != 3 {
		t.Errorf("peer b got %v pieces from its parent, want 3", got)
	}
	if got := counter(t, a.m.met.served); got != 3 {
		t.Errorf("peer a served %v pieces, want 3", got)
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
	a.corrupt.Store(mode)
	b.useParents(a)
	if err := b.readAll(t, fx); err != nil {
		t.Fatal(err) // readAll also checks every byte
	}
	if got := counter(t, b.m.met.badPieces); got < 1 {
		t.Errorf("bad pieces counted: %v, want >= 1", got)
	}
	if got := b.src.bytes.Load(); got != int64(len(fx.blob)) {
		t.Errorf("peer b read %d bytes from the source, want the whole blob (%d) once its parent was caught", got, len(fx.blob))
	}
	for _, tk := range b.m.tasks {
		if !tk.blocked["a"] {
			t.Error("the lying parent is not avoided")
		}
	}
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

func TestPiecesSurviveRestart(t *testing.T) {
	fx := newFixture(t)
	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, "store"), store.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	src := &countingSource{inner: source.NewLocal(fx.blobDir)}
	img := daemon.AttachedImage{Name: "t", RAFS: fx.img, Source: src,
		Blobs: []daemon.BlobRef{{ID: fx.blobID, URL: "http://r/v2/a/blobs/sha256:" + fx.blobID, Size: int64(len(fx.blob))}}}
	open := func() (*Manager, source.Source) {
		m, err := New(Config{HostID: "h", Store: st, IndexPath: filepath.Join(dir, "pieces.db")})
		if err != nil {
			t.Fatal(err)
		}
		s, err := m.Attach(context.Background(), img)
		if err != nil {
			t.Fatal(err)
		}
		return m, s
	}
	m, s := open()
	p := &testPeer{m: m, attach: s}
	if err := p.readAll(t, fx); err != nil {
		t.Fatal(err)
	}
	s.Close()
	m.Close()
	before := src.bytes.Load()
	m, s = open()
	defer m.Close()
	defer s.Close()
	p = &testPeer{m: m, attach: s}
	if err := p.readAll(t, fx); err != nil {
		t.Fatal(err)
	}
	if got := src.bytes.Load() - before; got != 0 {
		t.Errorf("after a restart the peer read %d bytes from the source, want 0", got)
	}
	st.Close()
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
	deadline := time.Now().Add(10 * time.Second)
	for a.src.bytes.Load() < 4<<20 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	if got := a.src.bytes.Load(); got != 4<<20 {
		t.Errorf("source sent %d bytes, want the piece (%d) exactly once", got, 4<<20)
	}
}

func TestSameBlobInAnotherRepositoryIsServedFromTheFirstTasksPieces(t *testing.T) {
	// One blob pushed to two repositories is two tasks (two URLs); a peer holding the pieces of one
	// serves the other without going back to source.
	fx := newFixture(t)
	a := startPeer(t, fx, "a")
	if err := a.readAll(t, fx); err != nil {
		t.Fatal(err)
	}
	before := a.src.bytes.Load()
	other, err := a.m.Attach(context.Background(), daemon.AttachedImage{Name: "other", RAFS: fx.img, Source: a.src,
		Blobs: []daemon.BlobRef{{ID: fx.blobID, URL: "http://registry.test/v2/other/blobs/sha256:" + fx.blobID, Size: int64(len(fx.blob))}}})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	otherID := TaskID("http://registry.test/v2/other/blobs/sha256:"+fx.blobID, 0)
	for n := uint32(0); n < 3; n++ {
		if _, err := a.m.WaitPiece(context.Background(), otherID, n); err != nil {
			t.Fatal(err)
		}
	}
	if got := a.src.bytes.Load() - before; got != 0 {
		t.Errorf("the second repository's task read %d bytes from the source, want 0", got)
	}
	info, err := a.m.Task(context.Background(), otherID)
	if err != nil || !info.Done {
		t.Errorf("second task: %+v, %v; want all pieces held", info, err)
	}
}
