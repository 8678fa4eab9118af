package peer

import (
	"sync"
	"time"
)

// readWindow decides how far past the chunk a reader asked for an on-demand fetch reaches (the
// missing chunks after it, in one request). A window saves round trips when what it brings is read
// next (a tree read file by file) and wastes the link when it is not (a container start reading a
// few percent of the files: measured over 100 Mbit/s, a 1 MiB window fetched 5x the bytes of the
// chunk alone and made the start 1.5x slower). So it is sized, per blob, by what a round trip
// costs: once the link has been measured, the window is what the link carries in one round trip
// (bytes that cost more link time than the round trip they may save are not worth asking for
// before anyone reads them), and it grows to the configured size while at least half of what
// windows brought was read on demand since (the kernel's readahead does the same on pages).
// Before the link is measured it is just large enough for its body to measure the link's rate. The round trip is the lowest of the recent times to first byte: a busy link queues
// requests, and sizing windows on queueing delay would make them larger the more they queue.
type readWindow struct {
	mu      sync.Mutex
	spec    map[uint64]int64          // chunks a window brought and no reader asked for yet: offset -> size
	marks   map[uint64]int64          // a chunk in a window's second half -> that window's end (see mark)
	fetched float64                   // bytes windows brought (decayed)
	used    float64                   // of those, bytes readers asked for since (decayed)
	rtts    [rttSamples]time.Duration // recent times to the first byte of range requests
	nrtt    int                       // samples taken (the ring's next slot is nrtt % rttSamples)
	rate    float64                   // bytes/s of range bodies of at least rateSampleMin bytes (moving average)
}

// rttSamples is how many recent times to first byte the round-trip estimate takes the lowest of.
const rttSamples = 8

// rtt is the lowest recent time to first byte (0: none measured).
func (w *readWindow) rtt() time.Duration {
	var low time.Duration
	for i := range min(w.nrtt, rttSamples) {
		if low == 0 || w.rtts[i] < low {
			low = w.rtts[i]
		}
	}
	return low
}

const (
	// windowHistory is how many window bytes the usage ratio remembers (older ones decay).
	windowHistory = 16 << 20
	// windowHistoryMin is how many window bytes the usage ratio needs before it says anything.
	windowHistoryMin = 512 << 10
	// rateSampleMin is the smallest body that says something about the link's rate.
	rateSampleMin = 128 << 10
	// windowUseful is the share of window bytes read that keeps the window at its full size.
	windowUseful = 0.5
)

// size returns the window for the next on-demand fetch, at most limit.
func (w *readWindow) size(limit int64) int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if limit <= 0 {
		return limit
	}
	var trips int64 // what the link carries in two round trips; 0 until measured
	if rtt := w.rtt(); w.rate > 0 && rtt > 0 {
		trips = int64(w.rate * rtt.Seconds())
	}
	if w.fetched < float64(windowHistoryMin) {
		if trips == 0 {
			// The link is not measured yet: a window just large enough for its body to measure
			// the link's rate.
			return min(2*rateSampleMin, limit)
		}
		return min(trips, limit)
	}
	use := w.used / w.fetched
	if use >= windowUseful {
		return limit
	}
	n := int64(use / windowUseful * float64(limit))
	return min(max(n, trips), limit)
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

// mark makes the chunk at off the readahead mark of the window that ends at end: a reader that
// reaches it while windows are being read through starts the next window before it needs it
// (asked says so). Without it a reader that streams through a blob leaves the link idle between
// windows: from the moment a window's last byte arrives until the reader misses again and the
// next request's first byte comes back.
// The kernel's async readahead marks a page in each readahead window the same way.
func (w *readWindow) mark(off uint64, end int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.marks == nil {
		w.marks = map[uint64]int64{}
	}
	w.marks[off] = end
}

// asked records that a reader asked for the chunk at off (from memory, the store or a flight).
// When the chunk is a readahead mark and the windows are being read through (their full size),
// it returns where the next window starts.
func (w *readWindow) asked(off uint64) (next int64, ahead bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if size, ok := w.spec[off]; ok {
		delete(w.spec, off)
		w.used += float64(size)
	}
	end, ok := w.marks[off]
	if !ok {
		return 0, false
	}
	delete(w.marks, off)
	if w.fetched < float64(windowHistoryMin) || w.used/w.fetched < windowUseful {
		return 0, false
	}
	return end, true
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
	if ttfb > 0 {
		w.rtts[w.nrtt%rttSamples] = ttfb
		w.nrtt++
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
