package store

import (
	"maps"
	"slices"
	"testing"

	"github.com/dfnydus/dfnydus/rafs"
)

const budgetChunk = 4096 // every chunk in these tests has this size

// budgetHarness drives a store whose chunks are numbered.
type budgetHarness struct {
	t      *testing.T
	s      *Store
	chunks map[int]testChunk
	unpins map[int][]func()
}

func (h *budgetHarness) chunk(i int) testChunk {
	c, ok := h.chunks[i]
	if !ok {
		c = newChunk(rafs.DigestBlake3, uint64(i), budgetChunk)
		h.chunks[i] = c
	}
	return c
}

func (h *budgetHarness) put(from, to int) {
	for i := from; i < to; i++ {
		mustPut(h.t, h.s, h.chunk(i))
	}
}

func (h *budgetHarness) get(is ...int) {
	for _, i := range is {
		wantHit(h.t, h.s, h.chunk(i))
	}
}

func (h *budgetHarness) pin(from, to int) {
	for i := from; i < to; i++ {
		h.unpins[i] = append(h.unpins[i], h.s.Pin(h.chunk(i).key))
	}
}

// unpinAll releases the pins in chunk order. The background goroutine may evict between two
// unpins, and releasing oldest first keeps what it picks independent of when it runs.
func (h *budgetHarness) unpinAll() {
	for _, i := range slices.Sorted(maps.Keys(h.unpins)) {
		for _, f := range h.unpins[i] {
			f()
		}
		delete(h.unpins, i)
	}
}

func TestBudget(t *testing.T) {
	tests := []struct {
		name     string
		budget   int // in chunks; 0 = unlimited
		run      func(h *budgetHarness)
		kept     []int // chunks that must be stored afterwards
		evicted  []int // chunks that must be gone
		chunks   int64
		overshot bool // pins hold the store over budget
	}{
		{
			name: "stays within budget, newest kept", budget: 8,
			run:  func(h *budgetHarness) { h.put(0, 32) },
			kept: seq(24, 32), evicted: seq(0, 24), chunks: 8,
		},
		{
			name: "unlimited keeps everything", budget: 0,
			run:  func(h *budgetHarness) { h.put(0, 32) },
			kept: seq(0, 32), chunks: 32,
		},
		{
			name: "recently read chunks survive", budget: 8,
			run: func(h *budgetHarness) {
				h.put(0, 8)
				h.get(2, 0, 1)
				h.put(8, 11)
			},
			kept: append([]int{0, 1, 2}, seq(6, 11)...), evicted: seq(3, 6), chunks: 8,
		},
		{
			name: "putting a stored chunk again counts as use", budget: 4,
			run: func(h *budgetHarness) {
				h.put(0, 4)
				h.put(0, 1)
				h.put(4, 5)
			},
			kept: []int{0, 2, 3, 4}, evicted: []int{1}, chunks: 4,
		},
		{
			name: "pinned chunks survive", budget: 8,
			run: func(h *budgetHarness) {
				h.put(0, 8)
				h.pin(0, 2) // the two least recently used
				h.put(8, 20)
			},
			kept: append([]int{0, 1}, seq(14, 20)...), evicted: seq(2, 14), chunks: 8,
		},
		{
			name: "pins hold the store over budget", budget: 8,
			run: func(h *budgetHarness) {
				h.put(0, 4)
				h.pin(10, 22) // pinned before they are stored, as a reader waiting for a fetch would
				h.put(10, 22)
			},
			kept: seq(10, 22), evicted: seq(0, 4), chunks: 12, overshot: true,
		},
		{
			name: "unpinned chunks go at the next eviction", budget: 8,
			run: func(h *budgetHarness) {
				h.pin(10, 22)
				h.put(10, 22)
				h.get(21)
				h.unpinAll()
				h.put(22, 23)
			},
			kept: seq(15, 23), evicted: seq(10, 15), chunks: 8,
		},
		{
			name: "a pin is counted", budget: 2,
			run: func(h *budgetHarness) {
				h.pin(0, 1)
				h.pin(0, 1)
				h.put(0, 1)
				h.unpins[0][0]()
				h.unpins[0][0]() // a second call of the same unpin does nothing
				h.put(1, 4)
			},
			kept: []int{0, 3}, evicted: []int{1, 2}, chunks: 2, // 0 is still pinned once
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := testOptions()
			opts.Budget = int64(tc.budget) * budgetChunk
			h := &budgetHarness{t: t, s: openStore(t, t.TempDir(), opts), chunks: map[int]testChunk{}, unpins: map[int][]func(){}}
			tc.run(h)
			settle(t, h.s)
			for _, i := range tc.kept {
				if !h.s.Has(h.chunk(i).key) {
					t.Errorf("chunk %d was evicted", i)
				}
			}
			for _, i := range tc.evicted {
				if h.s.Has(h.chunk(i).key) {
					t.Errorf("chunk %d was kept", i)
				}
			}
			st := h.s.Stats()
			if st.Chunks != tc.chunks {
				t.Errorf("%d chunks stored, want %d", st.Chunks, tc.chunks)
			}
			if over := opts.Budget > 0 && st.Bytes > opts.Budget; over != tc.overshot {
				t.Errorf("%d bytes stored with budget %d; over budget = %v, want %v", st.Bytes, opts.Budget, over, tc.overshot)
			}
			if want := uint64(len(h.chunks)) - uint64(st.Chunks); st.Evicted != want {
				t.Errorf("Evicted = %d, want %d", st.Evicted, want)
			}
			checkConsistent(t, h.s)
		})
	}
}

func TestLRUOrderSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	h := &budgetHarness{t: t, s: openStore(t, dir, testOptions()), chunks: map[int]testChunk{}, unpins: map[int][]func(){}}
	h.put(0, 8)
	h.get(5, 1, 6)
	if err := h.s.Close(); err != nil {
		t.Fatal(err)
	}

	opts := testOptions()
	opts.Budget = 4 * budgetChunk // Open evicts down to the four most recently used
	h.s = openStore(t, dir, opts)
	settle(t, h.s)
	for i := range 8 {
		want := i == 5 || i == 1 || i == 6 || i == 7
		if got := h.s.Has(h.chunk(i).key); got != want {
			t.Errorf("chunk %d stored = %v, want %v", i, got, want)
		}
	}
	checkConsistent(t, h.s)
}

func seq(from, to int) []int {
	var s []int
	for i := from; i < to; i++ {
		s = append(s, i)
	}
	return s
}
