package blobstore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"go.uber.org/zap"
)

// Sentinel errors; check them with errors.Is.
var (
	// ErrMissing: some byte asked for is not verified (or not written, for ReadAny), or was
	// evicted, dropped or removed while it was being read.
	ErrMissing = errors.New("blob bytes not in the store")
	// ErrInvalid: an argument is out of range (malformed id, size, offset or length).
	ErrInvalid = errors.New("invalid blob store argument")
	// ErrLocked: another process has the directory open.
	ErrLocked = errors.New("blob store directory is in use")
	// ErrClosed: the Store was closed.
	ErrClosed = errors.New("blob store is closed")
	// ErrChanged is returned by Promote when pending bytes were written or dropped since the
	// caller took PendingGen: what it verified may not be what is there now.
	ErrChanged = errors.New("pending blob bytes changed since they were read")
	// ErrSizeMismatch: a blob is already known with another size.
	ErrSizeMismatch = errors.New("blob size mismatch")
	// ErrNoSpace: the write does not fit the budget even after evicting every unpinned segment.
	ErrNoSpace = errors.New("blob store budget exhausted")
)

// MaxBlobSize is the largest blob the store accepts.
const MaxBlobSize = 1 << 40

// Names below the store directory.
const (
	indexFile = "index.db"
	blobsDir  = "blobs"
)

// Options configure a Store.
type Options struct {
	// Budget is the most blob bytes (verified plus pending) the store keeps; 0 means unlimited.
	// File-system block rounding is not counted (see Stats.DiskBytes).
	Budget int64
	// Sync fdatasyncs blob files before the index names their ranges, so that the index is right
	// after a power loss too. Without it a process crash is still safe, a power loss may not be.
	Sync bool
	// LockTimeout is how long Open waits for another process to close the directory before it
	// fails with ErrLocked; 0 means DefaultLockTimeout.
	LockTimeout time.Duration
	// Log receives recovery reports and background errors; nil means zap.NewNop().
	Log *zap.Logger
	// Metrics, when not nil, receives the dfnydus_blobstore_* metrics; Close unregisters them.
	Metrics prometheus.Registerer
}

// DefaultLockTimeout is used when Options.LockTimeout is zero.
const DefaultLockTimeout = time.Second

// DefaultOptions returns options with Sync on and an unlimited budget.
func DefaultOptions() Options {
	return Options{Sync: true, LockTimeout: DefaultLockTimeout}
}

// Stats is a snapshot of the store's counters.
type Stats struct {
	Blobs         int64 // blobs known
	VerifiedBytes int64
	PendingBytes  int64
	DiskBytes     int64 // what the blob files occupy (st_blocks), block rounding included
	Budget        int64
	Evicted       int64  // bytes evicted to stay within Budget
	Hits          uint64 // ReadAt/OpenRange calls served
	Misses        uint64 // ReadAt/OpenRange calls that found bytes missing
	Reads         uint64 // ReadAt/OpenRange calls
	Writes        uint64 // WriteVerified/WritePending calls
}

// BlobInfo describes one known blob.
type BlobInfo struct {
	ID            string
	Size          int64
	VerifiedBytes int64
	PendingBytes  int64
}

// Store is the local blob store; see the package documentation. It is safe for concurrent use.
type Store struct {
	dir  string
	opts Options
	log  *zap.Logger
	db   *bolt.DB
	idx  *committer
	lru  *lru

	mu    sync.Mutex
	blobs map[string]*Blob

	spaceMu sync.Mutex // one reserver/evictor at a time

	verified, pending, reserved, evicted atomic.Int64
	hits, misses, reads, writes          atomic.Uint64

	life      sync.RWMutex // operations hold it shared; Close takes it to wait for them
	closed    bool
	isClosed  atomic.Bool // set once Close has waited for the operations; stops file reopening
	closeOnce sync.Once
	closeErr  error
	unmetrics func()
}

// Open opens (creating if needed) the store in dir and recovers it: index entries whose file is
// gone or has the wrong size are dropped, files without an entry are deleted, and every byte not
// verified is punched out, so nothing pending survives a restart. A directory in another format is
// wiped, since the store is a cache.
func Open(dir string, opts Options) (*Store, error) {
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = DefaultLockTimeout
	}
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	if opts.Budget < 0 {
		return nil, fmt.Errorf("%w: budget %d", ErrInvalid, opts.Budget)
	}
	dir = filepath.Clean(dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("blobstore: create %s: %w", dir, err)
	}
	db, err := bolt.Open(filepath.Join(dir, indexFile), 0o600, &bolt.Options{
		Timeout:        opts.LockTimeout,
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("blobstore: open %s: %w (gave up after %v)", dir, ErrLocked, opts.LockTimeout)
	}
	if err != nil {
		return nil, fmt.Errorf("blobstore: open index in %s: %w", dir, err)
	}
	s := &Store{
		dir:       dir,
		opts:      opts,
		log:       opts.Log.With(zap.String("blobstore", dir)),
		db:        db,
		lru:       newLRU(),
		blobs:     make(map[string]*Blob),
		unmetrics: func() {},
	}
	start := time.Now()
	if err := s.recover(); err != nil {
		s.closeFiles()
		db.Close()
		return nil, err
	}
	s.idx = newCommitter(s)
	if opts.Metrics != nil {
		un, err := s.registerMetrics(opts.Metrics)
		if err != nil {
			s.idx.stop()
			s.closeFiles()
			db.Close()
			return nil, err
		}
		s.unmetrics = un
	}
	st := s.Stats()
	s.log.Info("blob store open", zap.Int64("blobs", st.Blobs), zap.Int64("verified_bytes", st.VerifiedBytes),
		zap.Int64("disk_bytes", st.DiskBytes), zap.Duration("took", time.Since(start)))
	if s.overBudget() {
		s.evictOver()
	}
	return s, nil
}

// enter starts an operation; leave ends it. Close waits for operations in progress.
func (s *Store) enter() bool {
	s.life.RLock()
	if s.closed {
		s.life.RUnlock()
		return false
	}
	return true
}

func (s *Store) leave() { s.life.RUnlock() }

// Close waits for the operations in progress, commits every queued index change (and the punches
// that follow them), and closes the files and the index.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.life.Lock()
		s.closed = true
		s.life.Unlock()
		s.idx.stop()
		s.isClosed.Store(true)
		s.unmetrics()
		s.closeFiles()
		if err := s.db.Close(); err != nil {
			s.closeErr = fmt.Errorf("blobstore: close index: %w", err)
		}
	})
	return s.closeErr
}

func (s *Store) closeFiles() {
	s.mu.Lock()
	bs := make([]*Blob, 0, len(s.blobs))
	for _, b := range s.blobs {
		bs = append(bs, b)
	}
	s.mu.Unlock()
	for _, b := range bs {
		b.fileMu.Lock()
		if f := b.f.Swap(nil); f != nil {
			f.Close()
		}
		b.fileMu.Unlock()
	}
}

// Flush returns when every range verified before the call is durable in the index.
func (s *Store) Flush() error {
	if !s.enter() {
		return ErrClosed
	}
	defer s.leave()
	return s.idx.flush()
}

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

// Stats returns a snapshot of the counters. DiskBytes stats every blob file.
func (s *Store) Stats() Stats {
	st := Stats{
		VerifiedBytes: s.verified.Load(),
		PendingBytes:  s.pending.Load(),
		Budget:        s.opts.Budget,
		Evicted:       s.evicted.Load(),
		Hits:          s.hits.Load(),
		Misses:        s.misses.Load(),
		Reads:         s.reads.Load(),
		Writes:        s.writes.Load(),
	}
	st.DiskBytes = s.diskBytes()
	s.mu.Lock()
	st.Blobs = int64(len(s.blobs))
	s.mu.Unlock()
	return st
}

func (s *Store) diskBytes() int64 {
	s.mu.Lock()
	paths := make([]string, 0, len(s.blobs))
	for _, b := range s.blobs {
		paths = append(paths, b.path)
	}
	s.mu.Unlock()
	var n int64
	for _, p := range paths {
		if info, err := os.Lstat(p); err == nil {
			n += diskUsage(info)
		}
	}
	return n
}

// validID reports whether id is 64 lowercase hex digits (a sha256 digest).
func validID(id string) bool {
	if len(id) != 64 {
		return false
	}
	for i := range len(id) {
		c := id[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func (s *Store) blobPath(id string) string {
	return filepath.Join(s.dir, blobsDir, id[:2], id)
}

// Blob returns the handle of blob id of size bytes, creating it in memory if the blob is unknown;
// nothing is created on disk before the first write.
func (s *Store) Blob(id string, size int64) (*Blob, error) {
	if !validID(id) {
		return nil, fmt.Errorf("%w: blob id %q", ErrInvalid, id)
	}
	if size <= 0 || size > MaxBlobSize {
		return nil, fmt.Errorf("%w: blob size %d", ErrInvalid, size)
	}
	if !s.enter() {
		return nil, ErrClosed
	}
	defer s.leave()
	for {
		s.mu.Lock()
		b := s.blobs[id]
		if b == nil {
			b = newBlob(s, id, size)
			s.blobs[id] = b
			s.mu.Unlock()
			return b, nil
		}
		s.mu.Unlock()
		if b.isRemoved() {
			<-b.gone // Remove is unlinking its file; a new handle must not open it
			continue
		}
		if b.size != size {
			return nil, fmt.Errorf("blob %s: %w: known with %d bytes, asked for %d", id, ErrSizeMismatch, b.size, size)
		}
		return b, nil
	}
}

// Lookup returns the handle of a known blob.
func (s *Store) Lookup(id string) (*Blob, bool) {
	s.mu.Lock()
	b := s.blobs[id]
	s.mu.Unlock()
	if b == nil || b.isRemoved() {
		return nil, false
	}
	return b, true
}

// List describes every known blob, sorted by id.
func (s *Store) List() []BlobInfo {
	s.mu.Lock()
	bs := make([]*Blob, 0, len(s.blobs))
	for _, b := range s.blobs {
		bs = append(bs, b)
	}
	s.mu.Unlock()
	out := make([]BlobInfo, 0, len(bs))
	for _, b := range bs {
		b.mu.Lock()
		if !b.removed {
			out = append(out, BlobInfo{ID: b.id, Size: b.size, VerifiedBytes: b.verified.total, PendingBytes: b.pending.total})
		}
		b.mu.Unlock()
	}
	slices.SortFunc(out, func(a, b BlobInfo) int {
		if a.ID < b.ID {
			return -1
		}
		if a.ID > b.ID {
			return 1
		}
		return 0
	})
	return out
}

// Remove drops blob id: its bytes stop being readable at once, the index forgets it (committed
// before anything is deleted), then its file is unlinked. Removing an unknown blob is not an error.
func (s *Store) Remove(id string) error {
	if !s.enter() {
		return ErrClosed
	}
	defer s.leave()
	s.mu.Lock()
	b := s.blobs[id]
	s.mu.Unlock()
	if b == nil {
		return nil
	}
	b.mu.Lock()
	if b.removed {
		b.mu.Unlock()
		<-b.gone
		return nil
	}
	b.removed = true
	b.epoch++
	v, p := b.verified.total, b.pending.total
	b.verified.reset()
	b.pending.reset()
	b.cond.Broadcast()
	b.mu.Unlock()
	s.verified.Add(-v)
	s.pending.Add(-p)
	s.lru.removeBlob(b)

	defer func() {
		s.mu.Lock()
		if s.blobs[id] == b {
			delete(s.blobs, id)
		}
		s.mu.Unlock()
		close(b.gone)
	}()
	b.fileMu.Lock()
	defer b.fileMu.Unlock()
	if !b.created {
		return nil
	}
	if err := s.idx.do(&indexOp{kind: opDropBlob, b: b}); err != nil {
		// The index may still name the blob: keep its file, the next Open loads it again.
		return fmt.Errorf("blobstore: remove %s: %w", id, err)
	}
	if f := b.f.Swap(nil); f != nil {
		f.Close()
	}
	if err := os.Remove(b.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("blobstore: remove %s: %w", id, err)
	}
	return nil
}
