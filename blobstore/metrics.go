package blobstore

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// registerMetrics registers the store's metrics on reg, all read from the counters behind Stats
// (no labels, so the series count is fixed), and returns the function that unregisters them.
func (s *Store) registerMetrics(reg prometheus.Registerer) (func(), error) {
	counter := func(name, help string, v func() float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, v)
	}
	gauge := func(name, help string, v func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, v)
	}
	i64 := func(f func() int64) func() float64 { return func() float64 { return float64(f()) } }
	u64 := func(f func() uint64) func() float64 { return func() float64 { return float64(f()) } }
	cs := []prometheus.Collector{
		gauge("dfnydus_blobstore_verified_bytes", "Verified blob bytes stored.", i64(s.verified.Load)),
		gauge("dfnydus_blobstore_pending_bytes", "Written but not yet verified blob bytes.", i64(s.pending.Load)),
		gauge("dfnydus_blobstore_disk_bytes", "Disk space the blob files occupy (st_blocks).", i64(s.diskBytes)),
		gauge("dfnydus_blobstore_budget_bytes", "The store's byte budget; 0 = unlimited.", func() float64 { return float64(s.opts.Budget) }),
		counter("dfnydus_blobstore_evicted_bytes_total", "Bytes evicted to stay within the budget.", i64(s.evicted.Load)),
		counter("dfnydus_blobstore_reads_total", "ReadAt and OpenRange calls.", u64(s.reads.Load)),
		counter("dfnydus_blobstore_read_misses_total", "ReadAt and OpenRange calls that found bytes missing.", u64(s.misses.Load)),
		counter("dfnydus_blobstore_writes_total", "WriteVerified and WritePending calls.", u64(s.writes.Load)),
	}
	unregister := func(n int) {
		for _, c := range cs[:n] {
			reg.Unregister(c)
		}
	}
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			unregister(i)
			return nil, fmt.Errorf("blobstore: register metrics: %w", err)
		}
	}
	return func() { unregister(len(cs)) }, nil
}
