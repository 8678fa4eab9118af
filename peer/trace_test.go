package peer

import (
	"context"
	"testing"
	"time"

	"github.com/dfnydus/dfnydus/rafs"
)

// A start trace's chunks come first, in trace order, before the prefetch list and the rest, and
// no chunk is planned twice.
func TestPlanPutsTraceFirst(t *testing.T) {
	img, src, _ := testImage(t)
	f, _ := newTestFetcher(t, 0)
	im := mustImage(t, f, img, src)
	dd := img.Lookup("/d/d").Inode.Chunks
	first := []rafs.Chunk{dd[len(dd)-1], dd[0]} // backwards: two batches, in this order
	all := im.planWith(PrefetchAll, defaultMaxRequest, first)
	if len(all) < 2 || !all[0].first || !all[1].first || all[0].chunks[0].CompressedOffset != first[0].CompressedOffset ||
		all[1].chunks[0].CompressedOffset != first[1].CompressedOffset {
		t.Fatalf("the trace does not come first in its order: %+v", all[:2])
	}
	total := 0
	for _, b := range all {
		total += len(b.chunks)
	}
	if want := im.Stats().Chunks; total != want {
		t.Errorf("plan covers %d chunks, the image has %d", total, want)
	}
}

// First reads of trace chunks count as hits once the trace prefetch has them, misses before.
func TestTraceHitsAndMisses(t *testing.T) {
	img, src, _ := testImage(t)
	f, _ := newTestFetcher(t, 0)
	im := mustImage(t, f, img, src)
	dd := img.Lookup("/d/d").Inode.Chunks
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	im.StartPrefetch(ctx, PrefetchOptions{Mode: PrefetchFiles, First: dd, FirstName: "test"})
	deadline := time.Now().Add(10 * time.Second)
	for im.PrefetchStatus().State == PrefetchRunning && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	for i := range dd {
		if _, err := im.ReadChunk(context.Background(), img.Blobs[dd[i].BlobIndex], &dd[i], nil); err != nil {
			t.Fatal(err)
		}
	}
	tr := im.Stats().Prefetch.Trace
	if tr == nil || tr.Name != "test" || tr.Chunks != len(dd) || tr.Prefetched != len(dd) || tr.Hits != int64(len(dd)) || tr.Misses != 0 {
		t.Fatalf("trace status %+v, want %d chunks prefetched and hit", tr, len(dd))
	}

	f2, _ := newTestFetcher(t, 0)
	im2 := mustImage(t, f2, img, src)
	miss := img.Lookup("/d/b").Inode.Chunks[0]
	im2.startTrace([]rafs.Chunk{miss})
	for range 2 {
		if _, err := im2.ReadChunk(context.Background(), img.Blobs[miss.BlobIndex], &miss, nil); err != nil {
			t.Fatal(err)
		}
	}
	if tr := im2.trace.Load(); tr.misses.Load() != 1 || tr.hits.Load() != 0 {
		t.Fatalf("a first read before any prefetch: %d misses, %d hits; want 1 miss (the second read is not a first)", tr.misses.Load(), tr.hits.Load())
	}
}
