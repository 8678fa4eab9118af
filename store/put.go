package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/dfnydus/dfnydus/rafs"
)

// Put stores data as chunk k. data must hash to k (a mismatch is an error wrapping rafs.ErrCorrupt).
// The bytes go to a temp file, which is synced (Options.Sync) and renamed into place before the
// index entry is queued, so the index never names bytes that were not durable. Put returns once the
// chunk can be served; its index entry is group-committed right after (Flush waits for it), and a
// crash before that commit loses the chunk but never indexes a wrong one. Putting a stored chunk
// again only marks it used. Afterwards least recently used unpinned chunks are evicted while over
// Budget.
func (s *Store) Put(ctx context.Context, k Key, data []byte) error {
	if err := k.check(); err != nil {
		return err
	}
	if len(data) == 0 || len(data) > maxChunk {
		return fmt.Errorf("%w: chunk of %d bytes (want 1 to %d)", ErrInvalid, len(data), maxChunk)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	leave, err := s.enter()
	if err != nil {
		return err
	}
	defer leave()

	if !k.matches(data) {
		return rafs.Corruptf("store put %s: the %d bytes hash to %s", k, len(data), KeyOf(k.Alg, data).Digest)
	}
	if s.touch(k) {
		return nil
	}
	if err := s.add(ctx, k, data); err != nil {
		return err
	}
	s.evict(false)
	return nil
}

// touch marks k used and reports whether it is stored.
func (s *Store) touch(k Key) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[k]
	if e != nil {
		s.touchLocked(e)
	}
	return e != nil
}

// add writes, syncs, renames and indexes a chunk that was not stored, holding k's lock so that a
// concurrent Put of the same chunk waits and then finds it stored.
func (s *Store) add(ctx context.Context, k Key, data []byte) error {
	unlock := s.keys.lock(k)
	defer unlock()
	if s.touch(k) {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	disk, err := s.writeFile(ctx, k, data)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.tick++
	e := &entry{key: k, size: uint32(len(data)), tick: s.tick, disk: disk}
	s.mu.Unlock()
	// The file is in place (and synced), so the entry may be committed; Put does not wait for the
	// transaction. A crash before it commits leaves an orphan file, which Open removes.
	if err := s.idx.submit(&indexOp{puts: []record{{key: k, size: e.size, tick: e.tick}}}); err != nil {
		if rmErr := os.Remove(s.path(k)); rmErr != nil {
			err = errors.Join(err, fmt.Errorf("store: remove unindexed %s: %w", k, rmErr))
		}
		return fmt.Errorf("store put %s: %w", k, err)
	}
	s.mu.Lock()
	s.insertLocked(e)
	s.mu.Unlock()
	return nil
}

// writeFile makes k's file durable under its final name and returns the space it occupies.
func (s *Store) writeFile(ctx context.Context, k Key, data []byte) (disk int64, err error) {
	f, err := os.CreateTemp(filepath.Join(s.dir, tmpDir), k.String()+".*")
	if err != nil {
		return 0, fmt.Errorf("store put %s: create temp file: %w", k, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return 0, fmt.Errorf("store put %s: write: %w", k, err)
	}
	if s.opts.Sync {
		if err := f.Sync(); err != nil {
			return 0, fmt.Errorf("store put %s: sync: %w", k, err)
		}
	}
	info, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("store put %s: stat: %w", k, err)
	}
	if err := f.Close(); err != nil {
		return 0, fmt.Errorf("store put %s: close: %w", k, err)
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	final := s.path(k)
	err = os.Rename(tmp, final)
	if errors.Is(err, os.ErrNotExist) { // the first chunk of its fan-out directory
		if err = os.Mkdir(filepath.Dir(final), 0o700); err == nil || errors.Is(err, os.ErrExist) {
			err = os.Rename(tmp, final)
		}
	}
	if err != nil {
		return 0, fmt.Errorf("store put %s: rename into place: %w", k, err)
	}
	return diskUsage(info), nil
}
