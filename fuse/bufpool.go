package fuse

import (
	"math/bits"
	"sync"

	"github.com/dfnydus/dfnydus/rafs/compress"
)

// bufPool recycles the buffers chunks are decoded into. A fresh 1 MiB buffer per chunk costs
// more than the decode itself on a warm read: the memory comes back from the OS page by page
// (a page fault per 4 KiB, inside the decoder's first write), and the decode into reused memory
// measured ~1.9x less CPU. Buffers come in power-of-two classes from poolMin up; smaller chunks
// are cheap to allocate and are not pooled.
type bufPool struct {
	classes [poolClasses]sync.Pool
}

const (
	poolMinShift = 16 // 64 KiB
	poolClasses  = 9  // up to 16 MiB, rafs.MaxChunkSize
)

// class is the pool class whose buffers hold chunks of n bytes, or -1 when n is not pooled. A
// class's buffers have the decoder's slack on top of its power of two, so 1 MiB chunks take
// 1 MiB + 64 bytes, not 2 MiB.
func class(n int) int {
	if n <= 1<<(poolMinShift-1) {
		return -1
	}
	c := bits.Len(uint(n-1)) - poolMinShift
	if c >= poolClasses {
		return -1
	}
	return max(c, 0)
}

func classCap(c int) int { return 1<<(c+poolMinShift) + compress.DecodeSlack }

// get returns an empty buffer for decoding a chunk of size bytes, or nil when chunks that small
// are not pooled.
func (p *bufPool) get(size int) []byte {
	c := class(size)
	if c < 0 {
		return nil
	}
	if b, ok := p.classes[c].Get().(*[]byte); ok {
		return (*b)[:0]
	}
	return make([]byte, 0, classCap(c))
}

// put gives back a buffer from get; nobody may use it afterwards.
func (p *bufPool) put(b []byte) {
	c := class(cap(b) - compress.DecodeSlack)
	if c < 0 || cap(b) != classCap(c) {
		return
	}
	b = b[:0]
	p.classes[c].Put(&b)
}

// sameArray reports whether a and b start at the same byte of memory (a was decoded into b).
func sameArray(a, b []byte) bool {
	return cap(a) > 0 && cap(b) > 0 && &a[:1][0] == &b[:1][0]
}
