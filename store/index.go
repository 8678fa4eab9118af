package store

import (
	"encoding/binary"
	"fmt"
	"sync"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/zap"
)

// bbolt layout.
var (
	bucketChunks = []byte("chunks")
	bucketMeta   = []byte("meta")
	metaFormat   = []byte("format")
)

// formatVersion is written to the meta bucket; Open refuses an index of another version.
const formatVersion = 1

// record is one index entry: a chunk's size and the logical time of its last access.
type record struct {
	key  Key
	size uint32
	tick uint64
}

const valueLen = 4 + 8

func (r record) value() []byte {
	b := make([]byte, valueLen)
	binary.LittleEndian.PutUint32(b, r.size)
	binary.LittleEndian.PutUint64(b[4:], r.tick)
	return b
}

func decodeRecord(k, v []byte) (record, error) {
	key, err := keyFromIndex(k)
	if err != nil {
		return record{}, err
	}
	if len(v) != valueLen {
		return record{}, fmt.Errorf("index value of %d bytes, want %d", len(v), valueLen)
	}
	return record{key: key, size: binary.LittleEndian.Uint32(v), tick: binary.LittleEndian.Uint64(v[4:])}, nil
}

// indexOp is one unit of index work. Puts add entries, dels remove them, and touches update the
// access time of entries that still exist (a touch never brings back an evicted entry). After the
// transaction that carried it, after (if set) runs with the transaction's error, then done (if set)
// receives it.
type indexOp struct {
	puts    []record
	touches []record
	dels    []Key
	after   func(error)
	done    chan error
}

func (op *indexOp) apply(b *bolt.Bucket) error {
	for _, r := range op.puts {
		if err := b.Put(r.key.indexKey(), r.value()); err != nil {
			return fmt.Errorf("index %s: %w", r.key, err)
		}
	}
	for _, r := range op.touches {
		k := r.key.indexKey()
		if b.Get(k) == nil {
			continue
		}
		if err := b.Put(k, r.value()); err != nil {
			return fmt.Errorf("touch %s: %w", r.key, err)
		}
	}
	for _, k := range op.dels {
		if err := b.Delete(k.indexKey()); err != nil {
			return fmt.Errorf("unindex %s: %w", k, err)
		}
	}
	return nil
}

// maxQueue bounds the ops waiting for a transaction; submitters wait while it is full.
const maxQueue = 4096

// committer applies index ops in the order they were submitted, group-committing: one goroutine
// takes every op queued so far and commits them in one bbolt transaction (one fsync of the index),
// while new ops queue for the next one. A lone op is committed at once; there is no batching delay.
type committer struct {
	db  *bolt.DB
	log *zap.Logger

	mu      sync.Mutex
	more    *sync.Cond // queue not empty, or stopping
	room    *sync.Cond // queue below maxQueue
	queue   []*indexOp
	stopped bool
	exited  chan struct{}
}

func newCommitter(db *bolt.DB, log *zap.Logger) *committer {
	c := &committer{db: db, log: log, exited: make(chan struct{})}
	c.more = sync.NewCond(&c.mu)
	c.room = sync.NewCond(&c.mu)
	go c.run()
	return c
}

// submit queues op without waiting for its transaction. Ops run in submission order.
func (c *committer) submit(op *indexOp) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.queue) >= maxQueue && !c.stopped {
		c.room.Wait()
	}
	if c.stopped {
		return ErrClosed
	}
	c.queue = append(c.queue, op)
	c.more.Signal()
	return nil
}

// do queues op and waits for its transaction's result.
func (c *committer) do(op *indexOp) error {
	op.done = make(chan error, 1)
	if err := c.submit(op); err != nil {
		return err
	}
	return <-op.done
}

// flush waits until every op submitted before it has been committed and its after has run.
func (c *committer) flush() error { return c.do(&indexOp{}) }

func (c *committer) run() {
	defer close(c.exited)
	var spare []*indexOp
	for {
		c.mu.Lock()
		for len(c.queue) == 0 && !c.stopped {
			c.more.Wait()
		}
		if len(c.queue) == 0 {
			c.mu.Unlock()
			return
		}
		group := c.queue
		c.queue = spare[:0]
		c.room.Broadcast()
		c.mu.Unlock()

		err := c.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketChunks)
			for _, op := range group {
				if err := op.apply(b); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			err = fmt.Errorf("store index: %w", err)
			c.log.Error("index transaction failed", zap.Int("ops", len(group)), zap.Error(err))
		}
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

// stop commits what is queued and ends the goroutine; later submits return ErrClosed.
func (c *committer) stop() {
	c.mu.Lock()
	c.stopped = true
	c.more.Signal()
	c.room.Broadcast()
	c.mu.Unlock()
	<-c.exited
}
