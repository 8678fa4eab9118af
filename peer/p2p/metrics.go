package p2p

import "github.com/prometheus/client_golang/prometheus"

// Traffic labels: where a piece came from.
const (
	trafficParent = "parent"
	trafficSource = "source"
)

type metrics struct {
	pieces       *prometheus.CounterVec
	bytes        *prometheus.CounterVec
	served       prometheus.Counter
	servedRanges prometheus.Counter
	ranges       prometheus.Counter
	servedBytes  prometheus.Counter
	badPieces    prometheus.Counter
	parentErrors prometheus.Counter
	tasks        prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		pieces: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dfnydus_p2p_pieces_total",
			Help: "Pieces this peer downloaded, by where from (parent or source)."}, []string{"from"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dfnydus_p2p_piece_bytes_total",
			Help: "Bytes of pieces this peer downloaded, by where from (parent or source)."}, []string{"from"}),
		served:      prometheus.NewCounter(prometheus.CounterOpts{Name: "dfnydus_p2p_served_pieces_total", Help: "Pieces served to other peers."}),
		servedBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "dfnydus_p2p_served_bytes_total", Help: "Bytes of pieces and ranges served to other peers."}),
		servedRanges: prometheus.NewCounter(prometheus.CounterOpts{Name: "dfnydus_p2p_served_ranges_total",
			Help: "Ranges (the chunks a reader waits for, not whole pieces) served to other peers of ours."}),
		ranges: prometheus.NewCounter(prometheus.CounterOpts{Name: "dfnydus_p2p_parent_ranges_total",
			Help: "Ranges this peer downloaded from parents for waiting readers (their bytes count in dfnydus_p2p_piece_bytes_total{from=\"parent\"})."}),
		badPieces: prometheus.NewCounter(prometheus.CounterOpts{Name: "dfnydus_p2p_bad_pieces_total",
			Help: "Pieces from parents that failed verification."}),
		parentErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "dfnydus_p2p_parent_errors_total",
			Help: "Piece downloads from parents that failed (unreachable, timed out, refused)."}),
		tasks: prometheus.NewGauge(prometheus.GaugeOpts{Name: "dfnydus_p2p_tasks", Help: "Tasks this peer knows."}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.pieces, m.bytes, m.served, m.servedRanges, m.ranges, m.servedBytes, m.badPieces, m.parentErrors, m.tasks} {
			_ = reg.Register(c)
		}
	}
	return m
}
