package blobstore

import (
	"fmt"

	"go.uber.org/zap"
)

// used is what counts against the budget: verified and pending bytes, and room reserved by writes
// in progress.
func (s *Store) used() int64 { return s.verified.Load() + s.pending.Load() + s.reserved.Load() }

func (s *Store) overBudget() bool { return s.opts.Budget > 0 && s.used() > s.opts.Budget }

// reserve makes room for n new bytes, evicting least recently used unpinned segments as needed,
// and counts them as reserved; the caller gives them back with s.reserved.Add(-n) once the bytes
// are accounted for. It fails with ErrNoSpace when even evicting every unpinned segment is not
// enough.
func (s *Store) reserve(n int64) error {
	if n <= 0 || s.opts.Budget == 0 {
		s.reserved.Add(n)
		return nil
	}
	s.spaceMu.Lock()
	defer s.spaceMu.Unlock()
	if n > s.opts.Budget {
		return fmt.Errorf("%w: %d bytes exceed the budget of %d", ErrNoSpace, n, s.opts.Budget)
	}
	for s.used()+n > s.opts.Budget {
		if !s.evictOne() {
			return fmt.Errorf("%w: %d bytes wanted, %d of %d in use and pinned", ErrNoSpace, n, s.used(), s.opts.Budget)
		}
	}
	s.reserved.Add(n)
	return nil
}

// evictOver evicts until the store is within its budget or nothing unpinned is left (writes that
// raced may overshoot their reservation a little).
func (s *Store) evictOver() {
	s.spaceMu.Lock()
	defer s.spaceMu.Unlock()
	for s.overBudget() && s.evictOne() {
	}
}

// evictOne evicts the least recently used unpinned segment; false if there is none.
func (s *Store) evictOne() bool {
	k, ok := s.lru.victim()
	if !ok {
		return false
	}
	s.evictSegment(k.b, k.idx)
	return true
}

// evictSegment takes segment seg of b out of both sets at once (readers see ErrMissing from here
// on) and queues the index change; only after it commits are the bytes punched. The segment stays
// range-locked until then: a write there before the index forgets the old range would leave an
// index (after a crash) naming bytes that were overwritten.
func (s *Store) evictSegment(b *Blob, seg int64) {
	lo := seg << segShift
	hi := min(lo+segSize, b.size)
	s.evicted.Add(s.dropRange(b, lo, hi, "evicted"))
}

// dropRange takes [lo, hi) of b out of both sets at once (readers see ErrMissing from here on)
// and queues the index change; only after it commits are the bytes punched, and the range stays
// locked until then so no write lands on bytes about to be punched. It returns the bytes dropped.
func (s *Store) dropRange(b *Blob, lo, hi int64, why string) int64 {
	if err := s.idx.reserve(); err != nil {
		return 0
	}
	b.mu.Lock()
	if !b.lockRange(lo, hi) {
		b.mu.Unlock()
		s.idx.unreserve()
		return 0
	}
	gone, v := b.verified.remove(lo, hi, []span{})
	_, p := b.pending.remove(lo, hi, nil)
	if v+p == 0 {
		b.unlockRange(lo, hi)
		b.mu.Unlock()
		s.idx.unreserve()
		return 0
	}
	b.epoch++
	rs := make([]Range, len(gone))
	for i, g := range gone {
		rs[i] = Range{g.off, g.end - g.off}
	}
	s.idx.push(&indexOp{kind: opDel, b: b, ranges: rs, after: func(err error) {
		if err != nil {
			// The index may still name the bytes: keep them. The next Open trusts the index.
			s.log.Warn("dropped bytes kept on disk: index change failed", zap.String("blob", b.id), zap.String("why", why), zap.Error(err))
		} else {
			b.punchLocked(lo, hi)
		}
		b.mu.Lock()
		b.unlockRange(lo, hi)
		b.mu.Unlock()
	}})
	b.mu.Unlock()
	s.verified.Add(-v)
	s.pending.Add(-p)
	return v + p
}
