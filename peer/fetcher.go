package peer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/dfnydus/dfnydus/blobstore"
	"github.com/dfnydus/dfnydus/peer/source"
	"github.com/dfnydus/dfnydus/rafs"
)

// Options configure a Fetcher.
type Options struct {
	Store *blobstore.Store
	// MemoryCache bounds the in-memory cache of recently read chunks (bytes); 0 disables it.
	MemoryCache int64
	// ReadWindow is how far past a missing chunk an on-demand read fetches the blob's next missing
	// chunks in the same request (0: DefaultReadWindow; negative: the chunk alone).
	ReadWindow int64
	// VerifyReads hashes every chunk read from the store, not only the first read of a chunk kept
	// by an earlier process.
	VerifyReads bool
	Log         *zap.Logger
	Metrics     *prometheus.Registry
}

// DefaultMemoryCache is the default in-memory chunk cache: enough for a few readers streaming
// through 1 MiB chunks.
const DefaultMemoryCache = 16 << 20

// DefaultReadWindow is how many stored bytes past a missing chunk an on-demand read brings in with
// it (nydusd's amplify_io default): files are laid out in directory order, so the neighbours are
// what a starting program reads next, and one round trip for them costs little more than for one.
const DefaultReadWindow = 1 << 20

// Fetcher serves chunks from memory, the store, or back to source, one fetch per chunk in flight
// whoever asks, and never returns bytes that did not match their digest.
type Fetcher struct {
	store       *blobstore.Store
	log         *zap.Logger
	m           *metrics
	mem         *chunkLRU
	window      int64
	verifyReads bool
	fg          activity
	repaired    atomic.Int64
	// bg counts work that goes on after the caller that started it left and that still puts
	// verified bytes in the store (a fetch finishing its pieces, a whole-blob check): Drain waits
	// for it, so that a daemon stopped cleanly keeps what that work verified.
	bg sync.WaitGroup

	blobsMu sync.Mutex
	blobs   map[string]*Blob
}

// NewFetcher returns a Fetcher over opts.Store.
func NewFetcher(opts Options) *Fetcher {
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	w := opts.ReadWindow
	switch {
	case w == 0:
		w = DefaultReadWindow
	case w < 0:
		w = 0
	}
	return &Fetcher{store: opts.Store, log: opts.Log, m: newMetrics(opts.Metrics), mem: newChunkLRU(opts.MemoryCache),
		window: w, verifyReads: opts.VerifyReads, fg: newActivity(), blobs: map[string]*Blob{}}
}

// Drain waits until the background work of earlier reads has ended (fetches finishing whole
// pieces, whole-blob checks), or ctx is done. Call it after the mounts and the P2P tasks are gone
// and before the store closes: a check that ends after the store closed loses what it verified,
// and a clean restart would fetch those bytes again.
func (f *Fetcher) Drain(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		f.bg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("fetcher: background work still running: %w", ctx.Err())
	}
}

// Store returns the blob store the fetcher reads and fills.
func (f *Fetcher) Store() *blobstore.Store { return f.store }

// kinds of fetch, for metrics and scheduling.
const (
	kindOnDemand  = "ondemand"
	kindPrefetch  = "prefetch"
	kindReadahead = "readahead" // the next window of a reader streaming through a blob (counted as on-demand bytes)
)

// ErrVerify is wrapped by errors about fetched bytes that do not match their digest.
var ErrVerify = errors.New("chunk failed verification")

// readChunk returns chunk c of bl: memory, the store, else fetched (with the missing chunks after
// it, up to the read window) through src.
func (f *Fetcher) readChunk(ctx context.Context, src source.Source, st *imageStats, bl *Blob, c *rafs.Chunk, buf []byte) ([]byte, error) {
	k := bl.key(c)
	for attempt := 0; ; attempt++ {
		if data := f.mem.get(k); data != nil {
			f.m.memHits.Inc()
			f.readahead(ctx, src, st, bl, c)
			return data, nil
		}
		if data, ok, err := bl.readStored(c, buf); err != nil {
			return nil, err
		} else if ok {
			f.m.storeHits.Inc()
			f.readahead(ctx, src, st, bl, c)
			return data, nil
		}
		fl, lead, next := bl.join(c)
		if next > 0 {
			f.readaheadFrom(ctx, src, st, bl, next)
		}
		if fl == nil {
			if attempt >= 8 {
				return nil, fmt.Errorf("blob %s chunk %d: verified in the store but not readable there", bl.id, c.Index)
			}
			continue // it landed in the store since we looked
		}
		if lead != nil {
			f.fg.begin()
			if fl, ok := src.(source.Filler); ok && fl.Fills(bl.id) {
				// The P2P layer brings whole pieces and verifies the chunks readers wait for first:
				// this reader goes on once its own chunk is delivered, and the fetch finishes the
				// rest (on the reader's values, not its cancellation: a piece is worth finishing).
				f.bg.Add(1)
				go func() {
					defer f.bg.Done()
					defer f.fg.end()
					f.fetch(context.WithoutCancel(ctx), src, st, bl, lead, kindOnDemand)
				}()
			} else {
				f.fetch(ctx, src, st, bl, lead, kindOnDemand)
				f.fg.end()
			}
		}
		select {
		case <-fl.done:
		case <-ctx.Done():
			return nil, fmt.Errorf("blob %s chunk %d: %w", bl.id, c.Index, ctx.Err())
		}
		if fl.err == nil && fl.data != nil {
			return fl.data, nil
		}
		err := fl.err
		if err == nil {
			if attempt >= 8 {
				return nil, fmt.Errorf("blob %s chunk %d: fetched %d times and still not here", bl.id, c.Index, attempt+1)
			}
			continue // kept by someone else's fetch: read it from the store
		}
		// Another reader's fetch we joined was cancelled with its reader: try again on our own
		// context unless ours is done too.
		// Bytes that failed their digest were dropped and their sender blamed (a lying parent is
		// avoided from then on): fetch again, from elsewhere, a few times before giving up. The
		// bound is not 1: requests that went to the liar before it was caught fail too, and a
		// reader may have joined any of them.
		if errors.Is(err, rafs.ErrCorrupt) && ctx.Err() == nil && attempt < 8 {
			continue
		}
		if (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) && ctx.Err() == nil && attempt < 8 {
			continue
		}
		return nil, err
	}
}

// join returns the flight of chunk c, and when there was none, the chunks this caller must fetch:
// c and the missing chunks after it within the read window, each now in flight. next > 0 when c
// was in flight as a readahead mark: the next window starts there (see readaheadFrom). No flight
// and no lead: the chunk is in the store (it landed after the caller looked there).
func (bl *Blob) join(c *rafs.Chunk) (fl *flight, lead []rafs.Chunk, next int64) {
	bl.mu.Lock()
	defer bl.mu.Unlock()
	if fl := bl.flights[c.CompressedOffset]; fl != nil {
		fl.wanted = true
		next, _ = bl.win.asked(c.CompressedOffset)
		return fl, nil, next
	}
	if bl.sb.Verified(int64(c.CompressedOffset), int64(c.CompressedSize)) {
		return nil, nil, 0
	}
	fl = &flight{done: make(chan struct{}), wanted: true}
	bl.flights[c.CompressedOffset] = fl
	lead = []rafs.Chunk{*c}
	if i := bl.findLocked(c.CompressedOffset); i >= 0 {
		lead = append(lead, bl.windowLocked(i+1, int64(c.CompressedOffset)+max(int64(c.CompressedSize), bl.win.size(bl.f.window)),
			int64(c.CompressedOffset)+int64(c.CompressedSize))...)
	}
	return fl, lead, 0
}

// windowLocked puts in flight the run of missing chunks from index i on that ends by limit, with
// at most gapLimit bytes between two of them (prev: where the bytes before chunk i end), records
// them as window bytes and marks the first chunk of the window's second half (see readWindow.mark).
// bl.mu held.
func (bl *Blob) windowLocked(i int, limit, prev int64) []rafs.Chunk {
	var run []rafs.Chunk
	for j := i; j < len(bl.chunks); j++ {
		n := &bl.chunks[j]
		ne := int64(n.CompressedOffset) + int64(n.CompressedSize)
		if ne > limit || int64(n.CompressedOffset)-prev > gapLimit {
			break
		}
		if bl.flights[n.CompressedOffset] != nil || bl.sb.Verified(int64(n.CompressedOffset), int64(n.CompressedSize)) {
			break // a run ends where bytes are already here or on their way
		}
		bl.flights[n.CompressedOffset] = &flight{done: make(chan struct{})}
		bl.win.brought(n.CompressedOffset, int64(n.CompressedSize))
		run = append(run, *n)
		prev = ne
	}
	if len(run) > 0 {
		mid := (int64(run[0].CompressedOffset) + prev) / 2
		for _, n := range run {
			if int64(n.CompressedOffset) >= mid {
				bl.win.mark(n.CompressedOffset, prev)
				break
			}
		}
	}
	return run
}

// readahead starts the next window when the chunk a reader just got from memory or the store is
// a readahead mark.
func (f *Fetcher) readahead(ctx context.Context, src source.Source, st *imageStats, bl *Blob, c *rafs.Chunk) {
	if next, ok := bl.win.asked(c.CompressedOffset); ok {
		f.readaheadFrom(ctx, src, st, bl, next)
	}
}

// readaheadFrom fetches, in the background, the window of missing chunks that starts at the first
// chunk at or after from: the reader streaming through the blob needs it next, and asking for it
// now keeps the link busy while the reader goes through the window before it. It counts as
// on-demand activity (background prefetch keeps giving way) and ends on its own.
func (f *Fetcher) readaheadFrom(ctx context.Context, src source.Source, st *imageStats, bl *Blob, from int64) {
	bl.mu.Lock()
	i := sort.Search(len(bl.chunks), func(i int) bool { return int64(bl.chunks[i].CompressedOffset) >= from })
	var run []rafs.Chunk
	if i < len(bl.chunks) {
		start := int64(bl.chunks[i].CompressedOffset)
		run = bl.windowLocked(i, start+bl.win.size(f.window), start)
	}
	bl.mu.Unlock()
	if len(run) == 0 {
		return
	}
	f.fg.begin()
	f.bg.Add(1)
	go func() {
		defer f.bg.Done()
		defer f.fg.end()
		f.fetch(context.WithoutCancel(ctx), src, st, bl, run, kindReadahead)
	}()
}

// gapLimit is the most bytes between two chunks one request may carry for nothing.
const gapLimit = 64 << 10

// claim puts the chunks that are neither stored nor in flight in flight and returns them, in runs
// of adjacent chunks (background prefetch: it never waits for a chunk someone else fetches).
func (bl *Blob) claim(cs []rafs.Chunk) [][]rafs.Chunk {
	bl.mu.Lock()
	defer bl.mu.Unlock()
	var runs [][]rafs.Chunk
	open := false
	for _, c := range cs {
		if bl.flights[c.CompressedOffset] != nil || bl.sb.Verified(int64(c.CompressedOffset), int64(c.CompressedSize)) {
			open = false
			continue
		}
		bl.flights[c.CompressedOffset] = &flight{done: make(chan struct{})}
		if open {
			r := &runs[len(runs)-1]
			prev := (*r)[len(*r)-1]
			if int64(c.CompressedOffset)-int64(prev.CompressedOffset+uint64(prev.CompressedSize)) <= gapLimit {
				*r = append(*r, c)
				continue
			}
		}
		runs = append(runs, []rafs.Chunk{c})
		open = true
	}
	return runs
}

// fetch brings chunks (in flight, owned by this caller, sorted by offset) into the node and ends
// their flights: through the P2P layer when src fills the store itself, else one ranged read whose
// chunks are verified and handed out one by one as their bytes arrive (the first reader does not
// wait for the rest of the request).
func (f *Fetcher) fetch(ctx context.Context, src source.Source, st *imageStats, bl *Blob, chunks []rafs.Chunk, kind string) {
	start := int64(chunks[0].CompressedOffset)
	last := chunks[len(chunks)-1]
	end := int64(last.CompressedOffset) + int64(last.CompressedSize)
	t0 := time.Now()
	var err error
	if fl, ok := src.(source.Filler); ok && fl.Fills(bl.id) {
		// The P2P layer counts what it moved (pieces from peers, ranges from the source) in its
		// own metrics; the image counts the range it asked for.
		err = fl.Fill(ctx, bl.id, start, end-start)
		if err == nil {
			st.requested()
			st.fetched(kind, end-start)
		}
	} else {
		err = f.stream(ctx, src, st, bl, chunks, kind)
	}
	f.m.fetchSeconds.WithLabelValues(src.String(), kind).Observe(time.Since(t0).Seconds())
	if err != nil {
		f.m.fetchErrors.WithLabelValues(src.String(), kind).Inc()
		err = fmt.Errorf("fetch blob %s [%d,%d) from %s: %w", bl.id, start, end, src, err)
	}
	// Whatever is still in flight was not verified by this fetch: its readers look again (in the
	// store, where another path may have put it) or get the error.
	bl.mu.Lock()
	var left []*flight
	for _, c := range chunks {
		if fl := bl.flights[c.CompressedOffset]; fl != nil {
			delete(bl.flights, c.CompressedOffset)
			left = append(left, fl)
		}
	}
	bl.mu.Unlock()
	for _, fl := range left {
		fl.finish(nil, err)
	}
}

// stream reads the chunks' range from src and accepts it chunk by chunk as it arrives.
func (f *Fetcher) stream(ctx context.Context, src source.Source, st *imageStats, bl *Blob, chunks []rafs.Chunk, kind string) error {
	start := int64(chunks[0].CompressedOffset)
	last := chunks[len(chunks)-1]
	end := int64(last.CompressedOffset) + int64(last.CompressedSize)
	t0 := time.Now()
	rc, err := src.ReadRange(ctx, bl.id, start, end-start)
	if err != nil {
		return err
	}
	defer rc.Close()
	st.requested()
	ttfb := time.Since(t0)
	var netTime time.Duration // waiting for body bytes (not verifying them)
	defer func() { bl.win.observe(ttfb, end-start, netTime) }()
	pos := start
	var buf []byte
	for i := range chunks {
		c := &chunks[i]
		co, ce := int64(c.CompressedOffset), int64(c.CompressedOffset)+int64(c.CompressedSize)
		if co > pos { // bytes between chunks: nothing reads them through a mount
			if _, err := io.CopyN(io.Discard, rc, co-pos); err != nil {
				return err
			}
			pos = co
		}
		if co < pos {
			continue // overlapping records: the earlier chunk's bytes already went by
		}
		if cap(buf) < int(ce-co) {
			buf = make([]byte, ce-co)
		}
		p := buf[:ce-co]
		tr := time.Now()
		_, err := io.ReadFull(rc, p)
		netTime += time.Since(tr)
		if err != nil {
			return err
		}
		pos = ce
		f.m.fetchBytes.WithLabelValues(src.String(), kind).Add(float64(len(p)))
		st.fetched(kind, int64(len(p)))
		res, err := bl.Accept(co, p, OriginSource)
		if err != nil {
			return err
		}
		for _, bad := range res.Bad {
			st.verifyFailures.Add(1)
			f.log.Error("chunk from source failed verification", zap.String("source", src.String()), zap.String("blob", bl.id),
				zap.Uint32("chunk", bad.Index), zap.Int64("offset", bad.Off), zap.Error(bad.Err))
		}
		f.m.fetchChunks.WithLabelValues(src.String(), kind).Add(float64(res.Verified))
	}
	return nil
}

// readStored returns chunk c from the store when its bytes are verified there. A chunk kept by an
// earlier process is hashed on its first read in this one (or on every read with VerifyReads); one
// that no longer matches is dropped from the store and counted, and the caller fetches it again.
func (bl *Blob) readStored(c *rafs.Chunk, buf []byte) ([]byte, bool, error) {
	co, n := int64(c.CompressedOffset), int64(c.CompressedSize)
	if !bl.sb.Verified(co, n) {
		return nil, false, nil
	}
	sp := storedScratch.Get().(*[]byte)
	defer storedScratch.Put(sp)
	if int64(cap(*sp)) < n {
		*sp = make([]byte, n)
	}
	src := (*sp)[:n]
	if err := bl.sb.ReadAt(src, co); err != nil {
		if errors.Is(err, blobstore.ErrMissing) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("blob %s chunk %d: read from the store: %w", bl.id, c.Index, err)
	}
	bl.mu.Lock()
	i := bl.findLocked(c.CompressedOffset)
	verify := bl.f.verifyReads || i < 0 || !bl.checked[i]
	bl.mu.Unlock()
	out, err := bl.decode(src, c, buf, verify)
	if err != nil {
		bl.f.repaired.Add(1)
		bl.f.m.repaired.Inc()
		bl.log.Warn("stored chunk no longer matches its digest: dropping it, it will be fetched again",
			zap.Uint32("chunk", c.Index), zap.Int64("offset", co), zap.Error(err))
		if ierr := bl.sb.Invalidate(co, n); ierr != nil {
			return nil, false, fmt.Errorf("blob %s chunk %d: drop damaged bytes: %w", bl.id, c.Index, ierr)
		}
		return nil, false, nil
	}
	if verify {
		bl.markChecked(c.CompressedOffset)
	}
	// Bytes decoded into the caller's buffer are the caller's (it caches and recycles them);
	// only memory of our own may enter the memory cache.
	if cap(buf) == 0 || &out[:1][0] != &buf[:1][0] {
		bl.f.mem.add(bl.key(c), out)
	}
	return out, true, nil
}

var storedScratch = sync.Pool{New: func() any { return new([]byte) }}

// abandon ends the flights of chunks claimed but not fetched.
func (bl *Blob) abandon(chunks []rafs.Chunk, err error) {
	bl.mu.Lock()
	var left []*flight
	for _, c := range chunks {
		if fl := bl.flights[c.CompressedOffset]; fl != nil {
			delete(bl.flights, c.CompressedOffset)
			left = append(left, fl)
		}
	}
	bl.mu.Unlock()
	for _, fl := range left {
		fl.finish(nil, err)
	}
}

// BlobInUse reports whether a mounted image or a task holds a handle of blob id.
func (f *Fetcher) BlobInUse(id string) bool {
	f.blobsMu.Lock()
	defer f.blobsMu.Unlock()
	return f.blobs[id] != nil
}
