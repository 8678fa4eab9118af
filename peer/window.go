package peer

import (
	"sync"
	"time"
)

// readWindow decides how far past the chunk a reader asked for an on-demand fetch reaches (the
// missing chunks after it, in one request). A window saves round trips when what it brings is read
// next (a tree read file by file) and wastes the link when it is not (a container start reading 5%
// of the files: with a 1 MiB window, 20x the bytes it needs). So it adapts, per blob, like the
// kernel's readahead but on bytes: it stays at the configured size while at least half of what
// windows brought was read on demand since, and otherwise shrinks to the share that was read, but
// never below what the link carries in two round trips (a request that small costs about as much
// as the round trip it may save; on a fast link that is the whole configured window).
type readWindow struct {
	mu      sync.Mutex
	spec    map[uint64]int64 // chunks a window brought and no reader asked for yet: offset -> size
	fetched float64          // bytes windows brought (decayed)
	used    float64          // of those, bytes readers asked for since (decayed)
	rtt     time.Duration    // time to the first byte of a range request (moving average)
	rate    float64          // bytes/s of range bodies of at least rateSampleMin bytes (moving average)
}

const (
	// windowHistory is how many window bytes the usage ratio remembers (older ones decay).
	windowHistory = 16 << 20
	// rateSampleMin is the smallest body that says something about the link's rate.
	rateSampleMin = 128 << 10
	// windowUseful is the share of window bytes read that keeps the window at its full size.
	windowUseful = 0.5
)

// size returns the window for the next on-demand fetch, at most limit.
func (w *readWindow) size(limit int64) int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if limit <= 0 || w.fetched < float64(2*limit) {
		return limit // too little history: trust the configuration
	}
	use := w.used / w.fetched
	if use >= windowUseful {
		return limit
	}
	n := int64(use / windowUseful * float64(limit))
	if w.rate > 0 {
		n = max(n, int64(2*w.rate*w.rtt.Seconds()))
	}
	return min(n, limit)
}

// brought records chunks a window fetch carried past the one asked for.
func (w *readWindow) brought(off uint64, size int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.spec == nil {
		w.spec = map[uint64]int64{}
	}
	if _, ok := w.spec[off]; ok {
		return
	}
	w.spec[off] = size
	w.fetched += float64(size)
	if w.fetched > windowHistory {
		w.fetched /= 2
		w.used /= 2
	}
}

// asked records that a reader asked for the chunk at off (from memory, the store or a flight).
func (w *readWindow) asked(off uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if size, ok := w.spec[off]; ok {
		delete(w.spec, off)
		w.used += float64(size)
	}
}

// ObserveFetch tells the blob how a range request to its source went (time to the first byte; n
// body bytes received in netTime of waiting on the network), for sizing its read window.
func (b *Blob) ObserveFetch(ttfb time.Duration, n int64, netTime time.Duration) {
	b.win.observe(ttfb, n, netTime)
}

// observe records one range request: ttfb until the response started, body bytes n received in
// netTime of waiting on the network.
func (w *readWindow) observe(ttfb time.Duration, n int64, netTime time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	const alpha = 0.25
	if w.rtt == 0 {
		w.rtt = ttfb
	} else {
		w.rtt = time.Duration((1-alpha)*float64(w.rtt) + alpha*float64(ttfb))
	}
	if n >= rateSampleMin && netTime > 0 {
		r := float64(n) / netTime.Seconds()
		if w.rate == 0 {
			w.rate = r
		} else {
			w.rate = (1-alpha)*w.rate + alpha*r
		}
	}
}
