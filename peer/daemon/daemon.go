package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/dfnydus/dfnydus/blobstore"
	"github.com/dfnydus/dfnydus/peer"
)

// Errors the daemon's methods wrap (and the control API carries as gRPC codes).
var (
	// ErrInvalidRequest: a request is malformed (InvalidArgument).
	ErrInvalidRequest = errors.New("invalid request")
	// ErrAlreadyMounted: the mountpoint is already served by this daemon, or a mount of it is in
	// progress (AlreadyExists).
	ErrAlreadyMounted = errors.New("already mounted by this daemon")
	// ErrNotMounted: the daemon serves nothing at the mountpoint (NotFound).
	ErrNotMounted = errors.New("not mounted by this daemon")
	// ErrNoP2P: preheat without a Distributor, i.e. without a scheduler (FailedPrecondition).
	ErrNoP2P = errors.New("no P2P: no scheduler is configured (set scheduler.addrs in the daemon's config)")
	// ErrClosed: the daemon is shutting down (Unavailable).
	ErrClosed = errors.New("the daemon is shutting down")
	// ErrRunning: another daemon answers on the control socket.
	ErrRunning = errors.New("a dfnydus daemon is already serving")
)

// Options are what a Daemon gets besides its Config.
type Options struct {
	// Log receives the daemon's logs; nil means none.
	Log *zap.Logger
	// Distributor is the P2P hook; nil means no P2P (unless NewDistributor makes one). The caller
	// owns it.
	Distributor Distributor
	// NewDistributor, when Distributor is nil, makes the Distributor once the daemon's store and
	// metrics registry exist (d.Store(), d.Metrics(), d.Config()). It may return nil (no P2P). The
	// daemon owns what it returns: Close closes it, after the mounts, if it is an io.Closer.
	NewDistributor func(ctx context.Context, d *Daemon) (Distributor, error)
	// Version is reported by the Version RPC and sent in the registry User-Agent.
	Version string
}

// MountRequest asks the daemon to mount an image. Paths are absolute (the daemon's working
// directory is not the caller's).
type MountRequest struct {
	Mountpoint string
	// Ref is an image reference in a registry, an s3://BUCKET/PREFIX location (with Bootstrap), or
	// "" for a local or NAS directory of blobs (Bootstrap and BlobDir). A registry repository
	// ("host/repo", a tag is ignored) with Bootstrap reads the bootstrap from that file and the
	// blobs from the repository: what nydus-snapshotter gives nydusd.
	Ref       string
	Bootstrap string
	BlobDir   string
	// Platform picks an index entry ("os/arch[/variant]"); "" means this host's.
	Platform string
	// Prefetch is off, files or all; "" means the config's prefetch.mode.
	Prefetch string
	// PrefetchRate limits prefetch in bytes/s: 0 means the config's prefetch.rate, negative means
	// unlimited.
	PrefetchRate int64
	// Registry adds to the config's registry options for this mount; nil means none.
	Registry *RegistryOptions
	// AllowOther lets other users see the mount (FUSE allow_other); FuseDebug logs every request.
	AllowOther, FuseDebug bool
	// Force mounts over a directory that already is a mount point (never over /proc, /sys, /dev).
	// The control API does not carry it: only in-process callers (a foreground mount) set it.
	Force bool
	// RecordTrace, when set, records the mount's start trace (the chunks it reads, in order of
	// first read) and writes it to this file once the mount is gone. In-process callers only (a
	// foreground mount, dfnydus profile): the control API does not carry it.
	RecordTrace string
	// NoTrace skips looking for a start trace referrer of a registry image.
	NoTrace bool
	// FSDriver is auto, erofs or fuse (Config.FSDriver); "" means the config's.
	FSDriver string
}

// MountInfo describes one mount of the daemon.
type MountInfo struct {
	Mountpoint string    `json:"mountpoint"`
	Image      string    `json:"image"`  // resolved reference, s3:// location, bootstrap path or RepoBootstrapName
	Source     string    `json:"source"` // registry, s3 or local
	APISocket  string    `json:"api_socket"`
	Started    time.Time `json:"started"`
	P2P        bool      `json:"p2p"`
	Prefetch   string    `json:"prefetch"`
	// FSDriver is the driver serving the mount: erofs or fuse.
	FSDriver string `json:"fs_driver"`
}

// VersionInfo says which daemon answers.
type VersionInfo struct {
	Version  string
	PID      int
	Started  time.Time
	CacheDir string
	P2P      bool
}

// Daemon is the long-running peer: it owns the chunk store (bbolt allows one process), the
// fetcher and every mount, and answers the control API.
type Daemon struct {
	cfg     Config
	opts    Options
	log     *zap.Logger
	reg     *prometheus.Registry
	store   *blobstore.Store
	fetcher *peer.Fetcher
	dist    Distributor
	ownDist bool
	metrics *http.Server
	started time.Time

	// closing is done when Close starts; mounts in progress are cancelled.
	closing     context.Context
	startClose  context.CancelFunc
	closeDone   chan struct{}
	closeResult error

	mu       sync.Mutex
	mounts   map[string]*mount
	pending  map[string]bool // mountpoints whose Mount is in progress
	closed   bool
	inflight sync.WaitGroup // Mount calls past the closed check
}

// New opens the store under cfg.CacheDir, the fetcher and a Prometheus registry of its own, and
// serves metrics on cfg.Metrics.Addr if set. Call Close when done.
func New(ctx context.Context, cfg Config, opts Options) (*Daemon, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg = cfg.resolved()
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	if opts.Version == "" {
		opts.Version = "dev"
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	sopts := blobstore.DefaultOptions()
	sopts.Budget, sopts.Log, sopts.Metrics = int64(cfg.Store.Budget), opts.Log, reg
	st, err := blobstore.Open(filepath.Join(cfg.CacheDir, "store"), sopts)
	if err != nil {
		if errors.Is(err, blobstore.ErrLocked) {
			return nil, fmt.Errorf("%w (is another dfnydus daemon or mount using cacheDir %s?)", err, cfg.CacheDir)
		}
		return nil, err
	}
	closing, startClose := context.WithCancel(context.Background())
	d := &Daemon{cfg: cfg, opts: opts, log: opts.Log, reg: reg, store: st, started: time.Now(),
		fetcher: peer.NewFetcher(peer.Options{Store: st, MemoryCache: int64(cfg.MemoryCache), VerifyReads: cfg.Store.VerifyReads,
			ReadWindow: readWindow(cfg.ReadWindow),
			Log:        opts.Log, Metrics: reg}),
		closing: closing, startClose: startClose, closeDone: make(chan struct{}),
		mounts: map[string]*mount{}, pending: map[string]bool{}}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "dfnydus_mounts", Help: "Images the daemon serves."},
		func() float64 {
			d.mu.Lock()
			defer d.mu.Unlock()
			return float64(len(d.mounts))
		}))
	fail := func(err error) (*Daemon, error) {
		d.shutdown()
		return nil, err
	}
	d.cleanKernelLeftovers()
	if cfg.Metrics.Addr != "" {
		ln, err := net.Listen("tcp", cfg.Metrics.Addr)
		if err != nil {
			return fail(fmt.Errorf("metrics.addr: %w", err))
		}
		d.metrics = &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = d.metrics.Serve(ln) }()
	}
	switch {
	case opts.Distributor != nil:
		d.dist = opts.Distributor
	case opts.NewDistributor != nil:
		dist, err := opts.NewDistributor(ctx, d)
		if err != nil {
			return fail(fmt.Errorf("P2P distributor: %w", err))
		}
		d.dist, d.ownDist = dist, true
	}
	if cfg.P2P() && d.dist == nil {
		d.log.Warn("scheduler.addrs is set but this daemon has no P2P distributor: every read goes back to source")
	}
	d.log.Info("daemon ready", zap.String("cache_dir", cfg.CacheDir), zap.Bool("p2p", d.dist != nil))
	return d, nil
}

// Config returns the daemon's configuration, with the advertised IP and hostname filled in.
func (d *Daemon) Config() Config { return d.cfg }

// Metrics returns the daemon's Prometheus registry (store, fetcher, FUSE and daemon series).
func (d *Daemon) Metrics() *prometheus.Registry { return d.reg }

// Store returns the blob store.
func (d *Daemon) Store() *blobstore.Store { return d.store }

// Fetcher returns the daemon's fetcher: the node's one verification point for blob bytes.
func (d *Daemon) Fetcher() *peer.Fetcher { return d.fetcher }

// Version says which daemon this is.
func (d *Daemon) Version() VersionInfo {
	return VersionInfo{Version: d.opts.Version, PID: os.Getpid(), Started: d.started, CacheDir: d.cfg.CacheDir, P2P: d.dist != nil}
}

// List returns the mounts, ordered by mountpoint.
func (d *Daemon) List() []MountInfo {
	d.mu.Lock()
	out := make([]MountInfo, 0, len(d.mounts))
	for _, m := range d.mounts {
		out = append(out, m.info)
	}
	d.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Mountpoint < out[j].Mountpoint })
	return out
}

// Stat returns the progress of the image mounted at mountpoint.
func (d *Daemon) Stat(mountpoint string) ([]peer.Stats, error) {
	m, err := d.lookup(mountpoint)
	if err != nil {
		return nil, err
	}
	return []peer.Stats{m.im.Stats()}, nil
}

// Info returns the mount at mountpoint.
func (d *Daemon) Info(mountpoint string) (MountInfo, error) {
	m, err := d.lookup(mountpoint)
	if err != nil {
		return MountInfo{}, err
	}
	return m.info, nil
}

func (d *Daemon) lookup(mountpoint string) (*mount, error) {
	mp := filepath.Clean(mountpoint)
	d.mu.Lock()
	defer d.mu.Unlock()
	m, ok := d.mounts[mp]
	if !ok {
		return nil, fmt.Errorf("%s: %w", mp, ErrNotMounted)
	}
	return m, nil
}

// Wait blocks until the mount at mountpoint is gone (Umount, an unmount from outside, or Close)
// or ctx is done. A mountpoint the daemon does not serve returns at once.
func (d *Daemon) Wait(ctx context.Context, mountpoint string) error {
	m, err := d.lookup(mountpoint)
	if err != nil {
		return nil
	}
	select {
	case <-m.gone:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Preheat asks the Distributor to preheat an image; without one it fails with ErrNoP2P.
func (d *Daemon) Preheat(ctx context.Context, req PreheatRequest) error {
	if d.dist == nil {
		return ErrNoP2P
	}
	if req.Ref == "" {
		return fmt.Errorf("%w: preheat needs an image reference", ErrInvalidRequest)
	}
	if _, err := ParsePlatform(req.Platform); err != nil {
		return err
	}
	req.Registry = d.cfg.Registry.merge(&req.Registry)
	if err := d.dist.Preheat(ctx, req); err != nil {
		return fmt.Errorf("preheat %s: %w", req.Ref, err)
	}
	return nil
}

// Close unmounts everything (a busy mount is detached lazily), stops prefetch, closes the
// Distributor it made, the metrics endpoint, the fetcher and the store. ctx bounds the wait for
// mounts to go away. Later calls return the first call's result.
func (d *Daemon) Close(ctx context.Context) error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		<-d.closeDone
		return d.closeResult
	}
	d.closed = true
	d.mu.Unlock()
	d.startClose()    // mounts in progress give up
	d.inflight.Wait() // and have undone what they did

	d.mu.Lock()
	mounts := make([]*mount, 0, len(d.mounts))
	for _, m := range d.mounts {
		mounts = append(mounts, m)
	}
	d.mu.Unlock()
	var errs []error
	var wg sync.WaitGroup
	var errMu sync.Mutex
	for _, m := range mounts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := d.unmount(ctx, m, true); err != nil {
				errMu.Lock()
				errs = append(errs, err)
				errMu.Unlock()
			}
		}()
	}
	wg.Wait()
	if c, ok := d.dist.(io.Closer); ok && d.ownDist {
		if err := c.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close P2P distributor: %w", err))
		}
	}
	// What reads started and left running (a whole-blob check, the rest of a piece) is kept only
	// if it ends before the store closes.
	if err := d.fetcher.Drain(ctx); err != nil {
		d.log.Warn("stopping before background verification ended: its bytes will be fetched again", zap.Error(err))
	}
	if err := d.shutdown(); err != nil {
		errs = append(errs, err)
	}
	d.closeResult = errors.Join(errs...)
	close(d.closeDone)
	d.log.Info("daemon stopped")
	return d.closeResult
}

// shutdown closes the metrics endpoint and the store (which makes the verified ranges durable).
func (d *Daemon) shutdown() error {
	if d.metrics != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = d.metrics.Shutdown(ctx)
		cancel()
	}
	if err := d.store.Close(); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	return nil
}

// readWindow maps the config's read window to the fetcher's option, where 0 means the default and
// a negative value "the chunk alone".
func readWindow(w ByteSize) int64 {
	if w == 0 {
		return -1
	}
	return int64(w)
}
