package store

import (
	"errors"
	"io/fs"
	"os"
	"sync"

	"go.uber.org/zap"
)

// maxEvictBatch bounds the chunks removed under one index transaction.
const maxEvictBatch = 64

// Pin keeps chunk k from being evicted until unpin is called; pins are counted, so every Pin needs
// its own unpin (calling one unpin twice is harmless). k need not be stored yet: pinning before a
// Put protects the chunk from the moment it is stored. Pins do not stop repair of damaged chunks.
func (s *Store) Pin(k Key) (unpin func()) {
	s.mu.Lock()
	s.pins[k]++
	s.mu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { s.unpin(k) }) }
}

func (s *Store) unpin(k Key) {
	s.mu.Lock()
	n := s.pins[k] - 1
	if n <= 0 {
		delete(s.pins, k)
	} else {
		s.pins[k] = n
	}
	over := n <= 0 && s.overBudget()
	s.mu.Unlock()
	if over {
		s.poke() // the background goroutine evicts what the pin held back
	}
}

func (s *Store) overBudget() bool {
	return s.opts.Budget > 0 && s.bytes.Load() > s.opts.Budget
}

// evict removes least recently used unpinned chunks while the store is over budget. A Put
// (wait=false) leaves the work to an eviction already running, whose loop sees the Put's bytes,
// and pokes the background goroutine in case that evictor was just finishing; the background
// goroutine (wait=true) waits for its turn.
func (s *Store) evict(wait bool) {
	for s.overBudget() {
		if wait {
			s.evictMu.Lock()
		} else if !s.evictMu.TryLock() {
			s.poke()
			return
		}
		progress := s.evictBatch()
		s.evictMu.Unlock()
		if !progress {
			return // everything left is pinned; unpin pokes us again
		}
	}
}

// evictBatch removes up to maxEvictBatch chunks from the cold end of the LRU list, skipping pinned
// ones, and reports whether it removed any. evictMu must be held.
func (s *Store) evictBatch() bool {
	s.mu.Lock()
	excess := s.bytes.Load() - s.opts.Budget
	var victims []*entry
	for e := s.lru.back; e != nil && excess > 0 && len(victims) < maxEvictBatch; e = e.prev {
		if s.pins[e.key] == 0 {
			victims = append(victims, e)
			excess -= int64(e.size)
		}
	}
	s.mu.Unlock()
	if len(victims) == 0 {
		return false
	}

	// Hold each victim's key lock from before it leaves the map until its file is gone, so a Put of
	// the same chunk cannot interleave its rename and index write with ours. The committer releases
	// the locks once the index no longer names the files and the files are removed. Only evictions
	// hold more than one key lock, one eviction at a time, and nothing that holds a key lock waits
	// for evictMu or for another key lock.
	unlocks := make([]func(), len(victims))
	for i, e := range victims {
		unlocks[i] = s.keys.lock(e.key)
	}
	release := func() {
		for _, u := range unlocks {
			u()
		}
	}
	s.mu.Lock()
	gone := victims[:0]
	for _, e := range victims {
		if s.entries[e.key] == e && s.pins[e.key] == 0 {
			s.removeLocked(e)
			gone = append(gone, e)
		}
	}
	s.mu.Unlock()
	if len(gone) == 0 {
		release()
		return false
	}
	keys := make([]Key, len(gone))
	for i, e := range gone {
		keys[i] = e.key
	}
	err := s.idx.submit(&indexOp{dels: keys, after: func(err error) {
		defer release()
		if err != nil {
			// The index still names the files, so they stay; the next Open loads them again.
			s.log.Error("unindexing evicted chunks; keeping their files", zap.Int("chunks", len(keys)), zap.Error(err))
			return
		}
		for _, k := range keys {
			if err := os.Remove(s.path(k)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				s.log.Error("removing evicted chunk file", zap.String("chunk", k.String()), zap.Error(err))
			}
		}
	}})
	if err != nil {
		release()
		return false
	}
	s.evicted.Add(uint64(len(gone)))
	s.log.Debug("evicting", zap.Int("chunks", len(gone)), zap.Int64("bytes", s.bytes.Load()))
	return true
}
