package store

import (
	"encoding/binary"
	"fmt"
	"sync"

	bolt "go.etcd.io/bbolt"
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
// access time of entries that still exist (a touch never brings back an evicted entry).
type indexOp struct {
	puts    []record
	touches []record
	dels    []Key
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

// maxGroup bounds how many ops share one transaction.
const maxGroup = 256

// committer group-commits index ops: one goroutine takes an op, adds every op already waiting, and
// commits them in one bbolt transaction. A lone op is committed at once (no batching delay);
// under load, ops queue while the previous transaction syncs and share the next one.
type committer struct {
	db   *bolt.DB
	ops  chan *indexOp // unbuffered: a sent op is always received and answered
	quit chan struct{}
	wg   sync.WaitGroup
}

func newCommitter(db *bolt.DB) *committer {
	c := &committer{db: db, ops: make(chan *indexOp), quit: make(chan struct{})}
	c.wg.Add(1)
	go c.run()
	return c
}

// do commits op and returns the transaction's error, or ErrClosed after stop.
func (c *committer) do(op *indexOp) error {
	op.done = make(chan error, 1)
	select {
	case c.ops <- op:
		return <-op.done
	case <-c.quit:
		return ErrClosed
	}
}

func (c *committer) run() {
	defer c.wg.Done()
	group := make([]*indexOp, 0, maxGroup)
	for {
		select {
		case op := <-c.ops:
			group = append(group[:0], op)
		drain:
			for len(group) < maxGroup {
				select {
				case op := <-c.ops:
					group = append(group, op)
				default:
					break drain
				}
			}
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
			}
			for _, op := range group {
				op.done <- err
			}
			clear(group)
		case <-c.quit:
			return
		}
	}
}

// stop ends the goroutine; later do calls return ErrClosed.
func (c *committer) stop() {
	close(c.quit)
	c.wg.Wait()
}
