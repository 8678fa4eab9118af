package blobstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"go.uber.org/zap"
)

// bbolt layout: meta {format: 2}; blobs {id: size u64 BE}; ranges {id: {start u64 BE: end u64 BE}}.
var (
	bucketMeta   = []byte("meta")
	bucketBlobs  = []byte("blobs")
	bucketRanges = []byte("ranges")
	keyFormat    = []byte("format")
)

const formatVersion = 2

func u64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

// decodeSize decodes a blobs-bucket value.
func decodeSize(v []byte) (int64, error) {
	if len(v) != 8 {
		return 0, fmt.Errorf("blob size of %d bytes, want 8", len(v))
	}
	n := binary.BigEndian.Uint64(v)
	if n == 0 || n > MaxBlobSize {
		return 0, fmt.Errorf("blob size %d out of range", n)
	}
	return int64(n), nil
}

// decodeRange decodes one ranges-bucket record of a blob of size bytes.
func decodeRange(k, v []byte, size int64) (off, end int64, err error) {
	if len(k) != 8 || len(v) != 8 {
		return 0, 0, fmt.Errorf("range record of %d+%d bytes, want 8+8", len(k), len(v))
	}
	s, e := binary.BigEndian.Uint64(k), binary.BigEndian.Uint64(v)
	if s >= e || e > uint64(size) {
		return 0, 0, fmt.Errorf("range [%d,%d) invalid for a blob of %d bytes", s, e, size)
	}
	return int64(s), int64(e), nil
}

// decodeRanges builds a verified set from a blob's records in key order; next returns nil at the
// end. Records must be sorted and disjoint: anything else means the index is damaged.
func decodeRanges(size int64, next func() (k, v []byte)) (spanSet, error) {
	var ss spanSet
	last := int64(-1)
	for k, v := next(); k != nil; k, v = next() {
		off, end, err := decodeRange(k, v, size)
		if err != nil {
			return spanSet{}, err
		}
		if off < last {
			return spanSet{}, fmt.Errorf("range [%d,%d) overlaps the previous one", off, end)
		}
		last = end
		ss.add(off, end, "")
	}
	return ss, nil
}

type opKind uint8

const (
	opFlush    opKind = iota // nothing; its done reports when everything before it committed
	opPutBlob                // the blob's file exists with its size
	opDropBlob               // forget the blob and its ranges
	opAdd                    // ranges became verified (their bytes are written, not yet synced)
	opDel                    // ranges stopped being verified (their bytes are not punched yet)
)

// indexOp is one queued index change. After the transaction that carried it, after (if set) runs
// with the transaction's error, then done (if set) receives it.
type indexOp struct {
	kind   opKind
	b      *Blob
	ranges []Range
	after  func(error)
	done   chan error
}

// maxQueue bounds the queued ops; writers wait for room only when the index falls this far behind.
const maxQueue = 1 << 16

// committer is the one goroutine that writes the index. It takes every op queued so far,
// fdatasyncs each blob file those ops name as verified (so that the index never names bytes that
// are not durable), and applies them all in one bbolt transaction. Callers queue and go on; only
// Flush, Close and Remove wait for a commit.
//
// Queue slots are reserved before the caller takes a blob's mutex and used under it, so that ops
// are queued in the same order as the in-memory changes they describe, and no one waits for room
// while holding a blob mutex.
type committer struct {
	s   *Store
	log *zap.Logger

	mu      sync.Mutex
	more    *sync.Cond // queue not empty, or stopping
	room    *sync.Cond // a slot is free
	queue   []*indexOp
	slots   int // queued plus reserved
	stopped bool
	urgent  bool          // a queued op has a waiter: commit without lingering
	kick    chan struct{} // ends a linger early (urgent, stopping)
	exited  chan struct{}
}

// commitLinger is how long the committer lets changes gather after the first one before it syncs
// and commits them. A container start verifies a chunk every few milliseconds; committing each
// on its own cost an fdatasync plus a bbolt transaction (two more) per chunk: a fifth of a
// starting peer's CPU, and with 64 peers on one machine, hundreds of fsyncs a second. The price: a
// crash loses at most this much of the index (those bytes are fetched again).
const commitLinger = time.Second

func newCommitter(s *Store) *committer {
	c := &committer{s: s, log: s.log, exited: make(chan struct{}), kick: make(chan struct{}, 1)}
	c.more = sync.NewCond(&c.mu)
	c.room = sync.NewCond(&c.mu)
	go c.run()
	return c
}

// reserve takes a queue slot, waiting while the queue is full.
func (c *committer) reserve() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.slots >= maxQueue && !c.stopped {
		c.room.Wait()
	}
	if c.stopped {
		return ErrClosed
	}
	c.slots++
	return nil
}

// unreserve gives back a slot that was not used.
func (c *committer) unreserve() {
	c.mu.Lock()
	c.slots--
	c.room.Signal()
	c.more.Signal() // a stopping run may be waiting for this slot
	c.mu.Unlock()
}

// push queues op in a reserved slot; it never waits.
func (c *committer) push(op *indexOp) {
	c.mu.Lock()
	c.queue = append(c.queue, op)
	// Someone waits for the commit, or disk space does (an eviction punches its bytes only after
	// the index forgot them): no lingering.
	if op.done != nil || op.after != nil || len(c.queue) >= maxQueue/2 {
		c.urgent = true
		c.wake()
	}
	c.more.Signal()
	c.mu.Unlock()
}

// wake ends a linger in progress (or the next one) early.
func (c *committer) wake() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// do queues op and waits for its transaction.
func (c *committer) do(op *indexOp) error {
	op.done = make(chan error, 1)
	if err := c.reserve(); err != nil {
		return err
	}
	c.push(op)
	return <-op.done
}

func (c *committer) flush() error { return c.do(&indexOp{kind: opFlush}) }

func (c *committer) run() {
	defer close(c.exited)
	var spare []*indexOp
	for {
		c.mu.Lock()
		for len(c.queue) == 0 && !c.stopped {
			c.more.Wait()
		}
		if len(c.queue) == 0 && c.slots == 0 {
			c.mu.Unlock()
			return
		}
		if len(c.queue) == 0 {
			// Stopping with slots still reserved: Close waited for the operations, so only
			// background evictions can hold them, and they push soon.
			c.more.Wait()
			c.mu.Unlock()
			continue
		}
		if !c.stopped && !c.urgent && len(c.queue) < maxQueue/2 {
			c.mu.Unlock()
			t := time.NewTimer(commitLinger)
			select {
			case <-t.C:
			case <-c.kick:
			}
			t.Stop()
			c.mu.Lock()
		}
		c.urgent = false
		group := c.queue
		c.queue = spare[:0]
		c.slots -= len(group)
		c.room.Broadcast()
		c.mu.Unlock()

		err := c.commit(group)
		for _, op := range group {
			if op.after != nil {
				op.after(err)
			}
			if op.done != nil {
				op.done <- err
			}
		}
		clear(group)
		spare = group
	}
}

// commit syncs the files whose new ranges the group names, then applies the group in one
// transaction. A blob whose file fails to sync has its additions left out: they stay verified in
// memory for this run but are never indexed.
func (c *committer) commit(group []*indexOp) error {
	var failed map[*Blob]bool
	if c.s.opts.Sync {
		synced := make(map[*Blob]bool)
		for _, op := range group {
			if op.kind != opAdd || synced[op.b] {
				continue
			}
			synced[op.b] = true
			if f := op.b.f.Load(); f != nil {
				if err := fdatasync(f); err != nil {
					c.log.Error("fdatasync blob file; its new ranges are not indexed", zap.String("blob", op.b.id), zap.Error(err))
					if failed == nil {
						failed = make(map[*Blob]bool)
					}
					failed[op.b] = true
				}
			}
		}
	}
	err := c.s.db.Update(func(tx *bolt.Tx) error {
		blobs, ranges := tx.Bucket(bucketBlobs), tx.Bucket(bucketRanges)
		for _, op := range group {
			if failed[op.b] && op.kind == opAdd {
				continue
			}
			if err := applyOp(blobs, ranges, op); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		err = fmt.Errorf("blobstore index: %w", err)
		c.log.Error("index transaction failed", zap.Int("ops", len(group)), zap.Error(err))
	}
	return err
}

func applyOp(blobs, ranges *bolt.Bucket, op *indexOp) error {
	switch op.kind {
	case opPutBlob:
		if err := blobs.Put([]byte(op.b.id), u64(uint64(op.b.size))); err != nil {
			return err
		}
		if err := ranges.DeleteBucket([]byte(op.b.id)); err != nil && !errors.Is(err, bolterrors.ErrBucketNotFound) {
			return err
		}
		_, err := ranges.CreateBucket([]byte(op.b.id))
		return err
	case opDropBlob:
		if err := blobs.Delete([]byte(op.b.id)); err != nil {
			return err
		}
		if err := ranges.DeleteBucket([]byte(op.b.id)); err != nil && !errors.Is(err, bolterrors.ErrBucketNotFound) {
			return err
		}
	case opAdd, opDel:
		rb := ranges.Bucket([]byte(op.b.id))
		if rb == nil {
			return nil // the blob was dropped by an earlier op of this group
		}
		for _, r := range op.ranges {
			var err error
			if op.kind == opAdd {
				err = indexAdd(rb, r.Off, r.End())
			} else {
				err = indexDel(rb, r.Off, r.End())
			}
			if err != nil {
				return fmt.Errorf("blob %s: %w", op.b.id, err)
			}
		}
	}
	return nil
}

// record is a decoded ranges-bucket entry.
type record struct{ off, end int64 }

// around returns the records that overlap or touch [off, end) (touching counts when touch is set),
// in order. It costs a seek plus the records returned, not the blob's whole range count.
func around(rb *bolt.Bucket, off, end int64, touch bool) []record {
	var out []record
	c := rb.Cursor()
	k, v := c.Seek(u64(uint64(off)))
	var pk, pv []byte
	if k == nil {
		pk, pv = c.Last()
	} else {
		pk, pv = c.Prev()
	}
	if pk != nil && len(pk) == 8 && len(pv) == 8 {
		pe := int64(binary.BigEndian.Uint64(pv))
		if pe > off || (touch && pe == off) {
			out = append(out, record{int64(binary.BigEndian.Uint64(pk)), pe})
		}
	}
	for k, v = c.Seek(u64(uint64(off))); k != nil; k, v = c.Next() {
		if len(k) != 8 || len(v) != 8 {
			continue
		}
		s := int64(binary.BigEndian.Uint64(k))
		if s > end || (!touch && s == end) {
			break
		}
		out = append(out, record{s, int64(binary.BigEndian.Uint64(v))})
	}
	return out
}

// indexAdd merges [off, end) into a blob's records: the records it overlaps or touches are deleted
// and the merged one is put.
func indexAdd(rb *bolt.Bucket, off, end int64) error {
	for _, r := range around(rb, off, end, true) {
		off, end = min(off, r.off), max(end, r.end)
		if err := rb.Delete(u64(uint64(r.off))); err != nil {
			return err
		}
	}
	return rb.Put(u64(uint64(off)), u64(uint64(end)))
}

// indexDel takes [off, end) out of a blob's records, keeping the parts of cut records outside it.
func indexDel(rb *bolt.Bucket, off, end int64) error {
	for _, r := range around(rb, off, end, false) {
		if err := rb.Delete(u64(uint64(r.off))); err != nil {
			return err
		}
		if r.off < off {
			if err := rb.Put(u64(uint64(r.off)), u64(uint64(off))); err != nil {
				return err
			}
		}
		if r.end > end {
			if err := rb.Put(u64(uint64(end)), u64(uint64(r.end))); err != nil {
				return err
			}
		}
	}
	return nil
}

// stop commits what is queued and ends the goroutine; later reserves return ErrClosed.
func (c *committer) stop() {
	c.mu.Lock()
	c.stopped = true
	c.wake()
	c.more.Broadcast()
	c.room.Broadcast()
	c.mu.Unlock()
	<-c.exited
}
