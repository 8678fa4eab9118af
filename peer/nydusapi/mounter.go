package nydusapi

import (
	"context"
)

// MountSpec is one RAFS instance to serve: a bootstrap, its configuration and where to mount it.
type MountSpec struct {
	// ID is the instance's name in the API: "/" for the mount nydusd makes at start (dedicated
	// mode), the request's mountpoint ("/SNAPSHOT_ID") in shared mode.
	ID string
	// Mountpoint is the host directory the image appears at.
	Mountpoint string
	// Bootstrap is the RAFS bootstrap file the snapshotter unpacked (image.boot).
	Bootstrap string
	Config    *MountConfig
	// PrefetchFiles are paths the snapshotter asked to prefetch (--prefetch-files); nil means the
	// image's own prefetch list.
	PrefetchFiles []string
}

// Mounter mounts and unmounts RAFS instances. LocalMounter does it in this process; DaemonMounter
// asks a running dfnydus daemon.
type Mounter interface {
	// Mount serves spec at spec.Mountpoint and returns once the mount answers. On error nothing is
	// left mounted.
	Mount(ctx context.Context, spec MountSpec) (Handle, error)
	// Unmount removes the mount and releases what it held.
	Unmount(ctx context.Context, h Handle) error
}

// Handle is one mounted instance.
type Handle interface {
	// Stats reports the instance's progress for the metrics endpoints.
	Stats() MountStats
	// Done is closed when the mount goes away, whoever unmounted it.
	Done() <-chan struct{}
}

// MountStats are the counters the metrics endpoints report for one instance.
type MountStats struct {
	Chunks, ChunksCached   int
	BytesTotal             int64
	BytesCached            int64
	ChunkReads             int64
	Fetches                int64
	BytesFetched           int64
	BytesPrefetched        int64
	PrefetchRequests       int64
	PrefetchState          string
	PrefetchDone           bool
	PrefetchWorkers        int
	PrefetchStarted        int64 // unix milliseconds, 0 if never
	PrefetchFinished       int64 // unix milliseconds, 0 while running
	StorePath              string
	VerifyFailures, Errors int64
}
