package nydusapi

// Wire types of the nydusd HTTP API v1, as nydus-snapshotter v0.16.1 decodes them
// (pkg/daemon/types/types.go) and nydus serves them (api/src/http_endpoint_v1.rs).

// Daemon states (pkg/daemon/types DaemonState; nydus api DaemonState).
const (
	StateInit      = "INIT"
	StateReady     = "READY"
	StateRunning   = "RUNNING"
	StateDied      = "DIED"
	StateDestroyed = "DESTROYED"
	StateUnknown   = "UNKNOWN"
)

// BuildInfo is the "version" object of GET /api/v1/daemon.
type BuildInfo struct {
	PackageVer string `json:"package_ver"`
	GitCommit  string `json:"git_commit"`
	BuildTime  string `json:"build_time"`
	Profile    string `json:"profile"`
	Rustc      string `json:"rustc"`
}

// DaemonInfo is the body of GET /api/v1/daemon.
type DaemonInfo struct {
	ID      string    `json:"id"`
	Version BuildInfo `json:"version"`
	State   string    `json:"state"`
}

// ErrorMessage is the body of every error response.
type ErrorMessage struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// MountRequest is the body of POST /api/v1/mount: Config is the v1 configuration as a JSON string.
type MountRequest struct {
	FsType string `json:"fs_type"`
	Source string `json:"source"`
	Config string `json:"config"`
}

// Array lengths nydus reports and the snapshotter indexes into (pkg/metrics/types: 15 FUSE
// operations, Getattr..BatchForget; 8 block-size and 8 latency buckets).
const (
	nFops         = 15
	nBlockBuckets = 8
	nLatBuckets   = 8
	fopRead       = 4 // index of Read in the fop arrays
)

// FsMetrics is the body of GET /api/v1/metrics.
type FsMetrics struct {
	FilesAccountEnabled       bool     `json:"files_account_enabled"`
	AccessPatternEnabled      bool     `json:"access_pattern_enabled"`
	MeasureLatency            bool     `json:"measure_latency"`
	ID                        string   `json:"id"`
	DataRead                  uint64   `json:"data_read"`
	BlockCountRead            []uint64 `json:"block_count_read"`
	FopHits                   []uint64 `json:"fop_hits"`
	FopErrors                 []uint64 `json:"fop_errors"`
	FopCumulativeLatencyTotal []uint64 `json:"fop_cumulative_latency_total"`
	ReadLatencyDist           []uint64 `json:"read_latency_dist"`
	NrOpens                   uint64   `json:"nr_opens"`
}

// CacheMetrics is the body of GET /api/v1/metrics/blobcache.
type CacheMetrics struct {
	ID                           string   `json:"id"`
	UnderlyingFiles              []string `json:"underlying_files"`
	StorePath                    string   `json:"store_path"`
	PartialHits                  uint64   `json:"partial_hits"`
	WholeHits                    uint64   `json:"whole_hits"`
	Total                        uint64   `json:"total"`
	EntriesCount                 uint64   `json:"entries_count"`
	PrefetchDataAmount           uint64   `json:"prefetch_data_amount"`
	PrefetchRequestsCount        uint64   `json:"prefetch_requests_count"`
	PrefetchWorkers              uint     `json:"prefetch_workers"`
	PrefetchUnmergedChunks       uint64   `json:"prefetch_unmerged_chunks"`
	PrefetchCumulativeTimeMillis uint64   `json:"prefetch_cumulative_time_millis"`
	PrefetchBeginTimeSecs        uint64   `json:"prefetch_begin_time_secs"`
	PrefetchBeginTimeMillis      uint64   `json:"prefetch_begin_time_millis"`
	PrefetchEndTimeSecs          uint64   `json:"prefetch_end_time_secs"`
	PrefetchEndTimeMillis        uint64   `json:"prefetch_end_time_millis"`
	BufferedBackendSize          uint64   `json:"buffered_backend_size"`
	DataAllReady                 bool     `json:"data_all_ready"`
}
