package store

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Options configure a Store.
type Options struct {
	// Budget is the most chunk bytes the store keeps (file-system overhead not counted; see
	// Stats.DiskBytes); 0 means unlimited.
	Budget int64
	// VerifyReads re-hashes a chunk on every Get. Otherwise each chunk is hashed on its first Get in
	// this process, and later Gets check only its size.
	VerifyReads bool
	// Sync fsyncs each chunk file before it is indexed. Without it a power loss (not a process crash)
	// can leave indexed files with lost bytes, which Get then detects and repairs.
	Sync bool
	// FlushInterval is how often access times reach the index; 0 means DefaultFlushInterval.
	FlushInterval time.Duration
	// LockTimeout is how long Open waits for another Store on the same directory to close;
	// 0 means DefaultLockTimeout.
	LockTimeout time.Duration
	// Log receives recovery and repair reports; nil means zap.NewNop().
	Log *zap.Logger
	// Metrics, when not nil, receives the dfnydus_store_* metrics; Close unregisters them.
	Metrics *prometheus.Registry
}

// Defaults used when the corresponding Options field is zero.
const (
	DefaultFlushInterval = 10 * time.Second
	DefaultLockTimeout   = time.Second
)

// DefaultOptions returns options with Sync on, an unlimited budget and the default intervals.
func DefaultOptions() Options {
	return Options{Sync: true, FlushInterval: DefaultFlushInterval, LockTimeout: DefaultLockTimeout}
}

func (o Options) withDefaults() Options {
	if o.FlushInterval <= 0 {
		o.FlushInterval = DefaultFlushInterval
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = DefaultLockTimeout
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	return o
}
