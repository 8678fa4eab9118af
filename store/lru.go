package store

import "sync/atomic"

// entry is the in-memory state of one indexed chunk. All fields but verified are guarded by
// Store.mu.
type entry struct {
	key  Key
	size uint32
	disk int64  // bytes the file occupies on disk (st_blocks * 512)
	tick uint64 // logical time of the last Put or Get

	prev, next *entry // LRU list; front = most recently used

	dirty   bool // tick not yet flushed to the index
	removed bool // no longer in Store.entries
	seen    bool // Open found its file

	verified atomic.Bool // hashed in this process
}

// lruList is an intrusive doubly linked list of entries, most recently used first.
type lruList struct {
	front, back *entry
}

func (l *lruList) pushFront(e *entry) {
	e.prev, e.next = nil, l.front
	if l.front != nil {
		l.front.prev = e
	} else {
		l.back = e
	}
	l.front = e
}

func (l *lruList) remove(e *entry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		l.front = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		l.back = e.prev
	}
	e.prev, e.next = nil, nil
}

func (l *lruList) moveToFront(e *entry) {
	if l.front == e {
		return
	}
	l.remove(e)
	l.pushFront(e)
}
