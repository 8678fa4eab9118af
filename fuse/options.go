package fuse

import (
	"log"
	"os/exec"
	"syscall"
	"time"

	gofuse "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Options configure a mount. Start from DefaultOptions; zero fields take the defaults.
type Options struct {
	// EntryTimeout and AttrTimeout are how long the kernel may cache names and attributes. Images
	// are immutable, so they are long; the negative-lookup timeout is EntryTimeout too.
	EntryTimeout, AttrTimeout time.Duration
	// MaxReadAhead and MaxWrite are go-fuse's mount options of the same names: the kernel's
	// readahead window and the largest READ request. See DefaultOptions for the measurements.
	MaxReadAhead, MaxWrite int
	// MaxBackground is how many asynchronous requests (readahead) the kernel keeps in flight.
	MaxBackground int
	// FSName is the mount's source, shown in /proc/mounts and by df.
	FSName string
	// AllowOther lets users other than the mounting one use the mount (needs user_allow_other for
	// non-root mounters).
	AllowOther bool
	// Debug logs every FUSE request and reply (at debug level, to Log).
	Debug bool
	// Log receives errors (failed chunk reads with the path and chunk) and go-fuse's diagnostics.
	// nil means zap.NewNop().
	Log *zap.Logger
	// Metrics, when set, receives the dfnydus_fuse_* series (see metrics.go). Several mounts may
	// share one registry; their figures add up.
	Metrics *prometheus.Registry
	// ChunkCacheBytes bounds the memory holding fetched chunks for reads that come back for the
	// rest of a chunk (the kernel reads at most MaxWrite bytes at a time). The newest chunk is
	// kept even when it alone is larger.
	ChunkCacheBytes int64
	// ReadParallelism bounds the chunk fetches one READ request runs at once.
	ReadParallelism int

	// Variants the benchmarks compare; not part of the API.
	noKeepCache bool // open without FOPEN_KEEP_CACHE
	syncRead    bool // go-fuse SyncRead: no CAP_ASYNC_READ
}

// Defaults. The read-size figures were measured on this project's test machine (2 cores, kernel
// 6.18) with BenchmarkSequentialRead and TestBenchmarkFigures; see fuse/README.md.
const (
	defaultTimeout         = time.Hour
	defaultMaxWrite        = 1 << 20
	defaultMaxReadAhead    = 128 << 10
	defaultMaxBackground   = 64
	defaultFSName          = "dfnydus"
	defaultChunkCacheBytes = 16 << 20
	defaultReadParallelism = 8
	fsTypeName             = "rafs" // the mount type is fuse.rafs
)

// DefaultOptions returns the options Mount uses for zero fields.
func DefaultOptions() Options {
	return Options{
		EntryTimeout:    defaultTimeout,
		AttrTimeout:     defaultTimeout,
		MaxReadAhead:    defaultMaxReadAhead,
		MaxWrite:        defaultMaxWrite,
		MaxBackground:   defaultMaxBackground,
		FSName:          defaultFSName,
		Log:             zap.NewNop(),
		ChunkCacheBytes: defaultChunkCacheBytes,
		ReadParallelism: defaultReadParallelism,
	}
}

// withDefaults fills zero fields from DefaultOptions.
func (o Options) withDefaults() Options {
	d := DefaultOptions()
	if o.EntryTimeout <= 0 {
		o.EntryTimeout = d.EntryTimeout
	}
	if o.AttrTimeout <= 0 {
		o.AttrTimeout = d.AttrTimeout
	}
	if o.MaxReadAhead <= 0 {
		o.MaxReadAhead = d.MaxReadAhead
	}
	if o.MaxWrite <= 0 {
		o.MaxWrite = d.MaxWrite
	}
	if o.MaxBackground <= 0 {
		o.MaxBackground = d.MaxBackground
	}
	if o.FSName == "" {
		o.FSName = d.FSName
	}
	if o.Log == nil {
		o.Log = d.Log
	}
	if o.ChunkCacheBytes <= 0 {
		o.ChunkCacheBytes = d.ChunkCacheBytes
	}
	if o.ReadParallelism <= 0 {
		o.ReadParallelism = d.ReadParallelism
	}
	return o
}

// GoFuseOptions returns the go-fuse options that go with a root from NewRoot: timeouts, the root's
// inode number, and mount options "ro" and "default_permissions" (the kernel checks permissions
// against the image's modes and owners). Mount uses them; callers that mount themselves should too.
// The mount goes through fusermount3 (or fusermount) when one is installed, else straight through
// mount(2) (DirectMountStrict), which needs root.
func GoFuseOptions(opts Options) *gofuse.Options {
	o := opts.withDefaults()
	entry, attr := o.EntryTimeout, o.AttrTimeout
	logger := stdLog(o.Log.Named("go-fuse"), zapcore.WarnLevel)
	mo := fuse.MountOptions{
		Options:       []string{"ro", "default_permissions"},
		FsName:        o.FSName,
		Name:          fsTypeName,
		AllowOther:    o.AllowOther,
		MaxWrite:      o.MaxWrite,
		MaxReadAhead:  o.MaxReadAhead,
		MaxBackground: o.MaxBackground,
		Debug:         o.Debug,
		Logger:        logger,
		SyncRead:      o.syncRead,
		// The kernel enforces the image's POSIX ACLs (system.posix_acl_* xattrs), as it does
		// for the filesystem the image was built from.
		EnableAcl: true,
	}
	if !haveFusermount() {
		mo.DirectMountStrict = true
		// What fusermount does by default, plus read-only.
		mo.DirectMountFlags = syscall.MS_RDONLY | syscall.MS_NOSUID | syscall.MS_NODEV
	}
	if o.Debug {
		mo.Logger = stdLog(o.Log.Named("go-fuse"), zapcore.DebugLevel)
	}
	return &gofuse.Options{
		MountOptions:    mo,
		EntryTimeout:    &entry,
		AttrTimeout:     &attr,
		NegativeTimeout: &entry,
		RootStableAttr:  &gofuse.StableAttr{Ino: rootIno, Mode: fuse.S_IFDIR},
		NullPermissions: true, // modes are the image's, 0000 included
		Logger:          logger,
	}
}

// stdLog adapts l to the *log.Logger go-fuse writes to, at the given level.
func stdLog(l *zap.Logger, level zapcore.Level) *log.Logger {
	sl, err := zap.NewStdLogAt(l, level)
	if err != nil { // only for levels zap does not know
		return zap.NewStdLog(l)
	}
	return sl
}

// haveFusermount reports whether go-fuse can mount through a fusermount helper.
func haveFusermount() bool {
	for _, name := range []string{"fusermount3", "fusermount"} {
		if _, err := exec.LookPath(name); err == nil {
			return true
		}
	}
	return false
}
