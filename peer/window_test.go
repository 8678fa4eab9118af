package peer

import (
	"testing"
	"time"

	"github.com/dfnydus/dfnydus/blobstore"
	"github.com/dfnydus/dfnydus/rafs"
)

func TestReadWindowSize(t *testing.T) {
	const limit = 1 << 20
	const chunk = 16 << 10
	cases := []struct {
		name string
		// every is how many of the window's chunks readers ask for: 1 = all of them, 20 = one in 20,
		// 0 = none.
		every int
		fetch int64         // bytes windows bring
		rtt   time.Duration // link: time to first byte
		rate  float64       // link: bytes/s (0: never measured)
		want  func(int64) bool
		means string
	}{
		{"no history yet, link unmeasured", 20, limit / 4, 0, 0, eq(2 * rateSampleMin), "just enough to measure the link"},
		{"no history yet, slow link", 20, limit / 4, 2 * time.Millisecond, 12.5e6, between(24_000, 26_000), "a round trip of the link"},
		{"no history yet, fast link", 20, limit / 4, 2 * time.Millisecond, 1e9, eq(limit), "the configured window"},
		{"windows read in full", 1, 8 * limit, 2 * time.Millisecond, 12.5e6, eq(limit), "the configured window"},
		{"one chunk in twenty read, slow link", 20, 8 * limit, 2 * time.Millisecond, 12.5e6, between(25_000, 110_000), "the share read of the window, at least a round trip of the link"},
		{"nothing read, slow link", 0, 8 * limit, 2 * time.Millisecond, 12.5e6, between(24_000, 26_000), "a round trip of the link"},
		{"one chunk in twenty read, fast link", 20, 8 * limit, 2 * time.Millisecond, 1e9, eq(limit), "the configured window"},
		{"nothing read, link never measured", 0, 8 * limit, 0, 0, eq(0), "no window"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var w readWindow
			if tc.rate > 0 {
				w.observe(tc.rtt, int64(tc.rate), time.Second)
			}
			for i := int64(0); i*chunk < tc.fetch; i++ {
				off := uint64(i * chunk)
				w.brought(off, chunk)
				if tc.every > 0 && i%int64(tc.every) == 0 {
					w.asked(off)
				}
			}
			if got := w.size(limit); !tc.want(got) {
				t.Errorf("window %d bytes, want %s", got, tc.means)
			}
		})
	}
}

// The round trip the window is sized on is the lowest recent time to first byte: requests queued
// behind others on a busy link must not make windows grow (larger windows queue longer).
func TestReadWindowIgnoresQueueing(t *testing.T) {
	const limit = 1 << 20
	var w readWindow
	w.observe(2*time.Millisecond, 12_500_000, time.Second) // 100 Mbit/s, 2 ms
	for range rttSamples - 1 {
		w.observe(80*time.Millisecond, 12_500_000, time.Second) // queued behind a window
	}
	if got := w.size(limit); got < 24_000 || got > 26_000 {
		t.Errorf("window %d bytes after queued requests, want a round trip of 2 ms at 100 Mbit/s (25 kB)", got)
	}
	for range rttSamples {
		w.observe(100*time.Millisecond, 12_500_000, time.Second)
	}
	if got := w.size(limit); got != limit {
		t.Errorf("window %d bytes once every recent round trip took 100 ms, want the configured %d", got, limit)
	}
}

func eq(n int64) func(int64) bool { return func(v int64) bool { return v == n } }

func between(lo, hi int64) func(int64) bool { return func(v int64) bool { return v >= lo && v <= hi } }

func TestReadWindowCountsAChunkOnce(t *testing.T) {
	var w readWindow
	w.brought(0, 100)
	w.brought(0, 100) // brought again (evicted, fetched again): still one chunk to be read
	w.asked(0)
	w.asked(0)
	if w.fetched != 100 || w.used != 100 {
		t.Errorf("fetched %v used %v, want 100 and 100", w.fetched, w.used)
	}
}

// Whoever brings bytes verifies first the chunks readers wait for: Awaited names them, and not
// the chunks only a prefetch or a read window asked for.
func TestAwaitedNamesTheChunksReadersWaitFor(t *testing.T) {
	fx := newBlobFixture(t)
	if len(fx.chunks) < 4 {
		t.Fatalf("the test image has %d chunks, want 4 or more", len(fx.chunks))
	}
	c0, c1, c2 := fx.chunks[0], fx.chunks[1], fx.chunks[2]
	span := func(c rafs.Chunk) blobstore.Range {
		return blobstore.Range{Off: int64(c.CompressedOffset), Len: int64(c.CompressedSize)}
	}
	all := func() []blobstore.Range { return fx.bl.Awaited(0, fx.bl.size) }

	fx.bl.claim([]rafs.Chunk{c0, c1}) // a prefetch
	if got := all(); len(got) != 0 {
		t.Fatalf("with only a prefetch in flight, Awaited = %v, want none", got)
	}
	fx.bl.join(&c1) // a reader joins the prefetch's flight of c1
	if got, want := all(), []blobstore.Range{span(c1)}; !equalRanges(got, want) {
		t.Fatalf("a reader waits for chunk 1: Awaited = %v, want %v", got, want)
	}
	fx.bl.join(&c2) // a reader leads the fetch of c2 (and its window after it)
	var n int64
	got := all()
	for _, r := range got {
		n += r.Len
	}
	if end := span(c2).Off + span(c2).Len; n != span(c1).Len+span(c2).Len || got[len(got)-1].Off+got[len(got)-1].Len != end {
		t.Fatalf("a reader leads chunk 2: Awaited = %v, want chunks 1 and 2 (%v, %v), not the window after them", got, span(c1), span(c2))
	}
	if got := fx.bl.Awaited(span(c1).Off+1, span(c1).Len); len(got) != 0 {
		t.Fatalf("a range cutting chunk 1 in two: Awaited = %v, want none (a partial chunk cannot be verified)", got)
	}
}

// ChunkBytes keeps the bytes chunks cover and leaves out what lies between them.
func TestChunkBytesLeavesOutGaps(t *testing.T) {
	fx := newBlobFixture(t)
	got := fx.bl.ChunkBytes([]blobstore.Range{{Off: 0, Len: fx.bl.size}})
	var want []blobstore.Range
	for _, c := range fx.chunks {
		co, ce := int64(c.CompressedOffset), int64(c.CompressedOffset)+int64(c.CompressedSize)
		if k := len(want); k > 0 && want[k-1].Off+want[k-1].Len >= co {
			want[k-1].Len = max(want[k-1].Len, ce-want[k-1].Off)
			continue
		}
		want = append(want, blobstore.Range{Off: co, Len: ce - co})
	}
	if !equalRanges(got, want) {
		t.Fatalf("ChunkBytes(whole blob) = %v, want the chunk runs %v", got, want)
	}
	var covered int64
	for _, r := range got {
		covered += r.Len
	}
	if covered >= fx.bl.size {
		t.Fatalf("the chunks cover all %d bytes: the fixture has no gap (blob.meta, ToC) to leave out", fx.bl.size)
	}
	// A range that starts inside a chunk is clipped, not widened.
	c := fx.chunks[1]
	in := blobstore.Range{Off: int64(c.CompressedOffset) + 1, Len: int64(c.CompressedSize) - 1}
	if got := fx.bl.ChunkBytes([]blobstore.Range{in}); !equalRanges(got, []blobstore.Range{in}) {
		t.Fatalf("ChunkBytes(%v) = %v, want it unchanged", in, got)
	}
}

// A readahead mark starts the next window only while windows are being read through, and once.
func TestReadaheadMark(t *testing.T) {
	const chunk = 16 << 10
	cases := []struct {
		name    string
		every   int   // readers ask for one in every chunks windows brought (0: none)
		fetched int64 // bytes windows brought before the mark is reached
		mark    bool  // the chunk asked for is a mark
		want    bool
	}{
		{"windows read through", 1, 1 << 20, true, true},
		{"windows read through, not a mark", 1, 1 << 20, false, false},
		{"too little history yet", 1, windowHistoryMin / 2, true, false},
		{"windows mostly unread (a start)", 8, 1 << 20, true, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var w readWindow
			for i := int64(0); i*chunk < tc.fetched; i++ {
				w.brought(uint64(i*chunk), chunk)
				if tc.every > 0 && i%int64(tc.every) == 0 {
					w.asked(uint64(i * chunk))
				}
			}
			const at, end = 1 << 30, 1<<30 + 4*chunk
			w.brought(at, chunk)
			if tc.mark {
				w.mark(at, end)
			}
			next, ahead := w.asked(at)
			if ahead != tc.want || (ahead && next != end) {
				t.Fatalf("asked the chunk: next %d ahead %v, want ahead %v (next %d)", next, ahead, tc.want, int64(end))
			}
			if _, again := w.asked(at); again {
				t.Error("the same mark started the next window twice")
			}
		})
	}
}
