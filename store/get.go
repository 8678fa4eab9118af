package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// Get returns the verified bytes of chunk k, which must be size bytes long (0: whatever size was
// stored), in buf when cap(buf) >= size. A miss returns (nil, false, nil). A stored chunk whose file
// is missing, has the wrong size, or (when this Get hashes it) does not hash to k is removed from
// the index and the disk, counted in Stats().Repaired and reported as a miss, so that the caller
// fetches it again. Errors are reserved for bad arguments, a closed store, a done ctx and I/O
// failures other than a missing or unreadable (EIO) file, such as running out of descriptors.
func (s *Store) Get(ctx context.Context, k Key, size uint32, buf []byte) ([]byte, bool, error) {
	if err := k.check(); err != nil {
		return nil, false, err
	}
	if size > maxChunk {
		return nil, false, fmt.Errorf("%w: chunk size %d over %d", ErrInvalid, size, maxChunk)
	}
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	leave, err := s.enter()
	if err != nil {
		return nil, false, err
	}
	defer leave()

	e := s.acquire(k)
	if e == nil {
		s.misses.Add(1)
		return nil, false, nil
	}
	defer s.release(k)

	if size == 0 {
		size = e.size
	}
	if e.size != size {
		s.repair(e, fmt.Sprintf("stored %d bytes, asked for %d", e.size, size))
		return nil, false, nil
	}
	out, bad, err := s.readFile(k, size, buf)
	if err != nil {
		return nil, false, err
	}
	if bad == "" && (s.opts.VerifyReads || !e.verified.Load()) {
		if k.matches(out) {
			e.verified.Store(true)
		} else {
			bad = "bytes do not hash to the key"
		}
	}
	if bad != "" {
		s.repair(e, bad)
		return nil, false, nil
	}
	s.hits.Add(1)
	return out, true, nil
}

// acquire looks k up, and on a hit makes it the most recently used chunk and pins it (a chunk being
// read is never evicted). It returns nil on a miss.
func (s *Store) acquire(k Key) *entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[k]
	if e == nil {
		return nil
	}
	s.touchLocked(e)
	s.pins[k]++
	return e
}

// release undoes acquire's pin.
func (s *Store) release(k Key) { s.unpin(k) }

// readFile reads k's file, which should hold size bytes. bad is non-empty when the file is
// missing, has another size or cannot be read (EIO): the chunk must be repaired. err is any other
// failure. It makes the open, fstat, pread and close system calls itself: os.Open adds fcntl and
// epoll calls that cost as much again for a 4 KiB chunk and do nothing for a regular file.
func (s *Store) readFile(k Key, size uint32, buf []byte) (out []byte, bad string, err error) {
	fd, err := openRead(s.path(k))
	if errors.Is(err, unix.ENOENT) {
		return nil, "file is missing", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("store: open %s: %w", k, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := fstat(fd, &st); err != nil {
		return nil, "", fmt.Errorf("store: stat %s: %w", k, err)
	}
	if st.Size != int64(size) {
		return nil, fmt.Sprintf("file holds %d bytes, want %d", st.Size, size), nil
	}
	if cap(buf) < int(size) {
		buf = make([]byte, size)
	}
	out = buf[:size]
	for n := 0; n < len(out); {
		m, err := pread(fd, out[n:], int64(n))
		switch {
		case errors.Is(err, unix.EIO):
			return nil, fmt.Sprintf("read error at byte %d: %v", n, err), nil
		case err != nil:
			return nil, "", fmt.Errorf("store: read %s: %w", k, err)
		case m == 0:
			return nil, fmt.Sprintf("file shrank to %d bytes while read", n), nil
		}
		n += m
	}
	return out, "", nil
}

// repair removes the chunk e stands for (index entry first, then the file) unless another
// goroutine already did, and counts it as repaired and as a miss.
func (s *Store) repair(e *entry, why string) {
	s.misses.Add(1)
	unlock := s.keys.lock(e.key)
	defer unlock()
	s.mu.Lock()
	current := s.entries[e.key] == e
	if current {
		s.removeLocked(e)
	}
	s.mu.Unlock()
	if !current {
		return
	}
	s.repaired.Add(1)
	s.log.Warn("dropping damaged chunk; it will be fetched again", zap.String("chunk", e.key.String()), zap.String("reason", why))
	if err := s.idx.do(&indexOp{dels: []Key{e.key}}); err != nil {
		// The file goes anyway: an entry without its file is dropped by the next Open.
		s.log.Error("unindexing damaged chunk", zap.String("chunk", e.key.String()), zap.Error(err))
	}
	if err := os.Remove(s.path(e.key)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Error("removing damaged chunk file", zap.String("chunk", e.key.String()), zap.Error(err))
	}
}
