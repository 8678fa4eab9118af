package blobstore

import "sync"

// Eviction works on segments of segSize bytes of a blob (blob offset >> segShift): fine enough
// to keep the hot parts of a large blob, coarse enough that the LRU costs about 100 bytes of
// memory per MiB stored.
const (
	segShift = 20
	segSize  = 1 << segShift
)

type segKey struct {
	b   *Blob
	idx int64
}

type segment struct {
	key        segKey
	prev, next *segment
	pins       int32
}

// lru orders the segments holding bytes by last access. It lives in memory only: after a restart
// every segment starts equally old, in the order Open found them.
type lru struct {
	mu   sync.Mutex
	m    map[segKey]*segment
	root segment // root.next is the least recently used, root.prev the most
}

func newLRU() *lru {
	l := &lru{m: make(map[segKey]*segment)}
	l.root.next, l.root.prev = &l.root, &l.root
	return l
}

func (l *lru) unlink(s *segment) {
	s.prev.next = s.next
	s.next.prev = s.prev
}

func (l *lru) pushBack(s *segment) {
	s.prev = l.root.prev
	s.next = &l.root
	l.root.prev.next = s
	l.root.prev = s
}

// each calls fn with the segment of every segment index of [off, end), created if needed and made
// the most recently used; it needs l.mu.
func (l *lru) each(b *Blob, off, end int64, fn func(*segment)) {
	for i := off >> segShift; i <= (end-1)>>segShift; i++ {
		k := segKey{b, i}
		s := l.m[k]
		if s == nil {
			s = &segment{key: k}
			l.m[k] = s
		} else {
			l.unlink(s)
		}
		l.pushBack(s)
		if fn != nil {
			fn(s)
		}
	}
}

// touch records an access to [off, end) of b.
func (l *lru) touch(b *Blob, off, end int64) {
	l.mu.Lock()
	l.each(b, off, end, nil)
	l.mu.Unlock()
}

// pin keeps the segments of [off, end) from being eviction victims until unpin.
func (l *lru) pin(b *Blob, off, end int64) {
	l.mu.Lock()
	l.each(b, off, end, func(s *segment) { s.pins++ })
	l.mu.Unlock()
}

// unpin undoes pin, counting as an access. Segments removed meanwhile (their blob was removed) are
// not brought back.
func (l *lru) unpin(b *Blob, off, end int64) {
	l.mu.Lock()
	for i := off >> segShift; i <= (end-1)>>segShift; i++ {
		if s := l.m[segKey{b, i}]; s != nil {
			s.pins--
			l.unlink(s)
			l.pushBack(s)
		}
	}
	l.mu.Unlock()
}

// victim removes and returns the least recently used unpinned segment. Pinned segments it passes
// are moved to the back: they are in use.
func (l *lru) victim() (segKey, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for range len(l.m) {
		s := l.root.next
		if s == &l.root {
			break
		}
		l.unlink(s)
		if s.pins > 0 {
			l.pushBack(s)
			continue
		}
		delete(l.m, s.key)
		return s.key, true
	}
	return segKey{}, false
}

// removeBlob forgets every segment of b.
func (l *lru) removeBlob(b *Blob) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for s := l.root.next; s != &l.root; {
		next := s.next
		if s.key.b == b {
			l.unlink(s)
			delete(l.m, s.key)
		}
		s = next
	}
}

func (l *lru) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}
