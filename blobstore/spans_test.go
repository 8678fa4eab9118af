package blobstore

import (
	"math/rand/v2"
	"slices"
	"testing"
)

func TestSpanSetTable(t *testing.T) {
	type op struct {
		off, end int64
		origin   string
		remove   bool
	}
	tests := []struct {
		name  string
		ops   []op
		want  []span
		added []int64 // bytes add/remove reported per op
	}{
		{"merge adjacent", []op{{0, 10, "", false}, {10, 20, "", false}}, []span{{0, 20, ""}}, []int64{10, 10}},
		{"merge overlap", []op{{0, 10, "", false}, {5, 15, "", false}}, []span{{0, 15, ""}}, []int64{10, 5}},
		{"repeat is no-op", []op{{0, 10, "", false}, {0, 10, "", false}}, []span{{0, 10, ""}}, []int64{10, 0}},
		{"bridge", []op{{0, 5, "", false}, {10, 15, "", false}, {3, 12, "", false}}, []span{{0, 15, ""}}, []int64{5, 5, 5}},
		{"out of order", []op{{20, 30, "", false}, {0, 5, "", false}}, []span{{0, 5, ""}, {20, 30, ""}}, []int64{10, 5}},
		{"origins stay apart", []op{{0, 10, "a", false}, {10, 20, "b", false}}, []span{{0, 10, "a"}, {10, 20, "b"}}, []int64{10, 10}},
		{"origin overwritten", []op{{0, 10, "a", false}, {5, 15, "b", false}}, []span{{0, 5, "a"}, {5, 15, "b"}}, []int64{10, 5}},
		{"remove middle", []op{{0, 30, "", false}, {10, 20, "", true}}, []span{{0, 10, ""}, {20, 30, ""}}, []int64{30, 10}},
		{"remove across", []op{{0, 10, "", false}, {20, 30, "", false}, {5, 25, "", true}}, []span{{0, 5, ""}, {25, 30, ""}}, []int64{10, 10, 10}},
		{"remove nothing", []op{{0, 10, "", false}, {10, 20, "", true}}, []span{{0, 10, ""}}, []int64{10, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ss spanSet
			for i, o := range tt.ops {
				var n int64
				if o.remove {
					_, n = ss.remove(o.off, o.end, nil)
				} else {
					n = ss.add(o.off, o.end, o.origin)
				}
				if n != tt.added[i] {
					t.Errorf("op %d %+v: %d bytes, want %d", i, o, n, tt.added[i])
				}
			}
			if !slices.Equal(ss.s, tt.want) {
				t.Errorf("set %v, want %v", ss.s, tt.want)
			}
		})
	}
}

// TestSpanSetModel checks random adds and removes against a byte-per-byte model.
func TestSpanSetModel(t *testing.T) {
	const size = 300
	origins := []string{"", "a", "b"}
	for seed := range uint64(200) {
		r := rand.New(rand.NewPCG(seed, 1))
		var ss spanSet
		model := make([]string, size) // "-" = absent
		for i := range model {
			model[i] = "-"
		}
		withOrigins := seed%2 == 1
		for step := range 60 {
			off := r.Int64N(size)
			end := off + r.Int64N(size-off) + 1
			if r.IntN(3) == 0 {
				gone, n := ss.remove(off, end, []span{})
				var want int64
				for i := off; i < end; i++ {
					if model[i] != "-" {
						want++
					}
					model[i] = "-"
				}
				var got int64
				for _, g := range gone {
					got += g.end - g.off
				}
				if n != want || got != want {
					t.Fatalf("seed %d step %d: removed %d (%d in spans), want %d", seed, step, n, got, want)
				}
			} else {
				o := ""
				if withOrigins {
					o = origins[r.IntN(len(origins))]
				}
				n := ss.add(off, end, o)
				var want int64
				for i := off; i < end; i++ {
					if model[i] == "-" {
						want++
					}
					model[i] = o
				}
				if n != want {
					t.Fatalf("seed %d step %d: added %d, want %d", seed, step, n, want)
				}
			}
			// Invariants: sorted, disjoint, non-empty, same-origin neighbours merged, total right.
			var total int64
			for i, s := range ss.s {
				if s.off >= s.end || (i > 0 && (ss.s[i-1].end > s.off || (ss.s[i-1].end == s.off && ss.s[i-1].origin == s.origin))) {
					t.Fatalf("seed %d step %d: bad set %v", seed, step, ss.s)
				}
				total += s.end - s.off
			}
			if total != ss.total {
				t.Fatalf("total %d, counted %d", ss.total, total)
			}
			// Compare every byte and random queries.
			for i := int64(0); i < size; i++ {
				k := ss.search(i)
				got := "-"
				if k < len(ss.s) && ss.s[k].off <= i {
					got = ss.s[k].origin
				}
				if got != model[i] {
					t.Fatalf("seed %d step %d: byte %d is %q, want %q", seed, step, i, got, model[i])
				}
			}
			qo := r.Int64N(size)
			qe := qo + r.Int64N(size-qo) + 1
			var miss []Range
			var inSet int64
			cov := true
			for i := qo; i < qe; i++ {
				if model[i] == "-" {
					cov = false
					if len(miss) > 0 && miss[len(miss)-1].End() == i {
						miss[len(miss)-1].Len++
					} else {
						miss = append(miss, Range{i, 1})
					}
				} else {
					inSet++
				}
			}
			if got := ss.covers(qo, qe); got != cov {
				t.Fatalf("covers(%d,%d) = %v, want %v", qo, qe, got, cov)
			}
			if got := ss.missing(qo, qe, nil); !slices.Equal(got, miss) {
				t.Fatalf("missing(%d,%d) = %v, want %v", qo, qe, got, miss)
			}
			if got := ss.overlapBytes(qo, qe); got != inSet {
				t.Fatalf("overlapBytes(%d,%d) = %d, want %d", qo, qe, got, inSet)
			}
		}
	}
}
