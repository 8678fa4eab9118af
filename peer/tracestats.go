package peer

import (
	"sync"
	"sync/atomic"

	"github.com/dfnydus/dfnydus/rafs"
)

// TraceStatus says how much of a start trace the prefetch had fetched when the workload got there:
// of the trace's chunks, a first read that found the chunk already here is a hit, one that had to
// fetch it (the trace prefetch had not got it yet) a miss.
type TraceStatus struct {
	Name       string `json:"name,omitempty"`
	Chunks     int    `json:"chunks"`     // chunks the trace names
	Prefetched int    `json:"prefetched"` // of which the trace prefetch fetched (the rest were here or read first)
	Hits       int64  `json:"hits"`
	Misses     int64  `json:"misses"`
}

// traceReads classifies the first read of each trace chunk.
type traceReads struct {
	mu      sync.Mutex
	pending map[traceKey]struct{} // trace chunks not read yet
	hits    atomic.Int64
	misses  atomic.Int64
}

type traceKey struct {
	blob uint32
	off  uint64
}

// startTrace starts counting first reads of the given chunks.
func (im *Image) startTrace(chunks []rafs.Chunk) {
	tr := &traceReads{pending: make(map[traceKey]struct{}, len(chunks))}
	for _, c := range chunks {
		tr.pending[traceKey{c.BlobIndex, c.CompressedOffset}] = struct{}{}
	}
	im.trace.Store(tr)
}

// noteTraceRead counts c's first read as a hit or a miss when c is a trace chunk. It runs before
// the read, so "here" means the trace prefetch (or an earlier process) got it first.
func (im *Image) noteTraceRead(c *rafs.Chunk) {
	tr := im.trace.Load()
	if tr == nil {
		return
	}
	k := traceKey{c.BlobIndex, c.CompressedOffset}
	tr.mu.Lock()
	_, first := tr.pending[k]
	delete(tr.pending, k)
	tr.mu.Unlock()
	if !first || int(c.BlobIndex) >= len(im.blobs) || im.blobs[c.BlobIndex] == nil {
		return
	}
	if im.blobs[c.BlobIndex].sb.Verified(int64(c.CompressedOffset), int64(c.CompressedSize)) {
		tr.hits.Add(1)
	} else {
		tr.misses.Add(1)
	}
}

// withTraceCounts fills the counters into a copy of the prefetch status.
func (im *Image) withTraceCounts(p PrefetchStatus) PrefetchStatus {
	if p.Trace == nil {
		return p
	}
	t := *p.Trace
	if tr := im.trace.Load(); tr != nil {
		t.Hits, t.Misses = tr.hits.Load(), tr.misses.Load()
	}
	p.Trace = &t
	return p
}
