package store

import (
	"fmt"
	"time"

	"go.uber.org/zap"
)

// flushBacklog is the number of unflushed accesses that triggers a flush before the interval ends.
const flushBacklog = 4096

// background flushes access times every FlushInterval and, when poked, flushes a large backlog
// and evicts what pins or a concurrent Put left over budget.
func (s *Store) background() {
	defer s.bg.Done()
	t := time.NewTicker(s.opts.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.logFlush(s.flushAccess())
		case <-s.wake:
			s.mu.Lock()
			backlog := len(s.dirty)
			s.mu.Unlock()
			if backlog >= flushBacklog {
				s.logFlush(s.flushAccess())
			}
			s.evict(true)
		}
	}
}

func (s *Store) logFlush(err error) {
	if err != nil {
		s.log.Warn("flushing access times", zap.Error(err))
	}
}

// flushAccess writes the access times of chunks used since the last flush to the index, in one
// transaction. Chunks removed since are skipped, and the index op only updates entries that still
// exist, so a flush racing an eviction never brings an entry back.
func (s *Store) flushAccess() error {
	s.mu.Lock()
	dirty := s.dirty
	s.dirty = nil
	recs := make([]record, 0, len(dirty))
	for _, e := range dirty {
		e.dirty = false
		if !e.removed {
			recs = append(recs, record{key: e.key, size: e.size, tick: e.tick})
		}
	}
	s.mu.Unlock()
	if len(recs) == 0 {
		return nil
	}
	if err := s.idx.do(&indexOp{touches: recs}); err != nil {
		return fmt.Errorf("store: flush %d access times: %w", len(recs), err)
	}
	return nil
}
