package store

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// registerMetrics registers the store's metrics on reg, all read from the counters behind Stats,
// and returns the function that unregisters them.
func (s *Store) registerMetrics(reg *prometheus.Registry) (func(), error) {
	counter := func(name, help string, v func() uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(v()) })
	}
	gauge := func(name, help string, v func() int64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return float64(v()) })
	}
	cs := []prometheus.Collector{
		counter("dfnydus_store_hits_total", "Chunk store Gets served from disk.", s.hits.Load),
		counter("dfnydus_store_misses_total", "Chunk store Gets that found no usable chunk.", s.misses.Load),
		counter("dfnydus_store_repaired_total", "Stored chunks removed because their file was missing, the wrong size or the wrong bytes.", s.repaired.Load),
		counter("dfnydus_store_evicted_total", "Stored chunks removed to stay within the budget.", s.evicted.Load),
		gauge("dfnydus_store_bytes", "Uncompressed bytes of the stored chunks.", s.bytes.Load),
		gauge("dfnydus_store_chunks", "Stored chunks.", s.chunks.Load),
		gauge("dfnydus_store_disk_bytes", "Disk space the stored chunk files occupy, block-rounded.", s.disk.Load),
		gauge("dfnydus_store_budget_bytes", "The store's byte budget; 0 = unlimited.", func() int64 { return s.opts.Budget }),
	}
	unregister := func(n int) {
		for _, c := range cs[:n] {
			reg.Unregister(c)
		}
	}
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			unregister(i)
			return nil, fmt.Errorf("store: register metrics: %w", err)
		}
	}
	return func() { unregister(len(cs)) }, nil
}
