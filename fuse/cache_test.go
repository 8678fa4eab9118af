package fuse

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/dfnydus/dfnydus/rafs/compress"
)

func key(i int) chunkKey { return chunkKey{offset: uint64(i), size: 100} }

// fetchFunc returns a fetch that counts its calls and returns 100 bytes of value i.
func fetchFunc(calls *atomic.Int64, i int) fetcher {
	return func(context.Context, []byte) ([]byte, error) {
		calls.Add(1)
		b := make([]byte, 100)
		b[0] = byte(i)
		return b, nil
	}
}

// Concurrent reads of one chunk share a single fetch and all get its bytes.
func TestCacheSharesOneFetch(t *testing.T) {
	c := newChunkCache(context.Background(), 1<<20)
	release := make(chan struct{})
	var calls atomic.Int64
	fetch := func(context.Context, []byte) ([]byte, error) {
		calls.Add(1)
		<-release
		return []byte("chunk"), nil
	}
	var wg sync.WaitGroup
	results := make([]string, 10)
	for i := range results {
		wg.Go(func() {
			data, _, _, err := c.get(context.Background(), key(1), fetch)
			if err != nil {
				t.Error(err)
			}
			results[i] = string(data)
		})
	}
	waitFor(t, func() bool { return waiters(c, key(1)) == len(results) })
	close(release)
	wg.Wait()
	if calls.Load() != 1 {
		t.Errorf("%d fetches, want 1", calls.Load())
	}
	for i, r := range results {
		if r != "chunk" {
			t.Errorf("reader %d got %q", i, r)
		}
	}
}

// waiters returns how many reads wait for key's fetch.
func waiters(c *chunkCache, k chunkKey) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.entries[k]; e != nil {
		return e.waiters
	}
	return 0
}

// A fetch is cancelled when the last read waiting for it is interrupted, and not before.
func TestCacheCancelsFetchWhenNoReaderWaits(t *testing.T) {
	for _, tc := range []struct {
		readers, interrupted int
		wantCancel           bool
	}{
		{readers: 1, interrupted: 1, wantCancel: true},
		{readers: 3, interrupted: 2, wantCancel: false},
		{readers: 3, interrupted: 3, wantCancel: true},
	} {
		t.Run(fmt.Sprintf("%d of %d interrupted", tc.interrupted, tc.readers), func(t *testing.T) {
			c := newChunkCache(context.Background(), 1<<20)
			fetchEnded := make(chan error, 1)
			release := make(chan struct{})
			fetch := func(ctx context.Context, _ []byte) ([]byte, error) {
				select {
				case <-ctx.Done():
					fetchEnded <- ctx.Err()
					return nil, ctx.Err()
				case <-release:
					fetchEnded <- nil
					return []byte("data"), nil
				}
			}
			type result struct {
				data []byte
				err  error
			}
			results := make(chan result, tc.readers)
			cancels := make([]context.CancelFunc, tc.readers)
			for i := range tc.readers {
				ctx, cancel := context.WithCancel(context.Background())
				cancels[i] = cancel
				go func() {
					data, _, _, err := c.get(ctx, key(1), fetch)
					results <- result{data, err}
				}()
			}
			waitFor(t, func() bool { return waiters(c, key(1)) == tc.readers })
			for i := range tc.interrupted {
				cancels[i]()
				if r := <-results; !errors.Is(r.err, context.Canceled) {
					t.Errorf("interrupted read returned %q, %v", r.data, r.err)
				}
			}
			if tc.wantCancel {
				if err := <-fetchEnded; !errors.Is(err, context.Canceled) {
					t.Errorf("fetch ended with %v, want cancellation", err)
				}
				return
			}
			close(release)
			if err := <-fetchEnded; err != nil {
				t.Errorf("fetch was cancelled (%v) while reads still waited", err)
			}
			for range tc.readers - tc.interrupted {
				if r := <-results; r.err != nil || string(r.data) != "data" {
					t.Errorf("remaining read got %q, %v", r.data, r.err)
				}
			}
			for _, cancel := range cancels {
				cancel()
			}
		})
	}
}

// waitFor polls cond until it holds; the test's own deadline bounds it.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-t.Context().Done():
			t.Fatal("condition never held")
		default:
		}
		runtime.Gosched()
	}
}

// The cache keeps the most recent chunks within its byte budget, and always the newest one.
func TestCacheEvictsLeastRecentlyUsed(t *testing.T) {
	for _, tc := range []struct {
		limit    int64
		wantKept []int // keys that hit after fetching 0..4 and touching 2
	}{
		{limit: 300, wantKept: []int{2, 3, 4}},
		{limit: 250, wantKept: []int{2, 4}},
		{limit: 50, wantKept: []int{4}},
	} {
		t.Run(fmt.Sprint(tc.limit), func(t *testing.T) {
			c := newChunkCache(context.Background(), tc.limit)
			var calls atomic.Int64
			for i := range 5 {
				if i == 4 {
					// touch 2 so that it is more recent than 3
					if _, _, _, err := c.get(context.Background(), key(2), fetchFunc(&calls, 2)); err != nil {
						t.Fatal(err)
					}
				}
				if _, _, _, err := c.get(context.Background(), key(i), fetchFunc(&calls, i)); err != nil {
					t.Fatal(err)
				}
			}
			n, size := c.stats()
			if n != len(tc.wantKept) || size != int64(100*len(tc.wantKept)) {
				t.Errorf("cache holds %d chunks, %d bytes; want %d chunks", n, size, len(tc.wantKept))
			}
			for _, k := range tc.wantKept {
				if data, _, hit, err := c.get(context.Background(), key(k), fetchFunc(&calls, k)); err != nil || !hit || data[0] != byte(k) {
					t.Errorf("key %d: hit %v, data[0] %d, err %v", k, hit, data[0], err)
				}
			}
		})
	}
}

// A failed fetch is reported to its readers and not kept: the next read fetches again.
func TestCacheDoesNotKeepFailures(t *testing.T) {
	c := newChunkCache(context.Background(), 1<<20)
	boom := errors.New("boom")
	var calls atomic.Int64
	fail := func(context.Context, []byte) ([]byte, error) { calls.Add(1); return nil, boom }
	if _, _, _, err := c.get(context.Background(), key(1), fail); !errors.Is(err, boom) {
		t.Fatalf("got %v, want the fetch's error", err)
	}
	data, _, hit, err := c.get(context.Background(), key(1), fetchFunc(&calls, 1))
	if err != nil || hit || data[0] != 1 || calls.Load() != 2 {
		t.Errorf("second read: hit %v err %v, %d fetches; want a fresh fetch", hit, err, calls.Load())
	}
}

// Cancelling the cache's base context (unmount) cancels fetches in flight.
func TestCacheBaseCancelStopsFetches(t *testing.T) {
	base, cancel := context.WithCancel(context.Background())
	c := newChunkCache(base, 1<<20)
	block := func(ctx context.Context, _ []byte) ([]byte, error) { <-ctx.Done(); return nil, ctx.Err() }
	done := make(chan error)
	go func() {
		_, _, _, err := c.get(context.Background(), key(1), block)
		done <- err
	}()
	waitFor(t, func() bool { return waiters(c, key(1)) == 1 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("got %v, want cancellation", err)
	}
}

// Chunks decoded into the cache's buffers go back to the pool once they left the cache and no
// read holds them; a read's bytes never change while it holds them, and memory the reader did
// not decode into (its own) is never pooled.
func TestCacheRecyclesBuffersOnlyWhenNoReadHoldsThem(t *testing.T) {
	const size = 80 << 10 // a pooled class
	c := newChunkCache(context.Background(), size)
	c.pool = &bufPool{}
	fill := func(v byte) fetcher {
		return func(_ context.Context, buf []byte) ([]byte, error) {
			out := buf[:size]
			for i := range out {
				out[i] = v
			}
			return out, nil
		}
	}
	k := func(i int) chunkKey { return chunkKey{offset: uint64(i), size: size} }
	held, h, _, err := c.get(context.Background(), k(1), fill(1))
	if err != nil {
		t.Fatal(err)
	}
	e1 := c.entries[k(1)]
	for i := 2; i < 50; i++ { // each evicts the one before (one chunk fits)
		data, h2, _, err := c.get(context.Background(), k(i), fill(byte(i)))
		if err != nil {
			t.Fatal(err)
		}
		if data[0] != byte(i) || data[size-1] != byte(i) {
			t.Fatalf("chunk %d reads %d", i, data[0])
		}
		h2.release()
	}
	for i, b := range held {
		if b != 1 {
			t.Fatalf("byte %d of a held chunk changed to %d while held", i, b)
		}
	}
	c.mu.Lock()
	if !e1.pooled || e1.refs != 1 {
		t.Errorf("evicted but held: pooled %v refs %d, want true 1", e1.pooled, e1.refs)
	}
	c.mu.Unlock()
	h.release()
	c.mu.Lock()
	if e1.pooled || e1.data != nil || e1.refs != 0 {
		t.Errorf("released: pooled %v refs %d data %v, want the buffer back in the pool", e1.pooled, e1.refs, e1.data != nil)
	}
	c.mu.Unlock()

	own := make([]byte, size)
	_, h3, _, err := c.get(context.Background(), k(100), func(context.Context, []byte) ([]byte, error) { return own, nil })
	if err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	if e := c.entries[k(100)]; e.pooled {
		t.Error("memory the reader returned as its own is marked pooled")
	}
	c.mu.Unlock()
	h3.release()
}

func TestBufPoolClasses(t *testing.T) {
	for _, tc := range []struct{ n, class int }{
		{1, -1}, {32 << 10, -1}, {32<<10 + 1, 0}, {64 << 10, 0}, {64<<10 + 1, 1},
		{1 << 20, 4}, {1<<20 + 1, 5}, {16 << 20, 8}, {16<<20 + 1, -1},
	} {
		if got := class(tc.n); got != tc.class {
			t.Errorf("class(%d) = %d, want %d", tc.n, got, tc.class)
		}
	}
	var p bufPool
	if b := p.get(1 << 20); cap(b) != 1<<20+compress.DecodeSlack || len(b) != 0 {
		t.Errorf("get(1 MiB) = len %d cap %d, want an empty buffer of 1 MiB + the decoder's slack", len(b), cap(b))
	}
	b := p.get(1 << 20)
	p.put(b[:1<<20])
	p.put(make([]byte, 1<<20)) // not one of the pool's: dropped
	if b := p.get(100); b != nil {
		t.Errorf("get(100) = cap %d, want nil (small chunks are not pooled)", cap(b))
	}
}
