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
// Fetches decode into buffers from the cache's pool; a chunk's buffer goes back to the pool once
// the chunk has left the cache and the last read using its bytes let go (a hold). A read that
// never lets go (a reply the kernel interrupted) only keeps its buffer from being reused.
//
// A fetch runs in its own goroutine under the mount's context, not under the context of the read
// that started it: it lasts as long as at least one read waits for it. When the last waiting read
// is interrupted, the fetch is cancelled and forgotten. Failed fetches are not cached.
type chunkCache struct {
	base  context.Context // the mount's; cancelling it cancels every fetch
	limit int64
	pool  *bufPool // nil: no recycling

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
	refs    int                // holds on data, plus one while in lru
	pooled  bool               // data is a buffer of the pool, used by nobody else
}

// fetcher fetches a chunk, decoding into buf when it can (buf may be nil).
type fetcher func(ctx context.Context, buf []byte) ([]byte, error)

func newChunkCache(base context.Context, limit int64) *chunkCache {
	return &chunkCache{base: base, limit: limit, entries: map[chunkKey]*cacheEntry{}}
}

// hold is a read's use of a chunk's bytes; release ends it. The zero hold releases nothing.
type hold struct {
	c *chunkCache
	e *cacheEntry
}

func (h hold) release() {
	if h.e != nil {
		h.c.mu.Lock()
		h.c.unrefLocked(h.e)
		h.c.mu.Unlock()
	}
}

// unrefLocked drops one reference to e's bytes, recycling them with the last.
func (c *chunkCache) unrefLocked(e *cacheEntry) {
	e.refs--
	if e.refs == 0 && e.pooled {
		e.pooled = false
		c.pool.put(e.data)
		e.data = nil
	}
}

// evictLocked takes e out of the cache (it was in lru).
func (c *chunkCache) evictLocked(e *cacheEntry) {
	c.lru.Remove(e.elem)
	delete(c.entries, e.key)
	c.size -= int64(len(e.data))
	c.unrefLocked(e)
}

// claim is a read's interest in one chunk, from start until wait or release.
type claim struct {
	e      *cacheEntry
	cached bool // e was already fetched: no waiter was counted
}

// start returns a claim on the chunk named key: the cached bytes, or a fetch in flight (started
// now with fetch unless another read already started it). hit reports whether no new fetch was
// started. Every claim must end with wait or release.
func (c *chunkCache) start(key chunkKey, fetch fetcher) (cl claim, hit bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[key]
	if e != nil && e.elem != nil {
		c.lru.MoveToFront(e.elem)
		e.refs++ // the claim's, handed to its hold by wait
		return claim{e: e, cached: true}, true
	}
	hit = e != nil
	if e == nil {
		fctx, cancel := context.WithCancel(c.base)
		e = &cacheEntry{key: key, done: make(chan struct{}), cancel: cancel}
		c.entries[key] = e
		go c.load(fctx, e, fetch)
	}
	e.waiters++
	return claim{e: e}, hit
}

// wait returns the claimed chunk's bytes and a hold on them, or ctx's error if ctx ends first
// (then the claim is released). The returned slice is shared: callers must not modify it, and
// must not use it after releasing the hold.
func (c *chunkCache) wait(ctx context.Context, cl claim) ([]byte, hold, error) {
	e := cl.e
	if cl.cached {
		return e.data, hold{c, e}, nil
	}
	select {
	case <-e.done:
		return c.result(e)
	case <-ctx.Done():
	}
	if c.leave(e) {
		return c.result(e) // finished meanwhile: use it
	}
	return nil, hold{}, ctx.Err()
}

// result is a finished entry's outcome for one of its waiters, who was counted in its refs.
func (c *chunkCache) result(e *cacheEntry) ([]byte, hold, error) {
	if e.err != nil {
		return nil, hold{}, e.err
	}
	return e.data, hold{c, e}, nil
}

// release gives up a claim without waiting for it.
func (c *chunkCache) release(cl claim) {
	if cl.cached || c.leave(cl.e) {
		c.mu.Lock()
		if cl.e.err == nil {
			c.unrefLocked(cl.e)
		}
		c.mu.Unlock()
	}
}

// leave drops one waiter of e, cancelling and forgetting the fetch when it was the last. It
// reports whether e had already finished (the waiter then holds a reference if it succeeded).
func (c *chunkCache) leave(e *cacheEntry) (finished bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-e.done:
		return true
	default:
	}
	e.waiters--
	if e.waiters == 0 {
		e.cancel()
		if c.entries[e.key] == e {
			delete(c.entries, e.key)
		}
	}
	return false
}

// get is start then wait, for one chunk.
func (c *chunkCache) get(ctx context.Context, key chunkKey, fetch fetcher) (data []byte, h hold, hit bool, err error) {
	cl, hit := c.start(key, fetch)
	data, h, err = c.wait(ctx, cl)
	return data, h, hit, err
}

// load runs one fetch and publishes its result.
func (c *chunkCache) load(ctx context.Context, e *cacheEntry, fetch fetcher) {
	var buf []byte
	if c.pool != nil {
		buf = c.pool.get(int(e.key.size))
	}
	data, err := fetch(ctx, buf)
	pooled := err == nil && buf != nil && sameArray(data, buf)
	if buf != nil && !pooled {
		c.pool.put(buf)
	}
	e.cancel()
	c.mu.Lock()
	defer c.mu.Unlock()
	e.data, e.err, e.pooled = data, err, pooled
	e.refs = e.waiters // each waiter left holds one: wait or release ends it
	close(e.done)
	if c.entries[e.key] != e || err != nil { // abandoned by every reader, or failed
		if c.entries[e.key] == e {
			delete(c.entries, e.key)
		}
		if e.refs == 0 {
			e.refs = 1
			c.unrefLocked(e)
		}
		return
	}
	e.elem = c.lru.PushFront(e)
	e.refs++
	c.size += int64(len(data))
	for c.size > c.limit && c.lru.Len() > 1 {
		c.evictLocked(c.lru.Back().Value.(*cacheEntry))
	}
}

// drop forgets the fetched chunks among keys (a file nobody has open any more: its data is in
// the page cache now). Fetches in flight are left alone.
func (c *chunkCache) drop(keys func(yield func(chunkKey) bool)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lru.Len() == 0 {
		return
	}
	for k := range keys {
		if e := c.entries[k]; e != nil && e.elem != nil {
			c.evictLocked(e)
		}
	}
}

// stats returns the number of cached chunks and their bytes (for tests).
func (c *chunkCache) stats() (n int, bytes int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len(), c.size
}
