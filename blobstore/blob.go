package blobstore

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"
)

// Blob is the handle of one blob of the store. It is safe for concurrent use.
//
// Its mutex guards only in-memory state; file I/O runs outside it. Writes and punches of
// overlapping bytes exclude each other through range locks (b.locked), so that a punch never
// lands on bytes a writer is about to mark, and a pending write never lands on bytes that became
// verified meanwhile. Readers take no range lock: they check the eviction epoch instead.
type Blob struct {
	s    *Store
	id   string
	size int64
	path string
	gone chan struct{} // closed when Remove has finished

	mu       sync.Mutex
	cond     *sync.Cond // a range lock was released, or the blob removed
	verified spanSet
	pending  spanSet
	locked   []Range                       // ranges being written or punched
	epoch    uint64                        // bumped whenever bytes leave the sets (evict, drop, remove)
	pgen     uint64                        // bumped whenever pending bytes are written or dropped (see Promote)
	pchanges [pendingChanges]pendingChange // the latest of those changes, by pgen % pendingChanges
	removed  bool
	subs     map[chan struct{}]struct{}

	fileMu  sync.Mutex // serializes creating, opening and closing the file
	created bool       // the file exists on disk (under fileMu)
	f       atomic.Pointer[os.File]
}

// pendingChanges is how many recent changes of pending bytes a blob remembers: Promote refuses
// bytes whose range changed since the caller's generation, and any promote from before the
// oldest one remembered.
const pendingChanges = 64

// pendingChange is a range of pending bytes written or dropped at generation gen.
type pendingChange struct {
	gen      uint64
	off, end int64
}

// changedLocked records that pending bytes of [off, end) were written or dropped. b.mu held.
func (b *Blob) changedLocked(off, end int64) {
	b.pgen++
	b.pchanges[b.pgen%pendingChanges] = pendingChange{b.pgen, off, end}
}

// changedSinceLocked says whether pending bytes of [off, end) may have changed since gen. b.mu held.
func (b *Blob) changedSinceLocked(gen uint64, off, end int64) bool {
	if b.pgen == gen {
		return false
	}
	if b.pgen-gen > pendingChanges {
		return true // the changes since are no longer all remembered
	}
	for g := gen + 1; g <= b.pgen; g++ {
		c := b.pchanges[g%pendingChanges]
		if c.off < end && off < c.end {
			return true
		}
	}
	return false
}

func newBlob(s *Store, id string, size int64) *Blob {
	b := &Blob{s: s, id: id, size: size, path: s.blobPath(id), gone: make(chan struct{})}
	b.cond = sync.NewCond(&b.mu)
	return b
}

// ID is the blob's id (its sha256 in hex).
func (b *Blob) ID() string { return b.id }

// Size is the blob's size in bytes.
func (b *Blob) Size() int64 { return b.size }

func (b *Blob) isRemoved() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.removed
}

func (b *Blob) missingErr(off, n int64) error {
	return fmt.Errorf("blob %s [%d,%d): %w", b.id, off, off+n, ErrMissing)
}

func (b *Blob) removedErr() error {
	return fmt.Errorf("blob %s was removed: %w", b.id, ErrMissing)
}

// check validates the range [off, off+n).
func (b *Blob) check(off, n int64) error {
	if off < 0 || n < 0 || off > b.size || n > b.size-off {
		return fmt.Errorf("%w: range [%d,+%d) of blob %s of %d bytes", ErrInvalid, off, n, b.id, b.size)
	}
	return nil
}

// clip bounds [off, off+n) to the blob.
func (b *Blob) clip(off, n int64) (int64, int64) {
	off = max(off, 0)
	end := off + max(n, 0)
	if end < off || end > b.size { // overflow or past the end
		end = b.size
	}
	return min(off, end), end
}

// file returns the blob's open file, opening it, or creating it (sparse, at full size) when create
// is set and it does not exist yet.
func (b *Blob) file(create bool) (*os.File, error) {
	if f := b.f.Load(); f != nil {
		return f, nil
	}
	b.fileMu.Lock()
	defer b.fileMu.Unlock()
	if f := b.f.Load(); f != nil {
		return f, nil
	}
	if b.s.isClosed.Load() {
		return nil, ErrClosed
	}
	if b.isRemoved() {
		return nil, b.removedErr()
	}
	if b.created {
		f, err := os.OpenFile(b.path, os.O_RDWR, 0)
		if err != nil {
			return nil, fmt.Errorf("blobstore: open %s: %w", b.path, err)
		}
		b.f.Store(f)
		return f, nil
	}
	if !create {
		return nil, b.missingErr(0, b.size)
	}
	if err := b.s.idx.reserve(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(b.path), 0o700); err != nil {
		b.s.idx.unreserve()
		return nil, fmt.Errorf("blobstore: %w", err)
	}
	f, err := os.OpenFile(b.path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		b.s.idx.unreserve()
		return nil, fmt.Errorf("blobstore: %w", err)
	}
	if err := f.Truncate(b.size); err != nil {
		f.Close()
		os.Remove(b.path)
		b.s.idx.unreserve()
		return nil, fmt.Errorf("blobstore: %w", err)
	}
	// Queued before any range of the blob, so the index knows the blob first.
	b.s.idx.push(&indexOp{kind: opPutBlob, b: b})
	b.created = true
	b.f.Store(f)
	return f, nil
}

func overlaps(rs []Range, off, end int64) bool {
	for _, r := range rs {
		if r.Off < end && off < r.End() {
			return true
		}
	}
	return false
}

// lockRange waits until no write or punch holds bytes of [off, end), then holds them. It needs
// b.mu and returns false (holding nothing) if the blob was removed.
func (b *Blob) lockRange(off, end int64) bool {
	for !b.removed && overlaps(b.locked, off, end) {
		b.cond.Wait()
	}
	if b.removed {
		return false
	}
	b.locked = append(b.locked, Range{off, end - off})
	return true
}

func (b *Blob) unlockRange(off, end int64) {
	for i, r := range b.locked {
		if r.Off == off && r.Len == end-off {
			b.locked[i] = b.locked[len(b.locked)-1]
			b.locked = b.locked[:len(b.locked)-1]
			break
		}
	}
	b.cond.Broadcast()
}

// covered reports whether every byte of [off, end) is verified or pending; it needs b.mu.
func (b *Blob) covered(off, end int64) bool {
	for _, m := range b.verified.missing(off, end, nil) {
		if !b.pending.covers(m.Off, m.End()) {
			return false
		}
	}
	return true
}

// Verified reports whether every byte of [off, off+n) is verified.
func (b *Blob) Verified(off, n int64) bool {
	if b.check(off, n) != nil {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.verified.covers(off, off+n)
}

// Covered reports whether every byte of [off, off+n) is verified or pending.
func (b *Blob) Covered(off, n int64) bool {
	if b.check(off, n) != nil {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.covered(off, off+n)
}

// Missing returns the sub-ranges of [off, off+n), clipped to the blob, that are not verified, in
// order.
func (b *Blob) Missing(off, n int64) []Range {
	off, end := b.clip(off, n)
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.verified.missing(off, end, nil)
}

// Ranges returns the verified ranges, merged and sorted.
func (b *Blob) Ranges() []Range {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.verified.ranges()
}

// VerifiedBytes is the number of verified bytes.
func (b *Blob) VerifiedBytes() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.verified.total
}

// Pending returns the pending ranges and their origins, sorted.
func (b *Blob) Pending() []PendingRange {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]PendingRange, len(b.pending.s))
	for i, s := range b.pending.s {
		out[i] = PendingRange{Range{s.off, s.end - s.off}, s.origin}
	}
	return out
}

// ReadAt fills p with the verified bytes at off. If any of them is not verified, or is evicted,
// dropped or removed while being read, it returns an error wrapping ErrMissing and p's contents
// are undefined. A successful read counts as an access for eviction.
func (b *Blob) ReadAt(p []byte, off int64) error {
	s := b.s
	if !s.enter() {
		return ErrClosed
	}
	defer s.leave()
	s.reads.Add(1)
	err := b.read(p, off, false)
	if err != nil {
		if errors.Is(err, ErrMissing) {
			s.misses.Add(1)
		}
		return err
	}
	s.hits.Add(1)
	if len(p) > 0 {
		s.lru.touch(b, off, off+int64(len(p)))
	}
	return nil
}

// ReadAny is ReadAt for bytes that are verified or pending: callers assemble a chunk that
// straddles two writes in order to verify it. Pending bytes are unverified; never serve them.
func (b *Blob) ReadAny(p []byte, off int64) error {
	s := b.s
	if !s.enter() {
		return ErrClosed
	}
	defer s.leave()
	return b.read(p, off, true)
}

// maxReadTries bounds how often a read is retried when evictions keep changing the blob.
const maxReadTries = 4

// read preads [off, off+len(p)) outside any lock, between two looks at the blob's epoch. Bytes
// leave the sets (and so the epoch moves) before they are punched, and a punch never touches bytes
// that are in a set; so if the range was in the sets at the first look and the epoch did not move
// by the second, no punch overlapped the pread and p holds the written bytes. Otherwise it reads
// again while the range is still there.
func (b *Blob) read(p []byte, off int64, anyPending bool) error {
	n := int64(len(p))
	if err := b.check(off, n); err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	end := off + n
	for range maxReadTries {
		b.mu.Lock()
		removed := b.removed
		ok := b.verified.covers(off, end) || (anyPending && b.covered(off, end))
		epoch := b.epoch
		b.mu.Unlock()
		if removed {
			return b.removedErr()
		}
		if !ok {
			return b.missingErr(off, n)
		}
		f, err := b.file(false)
		if err != nil {
			return err
		}
		if _, err := f.ReadAt(p, off); err != nil {
			if b.isRemoved() {
				return b.removedErr()
			}
			if errors.Is(err, os.ErrClosed) {
				return ErrClosed
			}
			return fmt.Errorf("blobstore: read %s: %w", b.id, err)
		}
		b.mu.Lock()
		same := b.epoch == epoch
		b.mu.Unlock()
		if same {
			return nil
		}
	}
	return b.missingErr(off, n)
}

// WriteVerified stores bytes the caller verified: it pwrites them, marks them verified (readable at
// once) and queues the index change. It does not wait for fdatasync or the index; Flush does.
// Bytes already verified are neither rewritten nor counted again; pending bytes become verified.
func (b *Blob) WriteVerified(off int64, data []byte) error {
	return b.write(off, data, true, "")
}

// WritePending stores bytes not verified yet, tracked in memory with their origin and never indexed.
// Bytes already verified are left as they are (neither rewritten nor made pending).
func (b *Blob) WritePending(off int64, data []byte, origin string) error {
	return b.write(off, data, false, origin)
}

func (b *Blob) write(off int64, data []byte, verified bool, origin string) error {
	n := int64(len(data))
	if err := b.check(off, n); err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	s := b.s
	if !s.enter() {
		return ErrClosed
	}
	defer s.leave()
	s.writes.Add(1)
	end := off + n
	// Pinned, the segments written are not eviction victims while the write runs.
	s.lru.pin(b, off, end)
	defer s.lru.unpin(b, off, end)
	f, err := b.file(true)
	if err != nil {
		return err
	}
	if verified {
		if err := s.idx.reserve(); err != nil {
			return err
		}
	}
	pushed := false
	defer func() {
		if verified && !pushed {
			s.idx.unreserve()
		}
	}()

	// Room for the bytes new to the store, made before any range lock is held (evicting queues
	// index ops, which may wait for the committer, which may wait for a range lock).
	b.mu.Lock()
	need := n - b.verified.overlapBytes(off, end) - b.pending.overlapBytes(off, end)
	b.mu.Unlock()
	if err := s.reserve(need); err != nil {
		return fmt.Errorf("blob %s [%d,%d): %w", b.id, off, end, err)
	}
	reserved := true
	defer func() {
		if reserved {
			s.reserved.Add(-need)
		}
	}()

	b.mu.Lock()
	if !b.lockRange(off, end) {
		b.mu.Unlock()
		return b.removedErr()
	}
	pieces := b.verified.missing(off, end, nil)
	b.mu.Unlock()

	var werr error
	for _, p := range pieces {
		if _, err := f.WriteAt(data[p.Off-off:p.End()-off], p.Off); err != nil {
			werr = fmt.Errorf("blobstore: write %s: %w", b.id, err)
			break
		}
	}

	var dv, dp int64
	b.mu.Lock()
	b.unlockRange(off, end)
	if werr == nil && b.removed {
		werr = b.removedErr()
	}
	if werr == nil {
		if verified {
			_, rp := b.pending.remove(off, end, nil)
			dv = b.verified.add(off, end, "")
			dp = -rp
			if dv > 0 {
				s.idx.push(&indexOp{kind: opAdd, b: b, ranges: []Range{{off, n}}})
				pushed = true
				b.notify()
			}
		} else {
			// Promote waits for the range lock, so the pieces are still not verified.
			for _, p := range pieces {
				dp += b.pending.add(p.Off, p.End(), origin)
			}
			if len(pieces) > 0 {
				b.changedLocked(off, end)
			}
		}
	}
	b.mu.Unlock()
	if werr != nil {
		return werr
	}
	s.verified.Add(dv)
	s.pending.Add(dp)
	s.reserved.Add(-need)
	reserved = false
	if s.overBudget() {
		s.evictOver()
	}
	return nil
}

// PendingGen is the generation of the blob's pending bytes: it moves whenever pending bytes are
// written or dropped. Take it before reading pending bytes to verify them, and give it to Promote.
func (b *Blob) PendingGen() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pgen
}

// Promote makes the pending bytes of [off, off+n) verified: the caller verified them (a chunk
// across them matched its digest, or the whole blob matched its id) after taking gen from
// PendingGen. It fails with ErrMissing, changing nothing, if any byte of the range is neither
// pending nor verified, and with ErrChanged if pending bytes of the range were written or dropped
// since gen (another sender's bytes may have replaced the ones verified: verify again).
func (b *Blob) Promote(off, n int64, gen uint64) error {
	if err := b.check(off, n); err != nil {
		return err
	}
	s := b.s
	if !s.enter() {
		return ErrClosed
	}
	defer s.leave()
	if err := s.idx.reserve(); err != nil {
		return err
	}
	end := off + n
	b.mu.Lock()
	// A pending write in progress must finish first, or it could land on bytes promoted meanwhile.
	if !b.lockRange(off, end) {
		b.mu.Unlock()
		s.idx.unreserve()
		return b.removedErr()
	}
	b.unlockRange(off, end)
	if b.changedSinceLocked(gen, off, end) {
		b.mu.Unlock()
		s.idx.unreserve()
		return fmt.Errorf("blob %s [%d,%d): %w", b.id, off, end, ErrChanged)
	}
	if !b.covered(off, end) {
		b.mu.Unlock()
		s.idx.unreserve()
		return b.missingErr(off, n)
	}
	moved, np := b.pending.remove(off, end, []span{})
	if np == 0 {
		b.mu.Unlock()
		s.idx.unreserve()
		return nil
	}
	rs := make([]Range, len(moved))
	for i, m := range moved {
		b.verified.add(m.off, m.end, "")
		rs[i] = Range{m.off, m.end - m.off}
	}
	s.idx.push(&indexOp{kind: opAdd, b: b, ranges: rs})
	b.notify()
	b.mu.Unlock()
	s.verified.Add(np)
	s.pending.Add(-np)
	return nil
}

// DropPending forgets the pending bytes inside [off, off+n) and punches them out of the file. It
// returns the distinct origins that had bytes there (to blame a peer whose bytes failed a check).
func (b *Blob) DropPending(off, n int64) []string {
	off, end := b.clip(off, n)
	if off >= end {
		return nil
	}
	s := b.s
	if !s.enter() {
		return nil
	}
	defer s.leave()
	b.mu.Lock()
	if !b.lockRange(off, end) {
		b.mu.Unlock()
		return nil
	}
	gone, np := b.pending.remove(off, end, []span{})
	if np > 0 {
		b.epoch++ // ReadAny callers must not take the punched zeros for data
		b.changedLocked(off, end)
	}
	b.mu.Unlock()
	s.pending.Add(-np)
	var origins []string
	if f := b.f.Load(); f != nil {
		// Adjacent spans of different origins are punched as one, or the block they share
		// would only be zeroed, not freed.
		for i := 0; i < len(gone); {
			j := i + 1
			for j < len(gone) && gone[j].off == gone[j-1].end {
				j++
			}
			if err := punch(f, gone[i].off, gone[j-1].end-gone[i].off); err != nil {
				s.log.Warn("punch dropped pending bytes", zap.String("blob", b.id), zap.Error(err))
			}
			i = j
		}
	}
	for _, g := range gone {
		seen := false
		for _, o := range origins {
			seen = seen || o == g.origin
		}
		if !seen {
			origins = append(origins, g.origin)
		}
	}
	b.mu.Lock()
	b.unlockRange(off, end)
	b.mu.Unlock()
	return origins
}

// punchLocked punches the bytes of [lo, hi) that are in neither set; the caller holds the range
// lock of [lo, hi), so no write lands there meanwhile.
func (b *Blob) punchLocked(lo, hi int64) {
	b.mu.Lock()
	var holes []Range
	for _, m := range b.verified.missing(lo, hi, nil) {
		holes = b.pending.missing(m.Off, m.End(), holes)
	}
	b.mu.Unlock()
	if f := b.f.Load(); f != nil {
		for _, h := range holes {
			if err := punch(f, h.Off, h.Len); err != nil {
				b.s.log.Warn("punch evicted bytes", zap.String("blob", b.id), zap.Error(err))
				break
			}
		}
	}
}

// Subscribe returns a channel that receives (without blocking, coalesced) whenever the blob's
// verified set grows, and the function that cancels the subscription.
func (b *Blob) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	b.mu.Lock()
	if b.subs == nil {
		b.subs = make(map[chan struct{}]struct{})
	}
	b.subs[ch] = struct{}{}
	b.mu.Unlock()
	return ch, func() {
		b.mu.Lock()
		delete(b.subs, ch)
		b.mu.Unlock()
	}
}

// notify wakes the subscribers; it needs b.mu.
func (b *Blob) notify() {
	for ch := range b.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// OpenRange streams the verified bytes [off, off+n) from the file, for serving a piece without
// holding it in memory. The range's segments are pinned against eviction until Close. It fails with
// ErrMissing if any byte is not verified; a Read fails with ErrMissing if bytes were removed since.
func (b *Blob) OpenRange(off, n int64) (io.ReadCloser, error) {
	if err := b.check(off, n); err != nil {
		return nil, err
	}
	s := b.s
	if !s.enter() {
		return nil, ErrClosed
	}
	defer s.leave()
	s.reads.Add(1)
	end := off + n
	if n > 0 {
		s.lru.pin(b, off, end)
	}
	b.mu.Lock()
	ok := !b.removed && b.verified.covers(off, end)
	b.mu.Unlock()
	if !ok {
		if n > 0 {
			s.lru.unpin(b, off, end)
		}
		s.misses.Add(1)
		return nil, b.missingErr(off, n)
	}
	s.hits.Add(1)
	return &rangeReader{b: b, off: off, pos: off, end: end}, nil
}

type rangeReader struct {
	b             *Blob
	off, pos, end int64
	closed        bool
}

func (r *rangeReader) Read(p []byte) (int, error) {
	if r.closed {
		return 0, os.ErrClosed
	}
	if r.pos >= r.end {
		return 0, io.EOF
	}
	n := min(int64(len(p)), r.end-r.pos)
	if err := r.b.read(p[:n], r.pos, false); err != nil {
		return 0, err
	}
	r.pos += n
	return int(n), nil
}

func (r *rangeReader) Close() error {
	if !r.closed {
		r.closed = true
		if r.end > r.off {
			r.b.s.lru.unpin(r.b, r.off, r.end)
		}
	}
	return nil
}
