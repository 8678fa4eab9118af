package p2p

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/dfnydus/dfnydus/peer"
	"github.com/dfnydus/dfnydus/peer/daemon"
	"github.com/dfnydus/dfnydus/peer/source"
	"github.com/dfnydus/dfnydus/peer/upload"
	"github.com/dfnydus/dfnydus/peer/vortex"
	schedclient "github.com/dfnydus/dfnydus/scheduler-client"
)

// Config configures a Manager.
type Config struct {
	// Scheduler coordinates the peer's tasks; nil means every piece comes from the source.
	Scheduler *schedclient.Client
	// HostID is this peer's Dragonfly host id (SyncPieces names the asking host).
	HostID string
	// Fetcher is the node's verification point and store: every byte a task brings in goes
	// through its blobs' Accept, and what its store marks verified is what the peer serves.
	Fetcher *peer.Fetcher
	// PieceLength forces a piece length (it then enters the task id, as Dragonfly's does); 0 picks
	// the Rust dfdaemon's length for each blob's size. Forced lengths must be 4 to 64 MiB.
	PieceLength uint64
	// Seed marks a super-seed peer: it downloads whole tasks when the scheduler asks.
	Seed bool
	// OpenURL opens the back-to-source reader of a blob named only by its URL (seed downloads,
	// preheat): it returns the source, the blob id and its size.
	OpenURL func(ctx context.Context, url string) (source.Source, string, int64, error)

	PieceTimeout        time.Duration // one piece fetch, all attempts (default 2 min)
	ParentTimeout       time.Duration // one attempt at a parent (default 30 s)
	ScheduleTimeout     time.Duration // how long first reads wait for the scheduler's answer (default 10 s)
	ReadParallelism     int           // pieces of one read fetched at once (default 4)
	DisableBackToSource bool
	// CompletePieces makes a peer that read part of a piece from the source fetch the rest of it
	// in the background, so it holds the piece whole and can serve it. It is on whenever a
	// scheduler is configured (other peers may ask); without one nobody can.
	CompletePieces bool

	// Seed tasks (DownloadTask by URL): how many may exist at once, how many bytes they may hold
	// together, and how long one may sit unused before it is released (defaults 64, 0 = only the
	// store budget, 30 min).
	MaxSeedTasks int
	MaxSeedBytes int64
	SeedTaskIdle time.Duration

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
		c.ScheduleTimeout = 10 * time.Second
	}
	if c.ReadParallelism <= 0 {
		c.ReadParallelism = 4
	}
	if c.MaxSeedTasks <= 0 {
		c.MaxSeedTasks = 64
	}
	if c.SeedTaskIdle <= 0 {
		c.SeedTaskIdle = 30 * time.Minute
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
	f      *peer.Fetcher
	vortex *vortex.Client
	met    *metrics
	// parentSlots bounds the pieces downloaded from parents at once, across tasks: each is held in
	// memory until verified (up to 64 MiB), and other peers' SyncPieces can ask for many.
	parentSlots chan struct{}

	mu     sync.Mutex
	tasks  map[string]*task
	conns  map[string]*peerConn
	closed bool
}

// peerConn is a shared gRPC connection to a peer's upload service, closed after idleConn unused.
type peerConn struct {
	cc    *grpc.ClientConn
	users int
	timer *time.Timer
}

// idleConn is how long a connection to another peer stays open with no task using it.
const idleConn = 2 * time.Minute

// New returns a Manager.
func New(cfg Config) (*Manager, error) {
	cfg = cfg.withDefaults()
	if cfg.Fetcher == nil {
		return nil, errors.New("p2p: a fetcher is required")
	}
	if cfg.PieceLength != 0 && !ValidPieceLength(cfg.PieceLength) {
		return nil, fmt.Errorf("p2p: piece length %d: want %d to %d bytes", cfg.PieceLength, MinPieceLength, MaxPieceLength)
	}
	if cfg.Scheduler != nil {
		cfg.CompletePieces = true
	}
	return &Manager{cfg: cfg, log: cfg.Log, sched: cfg.Scheduler, f: cfg.Fetcher,
		vortex: vortex.NewClient(vortex.ClientOptions{}), met: newMetrics(cfg.Metrics), parentSlots: make(chan struct{}, maxParentDownloads),
		tasks: map[string]*task{}, conns: map[string]*peerConn{}}, nil
}

// Close ends every task (scheduler sessions end, the peer leaves them) and closes connections.
func (m *Manager) Close() error {
	m.mu.Lock()
	m.closed = true
	tasks := make([]*task, 0, len(m.tasks))
	for _, t := range m.tasks {
		tasks = append(tasks, t)
	}
	m.tasks = map[string]*task{}
	conns := m.conns
	m.conns = map[string]*peerConn{}
	m.mu.Unlock()
	for _, t := range tasks {
		t.close()
	}
	for _, pc := range conns {
		if pc.timer != nil {
			pc.timer.Stop()
		}
		_ = pc.cc.Close()
	}
	return m.vortex.Close()
}

// TaskID is the Dragonfly task id of a blob URL: TaskIDV2ByURLBased with no tag, application or
// filtered query parameters, and the piece length only when one is forced (as the Rust dfdaemon
// and the scheduler's preheat compute it).
func TaskID(url string, forcedPieceLength uint64) string {
	return schedclient.TaskID(url, forcedPieceLength)
}

func (m *Manager) pieceLength(size uint64) uint64 {
	if m.cfg.PieceLength > 0 {
		return m.cfg.PieceLength
	}
	return PieceLengthFor(size)
}

// taskSpec names a task to acquire.
type taskSpec struct {
	id, url, blobID string
	size            int64
	src             source.Source
	backToSource    bool
	seed            bool // created by DownloadTask, not by a mount
}

// acquire returns the task with spec.id, creating it (and its scheduler session) if it is new, and
// takes a reference: release gives it back, and the last release ends the task. A known task takes
// the newest source (a remount brings new credentials).
func (m *Manager) acquire(spec taskSpec) (*task, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, errors.New("p2p: closed")
	}
	if t, ok := m.tasks[spec.id]; ok {
		if t.lay.size != uint64(spec.size) || t.blobID != spec.blobID {
			return nil, fmt.Errorf("task %s: blob %s of %d bytes, but the task is blob %s of %d bytes", spec.id, spec.blobID, spec.size, t.blobID, t.lay.size)
		}
		t.refs++
		if spec.src != nil {
			t.setSource(spec.src)
		}
		return t, nil
	}
	if spec.seed {
		n, bytes := 0, int64(0)
		for _, t := range m.tasks {
			if t.seed {
				n++
				bytes += int64(t.lay.size)
			}
		}
		if n >= m.cfg.MaxSeedTasks {
			return nil, fmt.Errorf("%w: %d seed tasks already", errLimit, n)
		}
		if m.cfg.MaxSeedBytes > 0 && bytes+spec.size > m.cfg.MaxSeedBytes {
			return nil, fmt.Errorf("%w: seed tasks would hold %d bytes, over %d", errLimit, bytes+spec.size, m.cfg.MaxSeedBytes)
		}
	}
	bl, err := m.f.OpenBlob(spec.blobID, spec.size, nil)
	if err != nil {
		return nil, err
	}
	t := newTask(m, spec, bl)
	t.refs = 1
	m.tasks[spec.id] = t
	m.met.tasks.Set(float64(len(m.tasks)))
	t.start()
	return t, nil
}

// maxParentDownloads bounds the pieces downloaded from parents at once (memory: at most this many
// pieces, 64 MiB each at worst).
const maxParentDownloads = 8

// errLimit is wrapped when a configured limit refuses a new task: the caller is told the peer is
// unavailable for now.
var errLimit = upload.ErrUnavailable

// release gives back a reference taken by acquire; the last one ends the task.
func (m *Manager) release(t *task) {
	m.mu.Lock()
	t.refs--
	last := t.refs == 0 && m.tasks[t.id] == t
	if last {
		delete(m.tasks, t.id)
		m.met.tasks.Set(float64(len(m.tasks)))
	}
	m.mu.Unlock()
	if last {
		t.close()
	}
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
// source fills the node's store with their pieces through the peer network.
func (m *Manager) Attach(ctx context.Context, img daemon.AttachedImage) (source.Source, error) {
	s := &blobSource{m: m, fallback: img.Source, tasks: map[string]*task{}}
	for i, b := range img.Blobs {
		if b.URL == "" || b.Size <= 0 || i >= len(img.RAFS.Blobs) {
			continue
		}
		if _, ok := s.tasks[b.ID]; ok {
			continue
		}
		if rec := img.RAFS.Blobs[i].CompressedSize; rec != 0 && rec != uint64(b.Size) {
			s.release()
			return nil, fmt.Errorf("blob %s: the manifest says %d bytes, the bootstrap %d: %w", b.ID, b.Size, rec, peer.ErrSizeMismatch)
		}
		t, err := m.acquire(taskSpec{id: TaskID(b.URL, m.cfg.PieceLength), url: b.URL, blobID: b.ID, size: b.Size, src: img.Source})
		if err != nil {
			s.release()
			return nil, err
		}
		s.tasks[b.ID] = t
		m.log.Info("blob is a P2P task", zap.String("image", img.Name), zap.String("blob", b.ID), zap.String("task", t.id),
			zap.String("peer", t.peerID), zap.Uint64("piece_length", t.lay.pieceLength), zap.Uint32("pieces", t.lay.count))
	}
	return s, nil
}

// blobSource is the source of an attached image: a source.Filler over the image's tasks.
type blobSource struct {
	m        *Manager
	fallback source.Source
	tasks    map[string]*task
	once     sync.Once
}

// Fills implements source.Filler: the image's registry blobs are tasks.
func (s *blobSource) Fills(blobID string) bool {
	_, ok := s.tasks[blobID]
	return ok
}

// Fill implements source.Filler.
func (s *blobSource) Fill(ctx context.Context, blobID string, off, n int64) error {
	t, ok := s.tasks[blobID]
	if !ok {
		return fmt.Errorf("blob %s is not a P2P task", blobID)
	}
	return t.fill(ctx, off, n)
}

// ReadRange serves callers that want bytes rather than a filled store: the range is filled, then
// read back from the store, where it is verified chunk by chunk.
func (s *blobSource) ReadRange(ctx context.Context, blobID string, off, n int64) (io.ReadCloser, error) {
	t, ok := s.tasks[blobID]
	if !ok {
		return s.fallback.ReadRange(ctx, blobID, off, n)
	}
	if off < 0 || n < 0 || off+n > int64(t.lay.size) {
		return nil, fmt.Errorf("blob %s: %w: offset %d length %d", blobID, source.ErrRange, off, n)
	}
	if err := t.fill(ctx, off, n); err != nil {
		return nil, err
	}
	rc, err := t.bl.Store().OpenRange(off, n)
	if err != nil {
		return nil, fmt.Errorf("blob %s [%d, +%d): %w", blobID, off, n, err)
	}
	return rc, nil
}

func (s *blobSource) String() string { return "p2p" }

// Close detaches the image: its tasks lose a reference, and those no other mount uses end.
func (s *blobSource) Close() error {
	s.release()
	return nil
}

func (s *blobSource) release() {
	s.once.Do(func() {
		for _, t := range s.tasks {
			s.m.release(t)
		}
	})
}

// conn returns a shared gRPC connection to a peer's upload service; done gives it back.
func (m *Manager) conn(ip string, port int) (*grpc.ClientConn, func(), error) {
	addr := net.JoinHostPort(ip, strconv.Itoa(port))
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, nil, errors.New("p2p: closed")
	}
	pc, ok := m.conns[addr]
	if !ok {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, nil, fmt.Errorf("peer %s: %w", addr, err)
		}
		pc = &peerConn{cc: cc}
		m.conns[addr] = pc
	}
	if pc.timer != nil {
		pc.timer.Stop()
		pc.timer = nil
	}
	pc.users++
	var once sync.Once
	return pc.cc, func() { once.Do(func() { m.unuse(addr, pc) }) }, nil
}

// unuse drops a user of a connection; one nobody uses for idleConn is closed.
func (m *Manager) unuse(addr string, pc *peerConn) {
	m.mu.Lock()
	defer m.mu.Unlock()
	pc.users--
	if pc.users > 0 || m.closed {
		return
	}
	pc.timer = time.AfterFunc(idleConn, func() {
		m.mu.Lock()
		idle := pc.users == 0 && m.conns[addr] == pc
		if idle {
			delete(m.conns, addr)
		}
		m.mu.Unlock()
		if idle {
			_ = pc.cc.Close()
		}
	})
}
