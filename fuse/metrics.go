package fuse

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Error kinds, the only values of the "kind" label.
const (
	errKindIO          = "io"          // the chunk reader failed, or the file's chunk list is bad
	errKindInterrupted = "interrupted" // the read was interrupted (EINTR)
)

// metrics are one mount's Prometheus series. Labels are bounded: kind is errKindIO or
// errKindInterrupted. Series are shared by every mount registered on the same registry.
type metrics struct {
	reads       prometheus.Counter
	readBytes   prometheus.Counter
	readSeconds prometheus.Histogram
	readErrors  *prometheus.CounterVec
	fetches     prometheus.Counter
	cacheHits   prometheus.Counter
}

// newMetrics returns the series, registered on reg when it is not nil. On a registration error
// the series still work, unregistered.
func newMetrics(reg *prometheus.Registry) (*metrics, error) {
	m := &metrics{
		reads: prometheus.NewCounter(prometheus.CounterOpts{Name: "dfnydus_fuse_reads_total",
			Help: "FUSE READ requests served."}),
		readBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "dfnydus_fuse_read_bytes_total",
			Help: "Bytes returned by FUSE READ requests."}),
		readSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "dfnydus_fuse_read_seconds",
			Help:    "Latency of FUSE READ requests, from request to reply.",
			Buckets: prometheus.ExponentialBuckets(20e-6, 4, 10)}), // 20µs .. 5s
		readErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dfnydus_fuse_read_errors_total",
			Help: "FUSE READ requests that failed, by kind (io, interrupted)."}, []string{"kind"}),
		fetches: prometheus.NewCounter(prometheus.CounterOpts{Name: "dfnydus_fuse_chunk_fetches_total",
			Help: "Chunks requested from the chunk reader."}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{Name: "dfnydus_fuse_chunk_cache_hits_total",
			Help: "Chunk lookups served by the mount's chunk cache or joined to a fetch in flight."}),
	}
	if reg == nil {
		return m, nil
	}
	r := *m
	var err error
	r.reads, err = register(reg, m.reads)
	if err == nil {
		r.readBytes, err = register(reg, m.readBytes)
	}
	if err == nil {
		r.readSeconds, err = register(reg, m.readSeconds)
	}
	if err == nil {
		r.readErrors, err = register(reg, m.readErrors)
	}
	if err == nil {
		r.fetches, err = register(reg, m.fetches)
	}
	if err == nil {
		r.cacheHits, err = register(reg, m.cacheHits)
	}
	if err != nil {
		return m, fmt.Errorf("fuse metrics: %w", err)
	}
	return &r, nil
}

// register adds c to reg, or returns the collector another mount registered under the same name.
func register[C prometheus.Collector](reg *prometheus.Registry, c C) (C, error) {
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, err
}
