package peer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"

	"github.com/dfnydus/dfnydus/peer/source"
	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/blob"
	"github.com/dfnydus/dfnydus/store"
)

// Options configure a Fetcher.
type Options struct {
	Store *store.Store
	// MemoryCache bounds the in-memory cache of recently read chunks (bytes); 0 disables it.
	MemoryCache int64
	Log         *zap.Logger
	Metrics     *prometheus.Registry
}

// DefaultMemoryCache is the default in-memory chunk cache: enough for a few readers streaming
// through 1 MiB chunks.
const DefaultMemoryCache = 16 << 20

// Fetcher serves chunks from memory, the store, or back to source, one fetch per chunk in flight
// whoever asks, and never returns bytes that did not match their digest.
type Fetcher struct {
	store *store.Store
	log   *zap.Logger
	m     *metrics
	mem   *chunkLRU
	group singleflight.Group
	// foreground counts on-demand fetches in flight; background prefetch waits while it is non-zero.
	foreground atomic.Int64
	// lastForeground is when the latest on-demand fetch ended (unix nanoseconds): prefetch waits for
	// a quiet moment and keeps its requests small while reads are active.
	lastForeground atomic.Int64
	// puts bounds the store writes in flight: verified chunks are written (and synced) in parallel,
	// and on-demand readers do not wait for the disk.
	puts  chan struct{}
	putWG sync.WaitGroup
}

// maxPutsInFlight bounds background store writes (and the chunk memory they hold).
const maxPutsInFlight = 32

// NewFetcher returns a Fetcher over opts.Store.
func NewFetcher(opts Options) *Fetcher {
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	return &Fetcher{store: opts.Store, log: opts.Log, m: newMetrics(opts.Metrics), mem: newChunkLRU(opts.MemoryCache),
		puts: make(chan struct{}, maxPutsInFlight)}
}

// Close waits for store writes still in flight.
func (f *Fetcher) Close() { f.putWG.Wait() }

// put writes a verified chunk to the store in the background; when too many writes are in flight
// it writes in the caller (backpressure). done, if not nil, is called when the write finished.
func (f *Fetcher) put(k store.Key, data []byte, done func()) {
	write := func() {
		// The store outlives any one reader: its context is not the reader's.
		if err := f.store.Put(context.Background(), k, data); err != nil {
			// The bytes are verified: they were served even if the store could not keep them (disk full).
			f.log.Warn("store put failed", zap.String("chunk", k.Digest.String()), zap.Error(err))
		}
		if done != nil {
			done()
		}
	}
	select {
	case f.puts <- struct{}{}:
		f.putWG.Add(1)
		go func() {
			defer f.putWG.Done()
			defer func() { <-f.puts }()
			write()
		}()
	default:
		write()
	}
}

// kinds of fetch, for metrics and scheduling.
const (
	kindOnDemand = "ondemand"
	kindPrefetch = "prefetch"
)

// ErrVerify is wrapped by errors about fetched bytes that do not match their digest.
var ErrVerify = errors.New("chunk failed verification")

func keyOf(b *rafs.Blob, c *rafs.Chunk) store.Key {
	return store.Key{Alg: b.Digester, Digest: c.Digest}
}

// cached returns the chunk from memory or the store.
func (f *Fetcher) cached(ctx context.Context, b *rafs.Blob, c *rafs.Chunk, buf []byte) ([]byte, bool, error) {
	k := keyOf(b, c)
	if data := f.mem.get(k); data != nil {
		f.m.memHits.Inc()
		return data, true, nil
	}
	data, ok, err := f.store.Get(ctx, k, c.UncompressedSize, nil)
	if err != nil || !ok {
		return nil, false, err
	}
	f.m.storeHits.Inc()
	f.mem.add(k, data)
	return data, true, nil
}

// load returns one chunk, fetching it from src when it is in neither cache.
func (f *Fetcher) load(ctx context.Context, src source.Source, st *imageStats, b *rafs.Blob, c *rafs.Chunk, buf []byte) ([]byte, error) {
	if data, ok, err := f.cached(ctx, b, c, buf); err != nil {
		return nil, err
	} else if ok {
		return data, nil
	}
	f.foreground.Add(1)
	defer func() {
		f.lastForeground.Store(time.Now().UnixNano())
		f.foreground.Add(-1)
	}()
	for {
		v, err, _ := f.group.Do(flightKey(b, c), func() (any, error) {
			out, err := f.fetch(ctx, src, st, b, []rafs.Chunk{*c}, kindOnDemand)
			if err != nil {
				return nil, err
			}
			return out[0], nil
		})
		if err == nil {
			return v.([]byte), nil
		}
		// Another reader's fetch we joined was cancelled with its reader: try again on our own
		// context unless ours is done too.
		if (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) && ctx.Err() == nil {
			continue
		}
		return nil, err
	}
}

func flightKey(b *rafs.Blob, c *rafs.Chunk) string {
	return fmt.Sprintf("%d:%x", b.Digester, c.Digest[:])
}

// fetch reads the compressed range covering chunks (sorted by offset, in one blob) from src in one
// request, verifies each chunk, stores it and returns the uncompressed chunks in order. A chunk that
// fails verification fails the whole fetch: nothing unverified is stored or returned.
func (f *Fetcher) fetch(ctx context.Context, src source.Source, st *imageStats, b *rafs.Blob, chunks []rafs.Chunk, kind string) ([][]byte, error) {
	start := chunks[0].CompressedOffset
	last := chunks[len(chunks)-1]
	end := last.CompressedOffset + uint64(last.CompressedSize)
	t0 := time.Now()
	raw, err := source.ReadFull(ctx, src, b.ID, int64(start), int64(end-start))
	f.m.fetchSeconds.WithLabelValues(src.String(), kind).Observe(time.Since(t0).Seconds())
	if err != nil {
		f.m.fetchErrors.WithLabelValues(src.String(), kind).Inc()
		return nil, fmt.Errorf("fetch blob %s [%d,%d) from %s: %w", b.ID, start, end, src, err)
	}
	f.m.fetchBytes.WithLabelValues(src.String(), kind).Add(float64(len(raw)))
	st.fetched(kind, int64(len(raw)))
	out := make([][]byte, len(chunks))
	ra := source.BytesAt{Data: raw, Base: int64(start)}
	// Prefetch waits for its writes so the store answers Has truthfully when it moves on; on-demand
	// readers get their bytes while the writes finish.
	var wrote sync.WaitGroup
	defer func() {
		if kind == kindPrefetch {
			wrote.Wait()
		}
	}()
	for i := range chunks {
		c := &chunks[i]
		data, err := blob.ReadChunk(ra, b.ID, c, b.Compressor, b.Digester, nil)
		if err != nil {
			f.m.verifyFailed.WithLabelValues(src.String()).Inc()
			st.verifyFailures.Add(1)
			f.log.Error("chunk from source failed verification", zap.String("source", src.String()), zap.String("blob", b.ID),
				zap.Uint32("chunk", c.Index), zap.Uint64("offset", c.CompressedOffset), zap.Error(err))
			return nil, fmt.Errorf("%w: %w", ErrVerify, err)
		}
		f.m.fetchChunks.WithLabelValues(src.String(), kind).Inc()
		f.mem.add(keyOf(b, c), data)
		wrote.Add(1)
		f.put(keyOf(b, c), data, wrote.Done)
		out[i] = data
	}
	return out, nil
}
