package peer

import (
	"container/list"
	"sync"

	"github.com/dfnydus/dfnydus/rafs"
)

// memKey names an uncompressed chunk by content: the same chunk in two blobs is one entry.
type memKey struct {
	alg    rafs.Digester
	digest rafs.Digest
}

// chunkLRU keeps the most recently read uncompressed chunks in memory, bounded in bytes, so the
// 128 KiB FUSE reads that walk through one 1 MiB chunk do not go to the store each time. Entries are
// shared read-only slices.
type chunkLRU struct {
	mu    sync.Mutex
	max   int64
	size  int64
	ll    *list.List
	items map[memKey]*list.Element
}

type lruEntry struct {
	key  memKey
	data []byte
}

func newChunkLRU(max int64) *chunkLRU {
	return &chunkLRU{max: max, ll: list.New(), items: map[memKey]*list.Element{}}
}

func (l *chunkLRU) get(k memKey) []byte {
	if l.max <= 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.items[k]; ok {
		l.ll.MoveToFront(e)
		return e.Value.(*lruEntry).data
	}
	return nil
}

func (l *chunkLRU) add(k memKey, data []byte) {
	if l.max <= 0 || int64(len(data)) > l.max {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.items[k]; ok {
		l.ll.MoveToFront(e)
		return
	}
	l.items[k] = l.ll.PushFront(&lruEntry{key: k, data: data})
	l.size += int64(len(data))
	for l.size > l.max {
		e := l.ll.Back()
		ent := e.Value.(*lruEntry)
		l.ll.Remove(e)
		delete(l.items, ent.key)
		l.size -= int64(len(ent.data))
	}
}
