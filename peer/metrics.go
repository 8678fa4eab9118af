package peer

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the fetcher's Prometheus series. Labels are bounded: source is one of a few kinds
// ("registry", "s3", "local") and kind is "ondemand" or "prefetch".
type metrics struct {
	fetchBytes    *prometheus.CounterVec
	fetchChunks   *prometheus.CounterVec
	fetchSeconds  *prometheus.HistogramVec
	verifyFailed  *prometheus.CounterVec
	fetchErrors   *prometheus.CounterVec
	memHits       prometheus.Counter
	storeHits     prometheus.Counter
	prefetchBytes prometheus.Counter
	repaired      prometheus.Counter
}

func newMetrics(reg *prometheus.Registry) *metrics {
	m := &metrics{
		fetchBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dfnydus_fetch_bytes_total",
			Help: "Compressed bytes fetched back to source."}, []string{"source", "kind"}),
		fetchChunks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dfnydus_fetch_chunks_total",
			Help: "Chunks fetched back to source and verified."}, []string{"source", "kind"}),
		fetchSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "dfnydus_fetch_seconds",
			Help: "Latency of one back-to-source range fetch.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)}, []string{"source", "kind"}),
		verifyFailed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dfnydus_chunk_verify_failures_total",
			Help: "Chunks whose fetched bytes did not match their digest."}, []string{"source"}),
		fetchErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dfnydus_fetch_errors_total",
			Help: "Failed back-to-source fetches."}, []string{"source", "kind"}),
		memHits: prometheus.NewCounter(prometheus.CounterOpts{Name: "dfnydus_chunk_memory_hits_total",
			Help: "Chunk reads served from the in-memory chunk cache."}),
		storeHits: prometheus.NewCounter(prometheus.CounterOpts{Name: "dfnydus_chunk_store_hits_total",
			Help: "Chunk reads served from the local store."}),
		prefetchBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "dfnydus_prefetch_bytes_total",
			Help: "Uncompressed bytes brought into the store by background prefetch."}),
		repaired: prometheus.NewCounter(prometheus.CounterOpts{Name: "dfnydus_store_repaired_total",
			Help: "Stored chunks dropped because their bytes no longer matched their digest (fetched again)."}),
	}
	if reg != nil {
		reg.MustRegister(m.fetchBytes, m.fetchChunks, m.fetchSeconds, m.verifyFailed, m.fetchErrors, m.memHits, m.storeHits, m.prefetchBytes, m.repaired)
	}
	return m
}
