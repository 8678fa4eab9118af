package peer

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/dfnydus/dfnydus/internal/lowprio"
	"github.com/dfnydus/dfnydus/rafs"
)

// PrefetchMode says what an image fetches in the background.
type PrefetchMode string

const (
	PrefetchOff   PrefetchMode = "off"   // nothing: only on-demand reads
	PrefetchFiles PrefetchMode = "files" // the image's prefetch list
	PrefetchAll   PrefetchMode = "all"   // the prefetch list first, then everything else
)

// ParsePrefetchMode checks a --prefetch value.
func ParsePrefetchMode(s string) (PrefetchMode, error) {
	switch m := PrefetchMode(s); m {
	case PrefetchOff, PrefetchFiles, PrefetchAll:
		return m, nil
	}
	return "", fmt.Errorf("prefetch mode %q: want off, files or all", s)
}

// Prefetch states.
const (
	PrefetchIdle       = "idle"
	PrefetchRunning    = "running"
	PrefetchDone       = "done"
	PrefetchIncomplete = "incomplete" // finished with chunks it could not fetch; reads fetch them on demand
)

// PrefetchStatus is the background prefetch's progress.
type PrefetchStatus struct {
	State       string `json:"state"`
	ChunksTotal int    `json:"chunks_total"`
	ChunksDone  int    `json:"chunks_done"`
	Failed      int    `json:"chunks_failed"`
	Error       string `json:"last_error,omitempty"`
	// Trace is set when a start trace's chunks were prefetched first (PrefetchOptions.First).
	Trace *TraceStatus `json:"trace,omitempty"`
}

// PrefetchOptions tune the background prefetch.
type PrefetchOptions struct {
	Mode PrefetchMode
	// Rate limits prefetch to this many compressed bytes per second (0: unlimited).
	Rate int64
	// MaxRequest bounds one back-to-source request; adjacent chunks are fetched together up to it.
	MaxRequest int64
	// First are chunks to fetch before the mode's plan, in this order (a start trace: the order
	// a workload first read them); adjacent ones are merged into requests of up to MaxRequest.
	// Chunks not of this image are skipped. It adds to modes files and all; off fetches nothing.
	First []rafs.Chunk
	// FirstName names where First came from (e.g. the trace referrer's digest), for stat.
	FirstName string
}

// defaultMaxRequest merges adjacent chunks into requests of up to 4 MiB, Dragonfly's smallest
// piece size, so prefetch makes few large requests.
const defaultMaxRequest = 4 << 20

// batch is a run of adjacent chunks of one blob fetched in one request.
type batch struct {
	blob   *Blob
	chunks []rafs.Chunk
	bytes  int64
	first  bool // of PrefetchOptions.First
}

// plan lists what to prefetch (planWith: first's chunks in their order), then the prefetch list's chunks,
// then (mode all) the rest, in blob order; chunks the store has or an earlier step planned are
// dropped; a chunk adjacent to (just after) the previous one is merged into its batch.
func (im *Image) plan(mode PrefetchMode, maxReq int64) []batch { return im.planWith(mode, maxReq, nil) }

// planWith is plan with first's chunks (a start trace) put before everything else.
func (im *Image) planWith(mode PrefetchMode, maxReq int64, first []rafs.Chunk) []batch {
	type seenKey struct {
		blob int
		off  uint64
	}
	seen := map[seenKey]bool{}
	var out []batch
	open := false // whether out's last batch may still grow
	add := func(bi int, c rafs.Chunk, isFirst bool) {
		if bi < 0 || bi >= len(im.blobs) || im.blobs[bi] == nil {
			open = false
			return
		}
		bl := im.blobs[bi]
		k := seenKey{bi, c.CompressedOffset}
		if seen[k] || bl.sb.Verified(int64(c.CompressedOffset), int64(c.CompressedSize)) {
			seen[k] = true
			open = false
			return
		}
		seen[k] = true
		if open && out[len(out)-1].blob == bl {
			cur := &out[len(out)-1]
			last := cur.chunks[len(cur.chunks)-1]
			gap := int64(c.CompressedOffset) - int64(last.CompressedOffset+uint64(last.CompressedSize))
			if gap >= 0 && gap <= 64<<10 && cur.bytes+int64(c.CompressedSize)+gap <= maxReq {
				cur.chunks = append(cur.chunks, c)
				cur.bytes += int64(c.CompressedSize) + gap
				return
			}
		}
		out = append(out, batch{blob: bl, chunks: []rafs.Chunk{c}, bytes: int64(c.CompressedSize), first: isFirst})
		open = true
	}
	for _, c := range first {
		add(int(c.BlobIndex), c, true)
	}
	var groups []blobChunks
	if len(im.img.Prefetch) > 0 {
		groups = append(groups, chunksOf(im.img, im.img.Prefetch)...)
	}
	if mode == PrefetchAll {
		groups = append(groups, chunksOf(im.img, nil)...)
	}
	for _, g := range groups {
		open = false
		for _, c := range g.chunks {
			add(g.index, c, false)
		}
	}
	return out
}

// StartPrefetch fetches the image's chunks in the background until done or ctx ends. It yields to
// on-demand reads: a batch starts only while no on-demand fetch is in flight.
func (im *Image) StartPrefetch(ctx context.Context, opts PrefetchOptions) {
	if opts.Mode == PrefetchOff || opts.Mode == "" {
		return
	}
	if opts.MaxRequest <= 0 {
		opts.MaxRequest = defaultMaxRequest
	}
	if len(opts.First) > 0 {
		im.startTrace(opts.First)
	}
	batches := im.planWith(opts.Mode, opts.MaxRequest, opts.First)
	total := 0
	for _, b := range batches {
		total += len(b.chunks)
	}
	im.setPrefetch(func(p *PrefetchStatus) {
		*p = PrefetchStatus{State: PrefetchRunning, ChunksTotal: total}
		if len(opts.First) > 0 {
			p.Trace = &TraceStatus{Name: opts.FirstName, Chunks: len(opts.First)}
		}
	})
	var lim *rate.Limiter
	if opts.Rate > 0 {
		lim = rate.NewLimiter(rate.Limit(opts.Rate), int(max(opts.Rate, opts.MaxRequest)))
	}
	go im.runPrefetch(ctx, batches, lim)
}

func (im *Image) runPrefetch(ctx context.Context, batches []batch, lim *rate.Limiter) {
	log := im.f.log.With(zap.String("image", im.Name))
	start := time.Now()
	// Up to prefetchInFlight requests are on the wire at once, across batches: with one, the link
	// idles for a round trip (the source's time to first byte) between requests, about an eighth
	// of a 100 Mbit/s link for 512 KiB requests (42 ms) to a registry that answers in ~6 ms.
	slots := make(chan struct{}, prefetchInFlight)
	var failed []batch
	for pass := 0; pass < 2 && len(batches) > 0; pass++ {
		failed = failed[:0]
		// finish waits for a started batch's fetches and records how it went. A batch is finished
		// after the next one started, so that the two overlap on the wire.
		finish := func(p *startedBatch) {
			if err := p.wait(); err != nil {
				if ctx.Err() != nil {
					return
				}
				log.Warn("prefetch batch failed", zap.String("blob", p.b.blob.id), zap.Int("chunks", len(p.b.chunks)), zap.Error(err))
				im.setPrefetch(func(s *PrefetchStatus) { s.Error = err.Error() })
				failed = append(failed, p.b)
				return
			}
			im.setPrefetch(func(s *PrefetchStatus) {
				s.ChunksDone += len(p.b.chunks)
				if p.b.first && s.Trace != nil {
					// Copied, not changed in place: snapshots of the status share the pointer.
					t := *s.Trace
					t.Prefetched += len(p.b.chunks)
					s.Trace = &t
				}
			})
		}
		var prev *startedBatch
		for _, b := range batches {
			p := im.startBatch(ctx, b, lim, slots)
			if prev != nil {
				finish(prev)
			}
			prev = p
			if ctx.Err() != nil {
				break
			}
		}
		if prev != nil {
			finish(prev)
		}
		if ctx.Err() != nil {
			im.setPrefetch(func(p *PrefetchStatus) { p.State, p.Error = PrefetchIncomplete, ctx.Err().Error() })
			return
		}
		batches = append([]batch(nil), failed...)
		if len(batches) > 0 {
			select { // a second pass after a pause, for sources that were briefly unavailable
			case <-ctx.Done():
			case <-time.After(2 * time.Second):
			}
		}
	}
	state := PrefetchDone
	if len(failed) > 0 {
		state = PrefetchIncomplete
	}
	nFailed := 0
	for _, b := range failed {
		nFailed += len(b.chunks)
	}
	im.setPrefetch(func(p *PrefetchStatus) { p.State, p.Failed = state, nFailed })
	log.Info("prefetch finished", zap.String("state", state), zap.Duration("took", time.Since(start)), zap.Int("failed_chunks", nFailed))
}

// startedBatch is a batch whose fetches are on their way.
type startedBatch struct {
	b       batch
	wg      sync.WaitGroup
	claimed []rafs.Chunk // the chunks this batch fetches (the rest were here or on their way)
	err     error        // why it stopped starting fetches (ctx, the rate limiter)
}

// wait waits for the batch's fetches and says whether every chunk it claimed is now verified.
func (p *startedBatch) wait() error {
	p.wg.Wait()
	if p.err != nil {
		return p.err
	}
	for _, c := range p.claimed {
		if !p.b.blob.sb.Verified(int64(c.CompressedOffset), int64(c.CompressedSize)) {
			return fmt.Errorf("blob %s chunk %d: not fetched", p.b.blob.id, c.Index)
		}
	}
	return nil
}

// startBatch starts fetching a batch's chunks, a request at a time as slots free up, and returns
// once every request is started (or ctx ended).
func (im *Image) startBatch(ctx context.Context, b batch, lim *rate.Limiter, slots chan struct{}) *startedBatch {
	p := &startedBatch{b: b}
	rest := b.chunks
	for len(rest) > 0 {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			p.err = ctx.Err()
			return p
		}
		// Yield to on-demand reads: wait until none is in flight and none ended in the last
		// prefetchQuiet, and while reads were active lately, fetch at most prefetchActiveRequest at a
		// time, so a request already on the wire delays the next on-demand read little.
		if err := im.f.fg.waitQuiet(ctx, prefetchQuiet); err != nil {
			<-slots
			p.err = err
			return p
		}
		limit := im.f.BackgroundRequest()
		var take []rafs.Chunk
		var size int64
		for len(rest) > 0 {
			c := rest[0]
			if len(take) > 0 && size+int64(c.CompressedSize) > limit {
				break
			}
			rest = rest[1:]
			take = append(take, c)
			size += int64(c.CompressedSize)
		}
		// Chunks that on-demand reads brought in, or are bringing in, meanwhile are skipped.
		runs := b.blob.claim(take)
		if len(runs) == 0 {
			<-slots
			continue
		}
		var n int64
		for _, run := range runs {
			p.claimed = append(p.claimed, run...)
			for _, c := range run {
				n += int64(c.CompressedSize)
			}
		}
		if lim != nil {
			if err := lim.WaitN(ctx, int(min(n, int64(lim.Burst())))); err != nil {
				for _, run := range runs {
					b.blob.abandon(run, err)
				}
				<-slots
				p.err = err
				return p
			}
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer func() { <-slots }()
			// Prefetch is work for when the node has nothing better to do: its verification gives
			// way to readers and to pieces other peers wait for. The thread ends with the request.
			lowprio.Enter()
			for _, run := range runs {
				im.f.fetch(ctx, im.src, &im.st, b.blob, run, kindPrefetch)
				for _, c := range run {
					if b.blob.sb.Verified(int64(c.CompressedOffset), int64(c.CompressedSize)) {
						im.f.m.prefetchBytes.Add(float64(c.UncompressedSize))
					}
				}
			}
		}()
	}
	return p
}

// How background prefetch shares the link with on-demand reads (a container starting while its
// image prefetches): it starts a request only after prefetchQuiet without on-demand fetches, and
// within prefetchActiveWindow of one its requests are at most prefetchActiveRequest bytes.
const (
	prefetchQuiet         = 100 * time.Millisecond
	prefetchActiveWindow  = 2 * time.Second
	prefetchActiveRequest = 512 << 10
	// prefetchInFlight is how many prefetch requests may be on the wire at once.
	prefetchInFlight = 2
)

func (im *Image) setPrefetch(fn func(*PrefetchStatus)) {
	im.prefetchMu.Lock()
	fn(&im.prefetch)
	im.prefetchMu.Unlock()
}

// PrefetchStatus returns the prefetch's progress.
func (im *Image) PrefetchStatus() PrefetchStatus {
	im.prefetchMu.Lock()
	p := im.prefetch
	im.prefetchMu.Unlock()
	return im.withTraceCounts(p)
}
