package p2p

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"d7y.io/dragonfly/v2/pkg/idgen"

	"github.com/dfnydus/dfnydus/peer/daemon"
	"github.com/dfnydus/dfnydus/peer/source"
	"github.com/dfnydus/dfnydus/peer/upload"
	"github.com/dfnydus/dfnydus/peer/vortex"
	"github.com/dfnydus/dfnydus/rafs"
	schedclient "github.com/dfnydus/dfnydus/scheduler-client"
	"github.com/dfnydus/dfnydus/store"
)

// Config configures a Manager.
type Config struct {
	// Scheduler coordinates the peer's tasks; nil means every piece comes from the source.
	Scheduler *schedclient.Client
	// HostID is this peer's Dragonfly host id (SyncPieces names the asking host).
	HostID string
	// Store keeps piece bytes (content-addressed); IndexPath is the bbolt file of which pieces of
	// which tasks the peer holds.
	Store     *store.Store
	IndexPath string
	// PieceLength forces a piece length (it then enters the task id, as Dragonfly's does); 0 picks
	// the Rust dfdaemon's length for each blob's size.
	PieceLength uint64
	// Seed marks a super-seed peer: tasks it downloads for the scheduler are trusted from the source.
	Seed bool
	// OpenURL opens the back-to-source reader of a blob named only by its URL (seed downloads,
	// preheat): it returns the source, the blob id and its size.
	OpenURL func(ctx context.Context, url string) (source.Source, string, int64, error)

	PieceTimeout        time.Duration // one piece fetch, all attempts (default 2 min)
	ParentTimeout       time.Duration // one attempt at a parent (default 30 s)
	ScheduleTimeout     time.Duration // how long first reads wait for the scheduler's answer (default 3 s)
	ReadParallelism     int           // pieces of one read fetched at once (default 4)
	DisableBackToSource bool

	Log     *zap.Logger
	Metrics prometheus.Registerer
}

func (c Config) withDefaults() Config {
	if c.PieceTimeout <= 0 {
		c.PieceTimeout = 2 * time.Minute
	}
	if c.ParentTimeout <= 0 {
		c.ParentTimeout = 30 * time.Second
	}
	if c.ScheduleTimeout <= 0 {
		c.ScheduleTimeout = 3 * time.Second
	}
	if c.ReadParallelism <= 0 {
		c.ReadParallelism = 4
	}
	if c.Log == nil {
		c.Log = zap.NewNop()
	}
	return c
}

// Manager owns the peer's tasks. It is safe for concurrent use.
type Manager struct {
	cfg    Config
	log    *zap.Logger
	sched  *schedclient.Client
	store  *store.Store
	index  *index
	vortex *vortex.Client
	met    *metrics

	mu    sync.Mutex
	tasks map[string]*task
	conns map[string]*grpc.ClientConn
}

// New opens the piece index and returns a Manager.
func New(cfg Config) (*Manager, error) {
	cfg = cfg.withDefaults()
	if cfg.Store == nil || cfg.IndexPath == "" {
		return nil, errors.New("p2p: a store and an index path are required")
	}
	ix, err := openIndex(cfg.IndexPath)
	if err != nil {
		return nil, err
	}
	return &Manager{cfg: cfg, log: cfg.Log, sched: cfg.Scheduler, store: cfg.Store, index: ix,
		vortex: vortex.NewClient(vortex.ClientOptions{}), met: newMetrics(cfg.Metrics),
		tasks: map[string]*task{}, conns: map[string]*grpc.ClientConn{}}, nil
}

// Close ends every task's scheduler session and closes connections and the index.
func (m *Manager) Close() error {
	m.mu.Lock()
	tasks := make([]*task, 0, len(m.tasks))
	for _, t := range m.tasks {
		tasks = append(tasks, t)
	}
	conns := m.conns
	m.conns = map[string]*grpc.ClientConn{}
	m.mu.Unlock()
	for _, t := range tasks {
		t.close()
	}
	for _, cc := range conns {
		_ = cc.Close()
	}
	_ = m.vortex.Close()
	return m.index.close()
}

// TaskID is the Dragonfly task id of a blob URL: TaskIDV2ByURLBased with no tag, application or
// filtered query parameters, and the piece length only when one is forced (as the Rust dfdaemon
// and the scheduler's preheat compute it).
func TaskID(url string, forcedPieceLength uint64) string {
	var pl *uint64
	if forcedPieceLength > 0 {
		pl = &forcedPieceLength
	}
	return idgen.TaskIDV2ByURLBased(url, pl, "", "", nil, "")
}

func (m *Manager) pieceLength(size uint64) uint64 {
	if m.cfg.PieceLength > 0 {
		return m.cfg.PieceLength
	}
	return PieceLengthFor(size)
}

// task returns the task with id, creating it (and its scheduler session) if it is new.
func (m *Manager) task(id, url, blobID string, size uint64, src source.Source, needBackToSource bool) (*task, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if t, ok := m.tasks[id]; ok {
		if t.lay.size != size {
			return nil, fmt.Errorf("task %s: blob %s is %d bytes here, %d in the task already known", id, blobID, size, t.lay.size)
		}
		t.refs++
		return t, nil
	}
	t := newTask(m, id, url, blobID, size, m.pieceLength(size), src)
	if err := t.loadIndex(); err != nil {
		return nil, err
	}
	t.refs = 1
	m.tasks[id] = t
	m.met.tasks.Set(float64(len(m.tasks)))
	if m.sched != nil {
		go t.schedule(needBackToSource)
	} else {
		close(t.scheduled)
	}
	return t, nil
}

// siblings returns the other tasks of t's blob.
func (m *Manager) siblings(t *task) []*task {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*task
	for _, o := range m.tasks {
		if o != t && o.blobID == t.blobID {
			out = append(out, o)
		}
	}
	return out
}

func (m *Manager) lookup(id string) (*task, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.tasks[id]
	if !ok {
		return nil, fmt.Errorf("task %s: %w", id, upload.ErrTaskNotFound)
	}
	return t, nil
}

// Attach implements daemon.Distributor: the image's registry blobs become tasks, and the returned
// source reads them piece by piece through the peer network.
func (m *Manager) Attach(ctx context.Context, img daemon.AttachedImage) (source.Source, error) {
	s := &blobSource{m: m, fallback: img.Source, tasks: map[string]*task{}}
	for i, b := range img.Blobs {
		if b.URL == "" || b.Size <= 0 || i >= len(img.RAFS.Blobs) {
			continue
		}
		t, err := m.task(TaskID(b.URL, m.cfg.PieceLength), b.URL, b.ID, uint64(b.Size), img.Source, false)
		if err != nil {
			s.release()
			return nil, err
		}
		t.setTable(img.RAFS.Blobs[i], blobChunks(img.RAFS, uint32(i)))
		go t.adoptAll()
		s.tasks[b.ID] = t
		m.log.Info("blob is a P2P task", zap.String("image", img.Name), zap.String("blob", b.ID), zap.String("task", t.id),
			zap.String("peer", t.peerID), zap.Uint64("piece_length", t.lay.pieceLength), zap.Uint32("pieces", t.lay.count))
	}
	return s, nil
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

// blobSource is the source.Source of an attached image.
type blobSource struct {
	m        *Manager
	fallback source.Source
	tasks    map[string]*task
	once     sync.Once
}

func (s *blobSource) ReadRange(ctx context.Context, blobID string, off, n int64) (io.ReadCloser, error) {
	t, ok := s.tasks[blobID]
	if !ok {
		return s.fallback.ReadRange(ctx, blobID, off, n)
	}
	if off < 0 || n < 0 {
		return nil, fmt.Errorf("blob %s: %w: offset %d length %d", blobID, source.ErrRange, off, n)
	}
	data, err := t.read(ctx, uint64(off), uint64(n))
	if err != nil {
		return nil, err
	}
	return io.NopCloser(bytes.NewReader(data)), nil
}

func (s *blobSource) String() string { return "p2p" }

func (s *blobSource) Close() error {
	s.release()
	return nil
}

func (s *blobSource) release() {
	s.once.Do(func() {
		for _, t := range s.tasks {
			t.m.mu.Lock()
			t.refs--
			t.m.mu.Unlock()
		}
	})
}

// schedule registers the task with the scheduler and follows its answers for the session's life.
func (t *task) schedule(needBackToSource bool) {
	spec := schedclient.TaskSpec{TaskID: t.id, PeerID: t.peerID, URL: t.url, Digest: "sha256:" + t.blobID,
		PieceLength: t.lay.pieceLength, ContentLength: t.lay.size, PieceCount: t.lay.count,
		NeedBackToSource: needBackToSource}
	answered := func() {
		t.mu.Lock()
		first := !t.answered
		t.answered = true
		t.mu.Unlock()
		if first {
			close(t.scheduled)
		}
	}
	sess, err := t.m.sched.Register(t.ctx, spec)
	if err != nil {
		t.log.Warn("scheduler register failed: reading from the source", zap.Error(err))
		answered()
		return
	}
	t.mu.Lock()
	t.sess = sess
	t.mu.Unlock()
	started := false
	for ev := range sess.Events() {
		switch ev.Kind {
		case schedclient.EventParents:
			var ps []schedclient.Parent
			for _, p := range ev.Parents {
				if p.PeerID != t.peerID && p.HostID != t.m.cfg.HostID {
					ps = append(ps, p)
				}
			}
			t.mu.Lock()
			t.parents, t.back = ps, false
			t.mu.Unlock()
			t.log.Info("scheduler named parents", zap.Int("parents", len(ps)))
			if !started {
				started = true
				_ = sess.Started(false)
			}
		case schedclient.EventBackToSource:
			t.mu.Lock()
			t.parents, t.back = nil, true
			t.mu.Unlock()
			t.log.Info("scheduler: back to source", zap.String("why", ev.Description))
			if !started {
				started = true
				_ = sess.Started(true)
			}
		case schedclient.EventEmpty:
		case schedclient.EventError:
			t.mu.Lock()
			t.parents = nil
			t.mu.Unlock()
			t.log.Warn("scheduler session failed: reading from the source", zap.Error(ev.Err))
		}
		t.mu.Lock()
		first := !t.answered
		t.mu.Unlock()
		if first {
			t.reportHeld(sess)
		}
		answered()
		t.maybeFinished()
	}
	answered()
}

// reportHeld tells a new session about pieces kept from before.
func (t *task) reportHeld(sess *schedclient.Session) {
	t.mu.Lock()
	var ps []schedclient.Piece
	for n, r := range t.held {
		if r.Verified {
			off, l := t.lay.bounds(n)
			ps = append(ps, schedclient.Piece{Number: n, Offset: off, Length: l, Digest: crcDigest(r.CRC32)})
		}
	}
	t.mu.Unlock()
	for _, p := range ps {
		_ = sess.PieceFinished(p, "")
	}
}

func (t *task) close() {
	t.cancel()
	t.mu.Lock()
	sess := t.sess
	t.mu.Unlock()
	if sess != nil {
		_ = sess.Close()
	}
}

// conn returns a (shared) gRPC connection to a peer's upload service.
func (m *Manager) conn(ip string, port int) (*grpc.ClientConn, error) {
	addr := net.JoinHostPort(ip, strconv.Itoa(port))
	m.mu.Lock()
	defer m.mu.Unlock()
	if cc, ok := m.conns[addr]; ok {
		return cc, nil
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("peer %s: %w", addr, err)
	}
	m.conns[addr] = cc
	return cc, nil
}

// fromParent downloads piece n of t from parent p: SyncPieces says where (waiting while p is still
// getting it), then the bytes come over Vortex.
func (m *Manager) fromParent(ctx context.Context, t *task, p schedclient.Parent, n uint32) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.ParentTimeout)
	defer cancel()
	cc, err := m.conn(p.IP, p.Port)
	if err != nil {
		return nil, err
	}
	locs, errc := upload.SyncPieces(ctx, cc, m.cfg.HostID, t.id, []uint32{n})
	var loc upload.PieceLocation
	select {
	case l, ok := <-locs:
		if !ok {
			err := <-errc
			if err == nil {
				err = errors.New("sync pieces ended without the piece")
			}
			return nil, fmt.Errorf("parent %s sync piece %d: %w", p.IP, n, err)
		}
		loc = l
	case err := <-errc:
		if err == nil {
			err = errors.New("sync pieces ended without the piece")
		}
		return nil, fmt.Errorf("parent %s sync piece %d: %w", p.IP, n, err)
	case <-ctx.Done():
		return nil, fmt.Errorf("parent %s sync piece %d: %w", p.IP, n, ctx.Err())
	}
	ip, port := loc.IP, loc.TCPPort
	if ip == "" {
		ip = p.IP
	}
	if port == 0 {
		port = p.DownloadPort
	}
	piece, data, err := m.vortex.DownloadPiece(ctx, net.JoinHostPort(ip, strconv.Itoa(port)), t.id, n)
	if errors.Is(err, vortex.ErrPieceInvalid) {
		return nil, fmt.Errorf("parent %s piece %d: %w: %w", p.IP, n, ErrBadPiece, err)
	}
	if err != nil {
		return nil, fmt.Errorf("parent %s piece %d: %w", p.IP, n, err)
	}
	off, length := t.lay.bounds(n)
	if piece.Number != n || piece.Offset != off || piece.Length != length {
		return nil, fmt.Errorf("parent %s sent piece %d [%d+%d] for piece %d [%d+%d]: %w", p.IP, piece.Number, piece.Offset, piece.Length,
			n, off, length, ErrBadPiece)
	}
	return data, nil
}
