package store

import "sync"

// keyLocks serializes the operations that change one key's file and index entry (Put of a new
// chunk, repair, eviction) without serializing different keys. Reads never take it.
type keyLocks struct {
	mu sync.Mutex
	m  map[Key]*keyLock
}

type keyLock struct {
	mu   sync.Mutex
	refs int
}

// lock locks k and returns its unlock function.
func (kl *keyLocks) lock(k Key) (unlock func()) {
	kl.mu.Lock()
	if kl.m == nil {
		kl.m = make(map[Key]*keyLock)
	}
	l := kl.m[k]
	if l == nil {
		l = &keyLock{}
		kl.m[k] = l
	}
	l.refs++
	kl.mu.Unlock()

	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		kl.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(kl.m, k)
		}
		kl.mu.Unlock()
	}
}
