package fuse

import (
	"log"
	"os/exec"
	"strings"
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
	// MaxReadAhead is the kernel's readahead window for the mount. The FUSE handshake caps it at
	// 128 KiB; Mount raises it beyond that through /sys/class/bdi/<dev>/read_ahead_kb (see
	// SetReadAhead), and logs a warning if it cannot.
	MaxReadAhead int
	// MaxWrite is the largest READ request the kernel sends (go-fuse's MaxWrite, which also sets
	// max_read and max_pages).
	MaxWrite int
	// MaxBackground is how many asynchronous requests (readahead) the kernel keeps in flight per
	// mount: the chunk fetches that can run at once for sequential readers.
	MaxBackground int
	// FSName is the mount's source, shown in /proc/mounts and by df; no commas or white space.
	FSName string
	// AllowOther lets users other than the mounting one use the mount (needs user_allow_other for
	// non-root mounters).
	AllowOther bool
	// Debug logs every FUSE request and reply (at debug level, to Log).
	Debug bool
	// Log receives errors (failed chunk reads with the path and chunk) and go-fuse's diagnostics.
	// nil means zap.NewNop().
	Log *zap.Logger
	// Metrics, when set, receives the series dfnydus_fuse_reads_total, _read_bytes_total,
	// _read_seconds (histogram), _read_errors_total{kind="io"|"interrupted"},
	// _chunk_fetches_total and _chunk_cache_hits_total. Several mounts may share one registry;
	// their figures add up.
	Metrics *prometheus.Registry
	// ChunkCacheBytes bounds the memory holding fetched chunks for reads that come back for the
	// rest of a chunk (the kernel reads at most MaxWrite bytes at a time, often less). The
	// newest chunk is kept even when it alone is larger. A file's chunks leave the cache when its
	// last open handle is closed, so an idle mount holds none.
	ChunkCacheBytes int64
	// ReadParallelism bounds the chunk fetches one READ request runs at once.
	ReadParallelism int

	// Variants the benchmarks compare; not part of the API.
	noKeepCache bool // open without FOPEN_KEEP_CACHE
	syncRead    bool // go-fuse SyncRead: no CAP_ASYNC_READ
}

// Defaults. The read figures come from TestPerformanceReport (bench_test.go) on the project's
// test machine (2 cores shared with other work, kernel 6.18; figures move by +-25% between runs),
// reading a 256 MiB file of 1 MiB chunks held in memory, page cache dropped first. With these
// defaults: 1.8-2.2 GB/s, 0.93x a minimal go-fuse file served from a []byte with the same options.
//   - read_ahead_kb 1024 over the handshake's 128: 1.5-1.8x (1 MiB READ requests instead of
//     128 KiB); 4096 gains nothing more and makes a small read of a big file fetch up to four
//     extra chunks, so 1 MiB, one default chunk;
//   - MaxWrite 1 MiB over 128 KiB: 1.0-1.15x (it caps the request size readahead can use);
//   - asynchronous reads (go-fuse's default) over SyncRead: 1.1-1.15x from memory (1.5x with
//     128 KiB readahead), and more when chunks come over the network: readahead requests then
//     fetch the next chunks while the reader copies the current one;
//   - MaxBackground 64 vs 12: no difference from memory; 64 lets that many chunk fetches run at
//     once when chunks come over the network;
//   - FOPEN_KEEP_CACHE: a second open reads at page-cache speed (5-8 GB/s) instead of ~2 GB/s.
const (
	defaultTimeout         = time.Hour
	defaultMaxWrite        = 1 << 20
	defaultMaxReadAhead    = 1 << 20
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
// against the image's modes, owners and POSIX ACLs). Mount uses them; callers that mount
// themselves should too, and call SetReadAhead after mounting. The mount goes through fusermount3
// (or fusermount) when one is installed, else straight through mount(2) (DirectMountStrict,
// which needs root); either way it is nosuid and nodev, as fusermount makes it.
func GoFuseOptions(opts Options) *gofuse.Options {
	o := opts.withDefaults()
	entry, attr := o.EntryTimeout, o.AttrTimeout
	logger := goFuseLog(o.Log.Named("go-fuse"))
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
		// Replies come from memory, never from a file descriptor: go-fuse would still set up a
		// pipe and write every reply's header into it before falling back to writev (4% of a
		// whole-image read's CPU).
		DisableSplice: true,
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

// goFuseLog adapts l to go-fuse's *log.Logger: warnings, except the splice fallback go-fuse reports
// on every read larger than the kernel's pipe limit (it then writes the reply without splicing,
// which is what we want anyway), which goes to debug.
func goFuseLog(l *zap.Logger) *log.Logger {
	return log.New(goFuseWriter{l}, "", 0)
}

type goFuseWriter struct{ l *zap.Logger }

func (w goFuseWriter) Write(p []byte) (int, error) {
	msg := strings.TrimRight(string(p), "\n")
	if strings.HasPrefix(msg, "trySplice:") {
		w.l.Debug(msg)
	} else {
		w.l.Warn(msg)
	}
	return len(p), nil
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
