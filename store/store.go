package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"go.uber.org/zap"
)

// Sentinel errors; check them with errors.Is.
var (
	// ErrLocked: another Store (in this or another process) has the directory open.
	ErrLocked = errors.New("store directory is in use by another store")
	// ErrClosed: the Store was closed.
	ErrClosed = errors.New("store is closed")
	// ErrInvalid: an argument is out of range (unknown digest algorithm, empty or oversized chunk,
	// negative budget).
	ErrInvalid = errors.New("invalid store argument")
)

// Names below the store directory.
const (
	indexFile = "index.db"
	dataDir   = "data"
	tmpDir    = "tmp"
)

// maxChunk bounds the size of one chunk (rafs.MaxChunkSize).
const maxChunk = 16 << 20

// Store is a local chunk store; see the package documentation. It is safe for concurrent use.
type Store struct {
	dir  string
	opts Options
	log  *zap.Logger
	db   *bolt.DB
	idx  *committer
	keys keyLocks

	mu      sync.Mutex
	entries map[Key]*entry
	lru     lruList
	pins    map[Key]int
	dirty   []*entry // entries whose tick is not in the index yet
	tick    uint64   // logical clock of accesses

	bytes, chunks, disk             atomic.Int64
	hits, misses, repaired, evicted atomic.Uint64

	evictMu sync.Mutex // one evictor at a time

	life      sync.RWMutex // Get/Put hold it shared; Close takes it to wait for them
	closed    bool
	wake      chan struct{} // asks the background goroutine to flush or evict
	stop      chan struct{}
	bg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
	unmetrics func()
}

// Stats is a snapshot of the store's counters.
type Stats struct {
	Chunks    int64 // chunks indexed
	Bytes     int64 // their uncompressed bytes (what Budget limits)
	DiskBytes int64 // what their files occupy on disk, block-rounded (file-system overhead included)
	Budget    int64 // Options.Budget; 0 = unlimited
	Hits      uint64
	Misses    uint64 // Gets that found nothing usable, repaired chunks included
	Repaired  uint64 // chunks removed (by Open or Get) because their file was missing, the wrong size or the wrong bytes
	Evicted   uint64 // chunks removed to stay within Budget
}

// Open opens (creating if needed) the store in dir, recovers it from any earlier crash and loads its
// index. Only one Store may have dir open at a time: Open waits Options.LockTimeout for the other
// one to close and then fails with an error wrapping ErrLocked.
func Open(dir string, opts Options) (*Store, error) {
	opts = opts.withDefaults()
	dir = filepath.Clean(dir)
	if opts.Budget < 0 {
		return nil, fmt.Errorf("%w: budget %d", ErrInvalid, opts.Budget)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: create %s: %w", dir, err)
	}
	db, err := bolt.Open(filepath.Join(dir, indexFile), 0o600, &bolt.Options{
		Timeout:        opts.LockTimeout,
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("store: open %s: %w (gave up after %v)", dir, ErrLocked, opts.LockTimeout)
	}
	if err != nil {
		return nil, fmt.Errorf("store: open index %s: %w", filepath.Join(dir, indexFile), err)
	}
	s := &Store{
		dir:       dir,
		opts:      opts,
		log:       opts.Log.With(zap.String("store", dir)),
		db:        db,
		entries:   make(map[Key]*entry),
		pins:      make(map[Key]int),
		wake:      make(chan struct{}, 1),
		stop:      make(chan struct{}),
		unmetrics: func() {},
	}
	start := time.Now()
	rep, err := s.recover()
	if err != nil {
		db.Close()
		return nil, err
	}
	s.idx = newCommitter(db, s.log)
	if opts.Metrics != nil {
		if s.unmetrics, err = s.registerMetrics(opts.Metrics); err != nil {
			s.idx.stop()
			db.Close()
			return nil, err
		}
	}
	s.log.Info("store opened",
		zap.Int64("chunks", s.chunks.Load()), zap.Int64("bytes", s.bytes.Load()), zap.Int64("budget", opts.Budget),
		zap.Int("dropped", rep.dropped), zap.Int("orphans_removed", rep.orphans), zap.Int("temp_removed", rep.temps),
		zap.Duration("took", time.Since(start)))
	s.evict(true)
	s.bg.Add(1)
	go s.background()
	return s, nil
}

// Has reports whether k is indexed. It does not verify the bytes or count as an access.
func (s *Store) Has(k Key) bool {
	s.life.RLock()
	defer s.life.RUnlock()
	if s.closed {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.entries[k] != nil
}

// Stats returns the current counters.
func (s *Store) Stats() Stats {
	return Stats{
		Chunks:    s.chunks.Load(),
		Bytes:     s.bytes.Load(),
		DiskBytes: s.disk.Load(),
		Budget:    s.opts.Budget,
		Hits:      s.hits.Load(),
		Misses:    s.misses.Load(),
		Repaired:  s.repaired.Load(),
		Evicted:   s.evicted.Load(),
	}
}

// Dir returns the store's directory.
func (s *Store) Dir() string { return s.dir }

// Flush writes pending access times to the index and waits until every index change made so far
// (Puts, evictions, repairs) is committed and every evicted file is removed. Close does this too.
func (s *Store) Flush() error {
	leave, err := s.enter()
	if err != nil {
		return err
	}
	defer leave()
	if err := s.flushAccess(); err != nil {
		return err
	}
	return s.idx.flush()
}

// Close waits for running Gets and Puts, writes pending access times to the index and closes it.
// Later calls fail with ErrClosed; Close itself may be called more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		close(s.stop)
		s.bg.Wait()
		s.life.Lock()
		s.closed = true
		s.life.Unlock()
		flushErr := s.flushAccess()
		s.idx.stop()
		if err := s.db.Close(); err != nil {
			flushErr = errors.Join(flushErr, fmt.Errorf("store: close index: %w", err))
		}
		s.unmetrics()
		s.closeErr = flushErr
	})
	return s.closeErr
}

// enter starts a Get or Put: it fails once the store is closed and otherwise holds Close off until
// the returned function runs.
func (s *Store) enter() (leave func(), err error) {
	s.life.RLock()
	if s.closed {
		s.life.RUnlock()
		return nil, ErrClosed
	}
	return s.life.RUnlock, nil
}

// path returns the absolute path of k's file.
func (s *Store) path(k Key) string {
	var buf [256]byte
	return k.appendPath(buf[:0], s.dir)
}

// insertLocked adds e at the front of the LRU list. s.mu must be held.
func (s *Store) insertLocked(e *entry) {
	s.entries[e.key] = e
	s.lru.pushFront(e)
	s.bytes.Add(int64(e.size))
	s.disk.Add(e.disk)
	s.chunks.Add(1)
}

// removeLocked takes e out of the map and the LRU list. s.mu must be held.
func (s *Store) removeLocked(e *entry) {
	delete(s.entries, e.key)
	s.lru.remove(e)
	e.removed = true
	s.bytes.Add(-int64(e.size))
	s.disk.Add(-e.disk)
	s.chunks.Add(-1)
}

// touchLocked makes e the most recently used entry. s.mu must be held.
func (s *Store) touchLocked(e *entry) {
	s.lru.moveToFront(e)
	s.tick++
	e.tick = s.tick
	if !e.dirty {
		e.dirty = true
		s.dirty = append(s.dirty, e)
		if len(s.dirty) == flushBacklog {
			s.poke()
		}
	}
}

// poke wakes the background goroutine without blocking.
func (s *Store) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}
