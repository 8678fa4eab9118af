package peer

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/dfnydus/dfnydus/blobstore"
	"github.com/dfnydus/dfnydus/internal/lowprio"
	"github.com/dfnydus/dfnydus/peer/source"
	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/builder"
)

// fakeSource serves a local blob dir, counting requests and bytes, and can lie or fail.
type fakeSource struct {
	inner     source.Source
	dir       string // the blob directory inner reads
	requests  atomic.Int64
	bytes     atomic.Int64
	corrupt   atomic.Bool
	fail      atomic.Bool
	delay     time.Duration
	inflight  atomic.Int64 // requests being answered now
	most      atomic.Int64 // the most requests answered at once
	onRequest func()       // called on the requesting goroutine, when set
}

func (s *fakeSource) ReadRange(ctx context.Context, id string, off, n int64) (io.ReadCloser, error) {
	s.requests.Add(1)
	if s.onRequest != nil {
		s.onRequest()
	}
	now := s.inflight.Add(1)
	defer s.inflight.Add(-1)
	for m := s.most.Load(); now > m && !s.most.CompareAndSwap(m, now); m = s.most.Load() {
	}
	if s.fail.Load() {
		return nil, errors.New("source down")
	}
	if s.delay > 0 {
		select {
		case <-time.After(s.delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	rc, err := s.inner.ReadRange(ctx, id, off, n)
	if err != nil {
		return nil, err
	}
	data, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		return nil, err
	}
	s.bytes.Add(int64(len(data)))
	if s.corrupt.Load() {
		for i := 0; i < len(data); i += 1000 { // every chunk of any range is damaged
			data[i] ^= 0xff
		}
	}
	return io.NopCloser(bytes.NewReader(data)), nil
}
func (s *fakeSource) String() string { return "local" }
func (s *fakeSource) Close() error   { return nil }

// testImage builds an image of files with random (incompressible) content and small chunks, so it
// has many chunks in a few blob ranges.
func testImage(t *testing.T) (*rafs.Image, *fakeSource, map[string][]byte) {
	t.Helper()
	dir := t.TempDir()
	files := map[string][]byte{}
	rng := rand.New(rand.NewPCG(7, 7))
	for i, size := range []int{100, 5000, 70000, 300000, 1 << 20} {
		data := make([]byte, size)
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		name := filepath.Join("d", string(rune('a'+i)))
		if err := os.MkdirAll(filepath.Join(dir, "src", "d"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "src", name), data, 0o644); err != nil {
			t.Fatal(err)
		}
		files["/"+name] = data
	}
	opts := builder.DefaultOptions()
	opts.ChunkSize = 0x10000
	opts.Prefetch = []string{"/d/b"}
	blobs := filepath.Join(dir, "blobs")
	res, err := builder.Build(context.Background(), opts, blobs, []builder.Layer{builder.PathLayer(filepath.Join(dir, "src"))})
	if err != nil {
		t.Fatal(err)
	}
	return res.Image, &fakeSource{inner: source.NewLocal(blobs), dir: blobs}, files
}

func newTestFetcher(t *testing.T, mem int64) (*Fetcher, *blobstore.Store) {
	t.Helper()
	st, err := blobstore.Open(t.TempDir(), blobstore.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	f := NewFetcher(Options{Store: st, MemoryCache: mem})
	t.Cleanup(func() { st.Close() })
	return f, st
}

func mustImage(t *testing.T, f *Fetcher, img *rafs.Image, src source.Source) *Image {
	t.Helper()
	im, err := f.NewImage("test", img, src)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(im.Close)
	return im
}

// readFile reads a whole file of the image through the chunk reader.
func readFile(t *testing.T, r rafs.ChunkReader, img *rafs.Image, p string) ([]byte, error) {
	t.Helper()
	n := img.Lookup(p)
	out := make([]byte, n.Inode.Size)
	for _, c := range n.Inode.Chunks {
		data, err := r.ReadChunk(context.Background(), img.Blobs[c.BlobIndex], &c, nil)
		if err != nil {
			return nil, err
		}
		copy(out[c.FileOffset:], data)
	}
	return out, nil
}

func TestReadChunkPaths(t *testing.T) {
	img, src, files := testImage(t)
	f, _ := newTestFetcher(t, 0)
	im := mustImage(t, f, img, src)
	for p, want := range files {
		got, err := readFile(t, im, img, p)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s: %v, equal=%v", p, err, bytes.Equal(got, want))
		}
	}
	fetched := src.requests.Load()
	for p := range files {
		if _, err := readFile(t, im, img, p); err != nil {
			t.Fatal(err)
		}
	}
	if src.requests.Load() != fetched {
		t.Errorf("second read of everything made %d more source requests, want 0 (store hits)", src.requests.Load()-fetched)
	}
	if s := im.Stats(); s.ChunksCached != s.Chunks || s.BytesOnDemand == 0 {
		t.Errorf("stats %+v", s)
	}
}

// Concurrent readers of one missing chunk share one fetch.
func TestConcurrentReadersShareOneFetch(t *testing.T) {
	img, src, _ := testImage(t)
	src.delay = 50 * time.Millisecond
	f, _ := newTestFetcher(t, 64<<20)
	im := mustImage(t, f, img, src)
	c := img.Lookup("/d/e").Inode.Chunks[3]
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := im.ReadChunk(context.Background(), img.Blobs[c.BlobIndex], &c, nil); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := src.requests.Load(); n != 1 {
		t.Errorf("16 concurrent readers made %d source requests, want 1", n)
	}
}

// A source that lies gives an error wrapping ErrVerify and nothing is stored.
func TestWrongBytesAreNeverServedOrStored(t *testing.T) {
	img, src, _ := testImage(t)
	src.corrupt.Store(true)
	f, st := newTestFetcher(t, 64<<20)
	im := mustImage(t, f, img, src)
	_, err := readFile(t, im, img, "/d/c")
	if !errors.Is(err, ErrVerify) || !errors.Is(err, rafs.ErrCorrupt) {
		t.Fatalf("err = %v, want ErrVerify wrapping rafs.ErrCorrupt", err)
	}
	if s := st.Stats(); s.VerifiedBytes != 0 {
		t.Errorf("store holds %d verified bytes after a lying source", s.VerifiedBytes)
	}
	if im.Stats().VerifyFailures == 0 {
		t.Error("verify failure not counted")
	}
	src.corrupt.Store(false)
	if _, err := readFile(t, im, img, "/d/c"); err != nil {
		t.Errorf("after the source recovers: %v", err)
	}
}

// A reader whose context ends stops waiting; others are not affected.
func TestReaderContextCancels(t *testing.T) {
	img, src, _ := testImage(t)
	src.delay = time.Second
	f, _ := newTestFetcher(t, 0)
	im := mustImage(t, f, img, src)
	c := img.Lookup("/d/d").Inode.Chunks[0]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := im.ReadChunk(ctx, img.Blobs[c.BlobIndex], &c, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want the reader's deadline", err)
	}
}

func TestPlanMergesAndOrders(t *testing.T) {
	img, src, _ := testImage(t)
	f, _ := newTestFetcher(t, 0)
	im := mustImage(t, f, img, src)
	files := im.plan(PrefetchFiles, defaultMaxRequest)
	if len(files) != 1 || len(files[0].chunks) != 1 {
		t.Fatalf("files plan %d batches, want the one chunk of /d/b", len(files))
	}
	all := im.plan(PrefetchAll, 200<<10)
	total := 0
	for i, b := range all {
		if b.bytes > 200<<10 && len(b.chunks) > 1 {
			t.Errorf("batch %d is %d bytes, over the 200 KiB cap", i, b.bytes)
		}
		for j := 1; j < len(b.chunks); j++ {
			if b.chunks[j].CompressedOffset <= b.chunks[j-1].CompressedOffset {
				t.Errorf("batch %d is not in offset order", i)
			}
		}
		total += len(b.chunks)
	}
	if want := im.Stats().Chunks; total != want {
		t.Errorf("plan covers %d chunks, the image has %d", total, want)
	}
	if all[0].chunks[0].Digest != files[0].chunks[0].Digest {
		t.Error("the prefetch list does not come first")
	}
}

// Prefetch all fills the store, then reads need no source at all.
func TestPrefetchAllThenOffline(t *testing.T) {
	img, src, files := testImage(t)
	f, _ := newTestFetcher(t, 0)
	im := mustImage(t, f, img, src)
	im.StartPrefetch(context.Background(), PrefetchOptions{Mode: PrefetchAll, MaxRequest: 256 << 10})
	deadline := time.Now().Add(30 * time.Second)
	for im.PrefetchStatus().State == PrefetchRunning {
		if time.Now().After(deadline) {
			t.Fatal("prefetch did not finish")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if s := im.PrefetchStatus(); s.State != PrefetchDone || s.ChunksDone != s.ChunksTotal {
		t.Fatalf("prefetch %+v", s)
	}
	src.fail.Store(true)
	for p, want := range files {
		got, err := readFile(t, im, img, p)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s offline: %v", p, err)
		}
	}
}

// Prefetch keeps two requests on the wire (the link does not idle for a round trip between
// requests), and never more.
func TestPrefetchKeepsTwoRequestsOnTheWire(t *testing.T) {
	img, src, _ := testImage(t)
	src.delay = 20 * time.Millisecond
	f, _ := newTestFetcher(t, 0)
	im := mustImage(t, f, img, src)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	im.StartPrefetch(ctx, PrefetchOptions{Mode: PrefetchAll, MaxRequest: 128 << 10})
	for im.PrefetchStatus().State == PrefetchRunning && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	if s := im.PrefetchStatus(); s.State != PrefetchDone {
		t.Fatalf("prefetch %+v", s)
	}
	if got := src.most.Load(); got != prefetchInFlight {
		t.Errorf("at most %d requests on the wire at once over %d requests, want %d", got, src.requests.Load(), prefetchInFlight)
	}
}

// Prefetch fetches and verifies on nice-19 threads: it gives way to readers.
func TestPrefetchRunsAtLowPriority(t *testing.T) {
	img, src, _ := testImage(t)
	var mu sync.Mutex
	nices := map[int]int{}
	src.onRequest = func() {
		p, err := unix.Getpriority(unix.PRIO_PROCESS, unix.Gettid())
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			nices[-100]++
			return
		}
		nices[20-p]++ // getpriority(2) returns 20 - nice
	}
	f, _ := newTestFetcher(t, 0)
	im := mustImage(t, f, img, src)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	im.StartPrefetch(ctx, PrefetchOptions{Mode: PrefetchAll, MaxRequest: 128 << 10})
	for im.PrefetchStatus().State == PrefetchRunning && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(nices) != 1 || nices[lowprio.Nice] == 0 {
		t.Errorf("prefetch requests by thread nice value %v, want all at %d", nices, lowprio.Nice)
	}
}

// A source that is down leaves prefetch incomplete, not stuck.
func TestPrefetchIncompleteWhenSourceDown(t *testing.T) {
	img, src, _ := testImage(t)
	src.fail.Store(true)
	f, _ := newTestFetcher(t, 0)
	im := mustImage(t, f, img, src)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	im.StartPrefetch(ctx, PrefetchOptions{Mode: PrefetchAll})
	for im.PrefetchStatus().State == PrefetchRunning && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	if s := im.PrefetchStatus(); s.State != PrefetchIncomplete || s.Failed == 0 || s.Error == "" {
		t.Errorf("prefetch %+v, want incomplete with failures", s)
	}
}

// A reader streaming through a file gets its next window fetched ahead (while it reads the one
// before), every byte once; a reader that skips through the file gets no readahead.
func TestSequentialReaderReadsAhead(t *testing.T) {
	dir := t.TempDir()
	data := make([]byte, 6<<20)
	rng := rand.New(rand.NewPCG(3, 3))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	if err := os.MkdirAll(filepath.Join(dir, "src"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "src", "big"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	opts := builder.DefaultOptions()
	opts.ChunkSize = 0x10000
	blobs := filepath.Join(dir, "blobs")
	res, err := builder.Build(context.Background(), opts, blobs, []builder.Layer{builder.PathLayer(filepath.Join(dir, "src"))})
	if err != nil {
		t.Fatal(err)
	}
	img := res.Image
	chunks := img.Lookup("/big").Inode.Chunks
	cases := []struct {
		name      string
		every     int // the reader reads one chunk in every
		readahead bool
	}{
		{"streaming reader", 1, true},
		{"skipping reader", 8, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st, err := blobstore.Open(t.TempDir(), blobstore.DefaultOptions())
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			reg := prometheus.NewRegistry()
			f := NewFetcher(Options{Store: st, ReadWindow: 256 << 10, Metrics: reg})
			src := &fakeSource{inner: source.NewLocal(blobs), dir: blobs}
			im := mustImage(t, f, img, src)
			for i := 0; i < len(chunks); i += tc.every {
				c := chunks[i]
				got, err := im.ReadChunk(context.Background(), img.Blobs[c.BlobIndex], &c, nil)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, data[c.FileOffset:c.FileOffset+uint64(len(got))]) {
					t.Fatalf("chunk %d: wrong bytes", i)
				}
			}
			if err := f.Drain(context.Background()); err != nil {
				t.Fatal(err)
			}
			ahead := counterValue(t, reg, "dfnydus_fetch_bytes_total", "kind", "readahead")
			if (ahead > 0) != tc.readahead {
				t.Errorf("readahead fetched %v bytes, want readahead %v", ahead, tc.readahead)
			}
			var stored int64
			for _, c := range chunks {
				stored += int64(c.CompressedSize)
			}
			if tc.every == 1 && src.bytes.Load() > stored+gapLimit {
				t.Errorf("the source sent %d bytes for a file of %d stored bytes read once", src.bytes.Load(), stored)
			}
			if got, want := im.Stats().Fetches, src.requests.Load(); got != want {
				t.Errorf("stats count %d fetches, the source answered %d requests", got, want)
			}
		})
	}
}

// counterValue sums a counter's samples whose label has the value.
func counterValue(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}
