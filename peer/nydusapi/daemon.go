package nydusapi

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/dfnydus/dfnydus/peer"
	"github.com/dfnydus/dfnydus/peer/daemon"
	"github.com/dfnydus/dfnydus/registry"
)

// DaemonOptions configure a DaemonMounter.
type DaemonOptions struct {
	Log *zap.Logger
	// AllowOther lets every user read the mounts (containers run as any uid); FuseDebug logs every
	// FUSE request (in the daemon's log).
	AllowOther, FuseDebug bool
	// FSDriver is passed on with every mount (fuse, erofs or auto); "" means the daemon's fsDriver.
	FSDriver string
	// PollInterval is how often each mount is checked for having gone away (the control API has
	// no watch call); 0 means DefaultPollInterval.
	PollInterval time.Duration
}

// DefaultPollInterval is how often a DaemonMounter asks the daemon whether a mount is still there.
const DefaultPollInterval = time.Second

// statTimeout bounds one Stat call to the daemon.
const statTimeout = 5 * time.Second

// DaemonMounter mounts through a running `dfnydus daemon` (its control API): the daemon owns the
// FUSE mounts, the one chunk store every image shares and, when it has a scheduler, P2P. This
// process (the nydusd the snapshotter launched) only asks for mounts and answers the snapshotter's
// API, so a SIGKILLed nydusd leaves the mount served: its successor adopts it.
type DaemonMounter struct {
	opts DaemonOptions
	c    *daemon.Client

	mu       sync.Mutex
	storeDir string // the daemon's chunk store, for the metrics; "" until asked
	handles  map[*daemonHandle]struct{}
}

// NewDaemonMounter returns a DaemonMounter over the daemon client c; Close closes c.
func NewDaemonMounter(c *daemon.Client, opts DaemonOptions) *DaemonMounter {
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = DefaultPollInterval
	}
	return &DaemonMounter{opts: opts, c: c, handles: map[*daemonHandle]struct{}{}}
}

// Close stops watching the mounts (they stay mounted in the daemon) and closes the client.
func (m *DaemonMounter) Close() error {
	m.mu.Lock()
	hs := make([]*daemonHandle, 0, len(m.handles))
	for h := range m.handles {
		hs = append(hs, h)
	}
	m.mu.Unlock()
	for _, h := range hs {
		h.stopWatch()
	}
	return m.c.Close()
}

// daemonHandle is a mount the daemon serves for this process.
type daemonHandle struct {
	m     *DaemonMounter
	spec  MountSpec
	info  daemon.MountInfo
	stats atomic.Pointer[MountStats] // the last stats the daemon gave
	done  chan struct{}
	once  sync.Once
	// cancel stops the watch; watched is closed when it has stopped.
	cancel  context.CancelFunc
	watched chan struct{}
}

func (h *daemonHandle) Done() <-chan struct{} { return h.done }

// Stats asks the daemon; if it does not answer, the last stats it gave.
func (h *daemonHandle) Stats() MountStats {
	ctx, cancel := context.WithTimeout(context.Background(), statTimeout)
	defer cancel()
	if _, err := h.poll(ctx); err != nil {
		h.m.opts.Log.Debug("stats of a daemon mount", zap.String("mountpoint", h.info.Mountpoint), zap.Error(err))
	}
	if s := h.stats.Load(); s != nil {
		return *s
	}
	return MountStats{StorePath: h.m.storeDir}
}

// poll asks the daemon for the mount's progress and reports whether the mount is gone: the daemon
// serves nothing there, serves another mount there (started at another time), or is gone itself.
func (h *daemonHandle) poll(ctx context.Context) (gone bool, err error) {
	info, err := h.m.c.Stat(ctx, h.info.Mountpoint)
	switch {
	case errors.Is(err, daemon.ErrNotMounted), errors.Is(err, daemon.ErrUnavailable):
		return true, err
	case err != nil:
		return false, err
	case !info.Started.Equal(h.info.Started):
		return true, fmt.Errorf("the daemon serves another mount at %s (started %s, ours %s)", h.info.Mountpoint, info.Started, h.info.Started)
	}
	if len(info.Images) > 0 {
		s := statsOf(info.Images[0], h.m.storeDir)
		h.stats.Store(&s)
	}
	return false, nil
}

// statsOf maps the daemon's stats of one image onto MountStats.
func statsOf(s peer.Stats, storeDir string) MountStats {
	ms := MountStats{Chunks: s.Chunks, ChunksCached: s.ChunksCached, BytesTotal: s.BytesTotal, BytesCached: s.BytesCached,
		ChunkReads: s.ChunkReads, Fetches: s.Fetches, BytesFetched: s.BytesFetched, BytesPrefetched: s.BytesPrefetched,
		PrefetchRequests: int64(s.Prefetch.ChunksDone), PrefetchState: s.Prefetch.State, StorePath: storeDir,
		VerifyFailures: s.VerifyFailures, Errors: s.ReadErrors}
	ms.PrefetchDone = s.Prefetch.State == peer.PrefetchDone
	if s.Prefetch.State != "" && s.Prefetch.State != peer.PrefetchIdle {
		ms.PrefetchWorkers = 1
	}
	return ms
}

// watch polls the daemon until the mount is gone or the watch is stopped; a gone mount closes done.
func (h *daemonHandle) watch(ctx context.Context) {
	defer close(h.watched)
	t := time.NewTicker(h.m.opts.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, statTimeout)
		gone, err := h.poll(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if gone {
			h.m.opts.Log.Warn("the daemon no longer serves the mount", zap.String("mountpoint", h.info.Mountpoint), zap.Error(err))
			h.finish()
			return
		}
	}
}

func (h *daemonHandle) stopWatch() {
	h.cancel()
	<-h.watched
}

// finish closes done once and forgets the handle.
func (h *daemonHandle) finish() {
	h.once.Do(func() {
		h.m.mu.Lock()
		delete(h.m.handles, h)
		h.m.mu.Unlock()
		close(h.done)
	})
}

// DaemonRequest is the daemon mount request for spec: a registry backend becomes the repository
// "host/repo" with spec's bootstrap and the backend's scheme and credentials, a localfs backend a
// bootstrap and blob directory. Settings the daemon's own configuration governs (timeouts, retries,
// digest_validate, --prefetch-files) are named in the second result.
func DaemonRequest(spec MountSpec, o DaemonOptions) (daemon.MountRequest, []string, error) {
	cfg := spec.Config
	mp, err := filepath.Abs(spec.Mountpoint)
	if err != nil {
		return daemon.MountRequest{}, nil, fmt.Errorf("mountpoint: %w", err)
	}
	boot, err := filepath.Abs(spec.Bootstrap)
	if err != nil {
		return daemon.MountRequest{}, nil, fmt.Errorf("bootstrap: %w", err)
	}
	req := daemon.MountRequest{Mountpoint: mp, Bootstrap: boot, Prefetch: cfg.Prefetch, PrefetchRate: cfg.PrefetchRate,
		AllowOther: o.AllowOther, FuseDebug: o.FuseDebug, FSDriver: o.FSDriver}
	if req.PrefetchRate == 0 {
		req.PrefetchRate = -1 // nydus's bandwidth_rate 0 is unlimited, not the daemon's default
	}
	var ignored []string
	b := cfg.Backend
	switch b.Type {
	case BackendRegistry:
		req.Ref = b.Host + "/" + b.Repo
		req.Registry = &daemon.RegistryOptions{PlainHTTP: b.PlainHTTP, Insecure: b.SkipVerify, Username: b.Username, Password: b.Password}
		if b.Timeout > 0 || b.Retries > 0 {
			ignored = append(ignored, "backend timeout and retry_limit (the daemon's source.retries apply)")
		}
	case BackendLocalfs:
		if req.BlobDir, err = filepath.Abs(b.Dir); err != nil {
			return daemon.MountRequest{}, nil, fmt.Errorf("localfs dir: %w", err)
		}
	default:
		return daemon.MountRequest{}, nil, fmt.Errorf("%w: backend type %q", ErrUnsupported, b.Type)
	}
	if cfg.DigestValidate {
		ignored = append(ignored, "digest_validate (the daemon's store.verifyReads applies)")
	}
	if len(spec.PrefetchFiles) > 0 {
		ignored = append(ignored, "--prefetch-files (the daemon prefetches the image's own list)")
	}
	return req, ignored, nil
}

// imageName is what the daemon reports as the image of req's mount (daemon.MountInfo.Image).
func imageName(req daemon.MountRequest) string {
	if req.Ref == "" {
		return req.Bootstrap
	}
	repo := req.Ref
	if r, err := registry.ParseRef(req.Ref); err == nil {
		repo = r.Context()
	}
	return daemon.RepoBootstrapName(repo, req.Bootstrap)
}

// adoptAttempts bounds how often Mount looks again for a mount the daemon says is in progress.
const adoptAttempts = 100

// Mount implements Mounter. If the daemon already serves the same image at spec.Mountpoint (this
// process replaces a nydusd that was killed), the mount is adopted; another image there is an error.
func (m *DaemonMounter) Mount(ctx context.Context, spec MountSpec) (Handle, error) {
	log := m.opts.Log.With(zap.String("id", spec.ID), zap.String("mountpoint", spec.Mountpoint))
	req, ignored, err := DaemonRequest(spec, m.opts)
	if err != nil {
		return nil, err
	}
	for _, ig := range ignored {
		log.Info("ignoring setting: the daemon's configuration governs it", zap.String("setting", ig))
	}
	if err := m.ensureStoreDir(ctx); err != nil {
		return nil, err
	}
	// (A mountpoint left by a killed process fails stat with ENOTCONN: the daemon clears it.)
	if _, err := os.Stat(req.Mountpoint); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(req.Mountpoint, 0o755); err != nil {
			return nil, fmt.Errorf("mountpoint: %w", err)
		}
	}
	var info daemon.MountInfo
	adopted := false
	for attempt := 0; ; attempt++ {
		info, err = m.c.Mount(ctx, req)
		if !errors.Is(err, daemon.ErrAlreadyMounted) {
			break
		}
		var found bool
		if info, found, err = m.find(ctx, req.Mountpoint); err != nil {
			break
		}
		if found {
			if want := imageName(req); info.Image != want {
				err = fmt.Errorf("%s: the dfnydus daemon serves %s there, not %s: %w", req.Mountpoint, info.Image, want, daemon.ErrAlreadyMounted)
			}
			adopted = err == nil
			break
		}
		// Its mount is still in progress (or went away meanwhile): ask again.
		if attempt == adoptAttempts {
			err = fmt.Errorf("%s: the dfnydus daemon keeps a mount there in progress: %w", req.Mountpoint, daemon.ErrAlreadyMounted)
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("mount %s through the dfnydus daemon: %w", req.Mountpoint, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err != nil {
		return nil, fmt.Errorf("mount %s through the dfnydus daemon: %w", req.Mountpoint, err)
	}
	wctx, cancel := context.WithCancel(context.Background())
	h := &daemonHandle{m: m, spec: spec, info: info, done: make(chan struct{}), cancel: cancel, watched: make(chan struct{})}
	m.mu.Lock()
	m.handles[h] = struct{}{}
	m.mu.Unlock()
	go h.watch(wctx)
	log.Info("mounted by the dfnydus daemon", zap.String("socket", m.c.Socket()), zap.String("image", info.Image),
		zap.String("source", info.Source), zap.Bool("p2p", info.P2P), zap.String("prefetch", info.Prefetch),
		zap.String("fs_driver", info.FSDriver), zap.Bool("adopted", adopted))
	return h, nil
}

// find returns the daemon's mount at mp, if it lists one.
func (m *DaemonMounter) find(ctx context.Context, mp string) (daemon.MountInfo, bool, error) {
	mounts, err := m.c.List(ctx)
	if err != nil {
		return daemon.MountInfo{}, false, err
	}
	for _, mi := range mounts {
		if mi.Mountpoint == mp {
			return mi, true, nil
		}
	}
	return daemon.MountInfo{}, false, nil
}

// ensureStoreDir asks the daemon once where its store is (the metrics report it).
func (m *DaemonMounter) ensureStoreDir(ctx context.Context) error {
	m.mu.Lock()
	known := m.storeDir != ""
	m.mu.Unlock()
	if known {
		return nil
	}
	v, err := m.c.Version(ctx)
	if err != nil {
		return fmt.Errorf("dfnydus daemon: %w", err)
	}
	m.mu.Lock()
	m.storeDir = filepath.Join(v.CacheDir, "store")
	m.mu.Unlock()
	return nil
}

// Unmount implements Mounter: the daemon unmounts. A mount that stays busy (a process still holds a
// file there) is detached lazily, as LocalMounter does: the daemon releases it when the kernel
// drops it.
func (m *DaemonMounter) Unmount(ctx context.Context, hd Handle) error {
	h, ok := hd.(*daemonHandle)
	if !ok {
		return fmt.Errorf("unmount: handle %T is not from DaemonMounter", hd)
	}
	h.stopWatch()
	defer h.finish()
	mp := h.info.Mountpoint
	err := m.c.Umount(ctx, mp)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, daemon.ErrNotMounted):
		m.opts.Log.Info("the daemon had already unmounted it", zap.String("mountpoint", mp))
		return nil
	case errors.Is(err, daemon.ErrUnavailable) || ctx.Err() != nil:
		return fmt.Errorf("unmount %s through the dfnydus daemon: %w", mp, err)
	}
	m.opts.Log.Warn("the daemon could not unmount, detaching", zap.String("mountpoint", mp), zap.Error(err))
	if derr := unix.Unmount(mp, unix.MNT_DETACH); derr != nil {
		return fmt.Errorf("unmount %s through the dfnydus daemon: %w (detach: %w)", mp, err, derr)
	}
	return nil
}
