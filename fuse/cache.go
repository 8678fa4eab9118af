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

// claim is a read's interest in one chunk, from start until wait or release.
type claim struct {
	e      *cacheEntry
	cached bool // e was already fetched: no waiter was counted
}

// start returns a claim on the chunk named key: the cached bytes, or a fetch in flight (started
// now with fetch unless another read already started it). hit reports whether no new fetch was
// started. Every claim must end with wait or release.
func (c *chunkCache) start(key chunkKey, fetch func(context.Context) ([]byte, error)) (cl claim, hit bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[key]
	if e != nil && e.elem != nil {
		c.lru.MoveToFront(e.elem)
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

// wait returns the claimed chunk's bytes, or ctx's error if ctx ends first (then the claim is
// released). The returned slice is shared: callers must not modify it.
func (c *chunkCache) wait(ctx context.Context, cl claim) ([]byte, error) {
	e := cl.e
	if cl.cached {
		return e.data, nil
	}
	select {
	case <-e.done:
		return e.data, e.err
	case <-ctx.Done():
	}
	if c.leave(e) {
		return e.data, e.err // finished meanwhile: use it
	}
	return nil, ctx.Err()
}

// release gives up a claim without waiting for it.
func (c *chunkCache) release(cl claim) {
	if !cl.cached {
		c.leave(cl.e)
	}
}

// leave drops one waiter of e, cancelling and forgetting the fetch when it was the last. It
// reports whether e had already finished.
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
func (c *chunkCache) get(ctx context.Context, key chunkKey, fetch func(context.Context) ([]byte, error)) (data []byte, hit bool, err error) {
	cl, hit := c.start(key, fetch)
	data, err = c.wait(ctx, cl)
	return data, hit, err
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
			c.lru.Remove(e.elem)
			delete(c.entries, k)
			c.size -= int64(len(e.data))
		}
	}
}

// stats returns the number of cached chunks and their bytes (for tests).
func (c *chunkCache) stats() (n int, bytes int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len(), c.size
}
