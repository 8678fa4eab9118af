package fuse

import (
	"container/list"
	"context"
	"sync"

	"github.com/dfnydus/dfnydus/rafs"
)

// chunkKey names a chunk by where its bytes are and what they hash to, so files sharing a chunk
// (dedup) share its cache entry.
type chunkKey struct {
	blob   uint32
	offset uint64 // compressed offset in the blob
	size   uint32 // uncompressed
	digest rafs.Digest
}

// chunkCache keeps recently fetched chunks under a byte budget and lets concurrent reads of one
// chunk share a single fetch.
//
// A fetch runs in its own goroutine under the mount's context, not under the context of the read
// that started it: it lasts as long as at least one read waits for it. When the last waiting read
// is interrupted, the fetch is cancelled and forgotten. Failed fetches are not cached.
type chunkCache struct {
	base  context.Context // the mount's; cancelling it cancels every fetch
	limit int64

	mu      sync.Mutex
	entries map[chunkKey]*cacheEntry // fetched (in lru) or in flight
	lru     list.List                // of *cacheEntry, most recent first
	size    int64                    // bytes of the entries in lru
}

type cacheEntry struct {
	key     chunkKey
	done    chan struct{} // closed when data/err are set
	data    []byte
	err     error
	waiters int                // reads waiting while in flight
	cancel  context.CancelFunc // of the fetch
	elem    *list.Element      // set once cached
}

func newChunkCache(base context.Context, limit int64) *chunkCache {
	return &chunkCache{base: base, limit: limit, entries: map[chunkKey]*cacheEntry{}}
}

// get returns the bytes of the chunk named key, fetching them with fetch unless they are cached
// or already being fetched. hit reports whether no new fetch was started. The returned slice is
// shared: callers must not modify it.
func (c *chunkCache) get(ctx context.Context, key chunkKey, fetch func(context.Context) ([]byte, error)) (data []byte, hit bool, err error) {
	c.mu.Lock()
	e := c.entries[key]
	if e != nil && e.elem != nil {
		c.lru.MoveToFront(e.elem)
		c.mu.Unlock()
		return e.data, true, nil
	}
	hit = e != nil
	if e == nil {
		fctx, cancel := context.WithCancel(c.base)
		e = &cacheEntry{key: key, done: make(chan struct{}), cancel: cancel}
		c.entries[key] = e
		go c.load(fctx, e, fetch)
	}
	e.waiters++
	c.mu.Unlock()

	select {
	case <-e.done:
		return e.data, hit, e.err
	case <-ctx.Done():
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-e.done: // finished meanwhile: use it
		return e.data, hit, e.err
	default:
	}
	e.waiters--
	if e.waiters == 0 {
		e.cancel()
		if c.entries[key] == e {
			delete(c.entries, key)
		}
	}
	return nil, hit, ctx.Err()
}

// load runs one fetch and publishes its result.
func (c *chunkCache) load(ctx context.Context, e *cacheEntry, fetch func(context.Context) ([]byte, error)) {
	data, err := fetch(ctx)
	e.cancel()
	c.mu.Lock()
	defer c.mu.Unlock()
	e.data, e.err = data, err
	close(e.done)
	if c.entries[e.key] != e { // abandoned by every reader
		return
	}
	if err != nil {
		delete(c.entries, e.key)
		return
	}
	e.elem = c.lru.PushFront(e)
	c.size += int64(len(data))
	for c.size > c.limit && c.lru.Len() > 1 {
		old := c.lru.Remove(c.lru.Back()).(*cacheEntry)
		delete(c.entries, old.key)
		c.size -= int64(len(old.data))
	}
}

// stats returns the number of cached chunks and their bytes (for tests).
func (c *chunkCache) stats() (n int, bytes int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len(), c.size
}
