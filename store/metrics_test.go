package store

import (
	"testing"

	"github.com/dfnydus/dfnydus/rafs"
	"github.com/prometheus/client_golang/prometheus"
)

func TestMetricsFollowStats(t *testing.T) {
	reg := prometheus.NewRegistry()
	opts := testOptions()
	opts.Metrics = reg
	opts.Budget = 2 * 4096
	dir := t.TempDir()
	s := openStore(t, dir, opts)

	a, b, c := newChunk(rafs.DigestBlake3, 1, 4096), newChunk(rafs.DigestSHA256, 2, 4096), newChunk(rafs.DigestBlake3, 3, 4096)
	mustPut(t, s, a)
	mustPut(t, s, b)
	wantHit(t, s, a)
	mustPut(t, s, c) // evicts b
	wantMiss(t, s, b)
	flipByte(t, s.path(c.key))
	wantMiss(t, s, c) // repaired

	st := s.Stats()
	want := map[string]float64{
		"dfnydus_store_hits_total":     float64(st.Hits),
		"dfnydus_store_misses_total":   float64(st.Misses),
		"dfnydus_store_repaired_total": float64(st.Repaired),
		"dfnydus_store_evicted_total":  float64(st.Evicted),
		"dfnydus_store_bytes":          float64(st.Bytes),
		"dfnydus_store_chunks":         float64(st.Chunks),
		"dfnydus_store_disk_bytes":     float64(st.DiskBytes),
		"dfnydus_store_budget_bytes":   float64(opts.Budget),
	}
	if st.Hits != 1 || st.Misses != 2 || st.Repaired != 1 || st.Evicted != 1 || st.Chunks != 1 {
		t.Errorf("Stats = %+v", st)
	}
	got := gather(t, reg)
	for name, v := range want {
		if g, ok := got[name]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", name, g, ok, v)
		}
	}

	// Close unregisters, so a store reopened on the same registry registers again.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(gather(t, reg)); n != 0 {
		t.Errorf("%d store metrics left after Close", n)
	}
	s = openStore(t, dir, opts)
	if got := gather(t, reg)["dfnydus_store_chunks"]; got != 1 {
		t.Errorf("after reopen dfnydus_store_chunks = %v, want 1", got)
	}
	// A second store on the same registry is refused rather than sharing the names.
	if _, err := Open(t.TempDir(), opts); err == nil {
		t.Error("second store registered the same metrics")
	}
}

func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch {
			case m.GetCounter() != nil:
				out[mf.GetName()] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				out[mf.GetName()] = m.GetGauge().GetValue()
			}
		}
	}
	return out
}
