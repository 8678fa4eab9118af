package nydusapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/dfnydus/dfnydus/blobstore"
	"github.com/dfnydus/dfnydus/fuse"
	"github.com/dfnydus/dfnydus/internal/mountpoint"
	"github.com/dfnydus/dfnydus/kernelfs"
	"github.com/dfnydus/dfnydus/peer"
	"github.com/dfnydus/dfnydus/peer/daemon"
	"github.com/dfnydus/dfnydus/peer/source"
	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/bootstrap"
	"github.com/dfnydus/dfnydus/registry"
)

// ErrNotRAFS marks a bootstrap file that is not a RAFS v5/v6 bootstrap.
var ErrNotRAFS = errors.New("not a RAFS bootstrap")

// ErrAccessDenied marks a backend that refused the configured credentials.
var ErrAccessDenied = errors.New("backend refused access")

// DefaultCacheDir is where LocalMounter keeps chunk stores when a configuration names no work_dir.
const DefaultCacheDir = "/var/lib/dfnydus/nydusd"

// LocalOptions configure a LocalMounter.
type LocalOptions struct {
	Log *zap.Logger
	// CacheDir is used when a configuration has no cache work_dir; "" means DefaultCacheDir.
	CacheDir string
	// MemoryCache bounds the fetcher's in-memory chunk cache (bytes); 0 means peer.DefaultMemoryCache.
	MemoryCache int64
	// UserAgent is sent to registries.
	UserAgent string
	// FuseDebug logs every FUSE request.
	FuseDebug bool
	// AllowOther lets every user read the mounts (containers run as any uid).
	AllowOther bool
	// FSDriver says how the kernel sees the images, as the daemon's fsDriver does: fuse (our FUSE
	// file system; "" too), erofs (the kernel's EROFS over the blobs' views, RAFS v6 only) or auto
	// (erofs where the image and the kernel allow it, else fuse).
	FSDriver string
}

// LocalMounter mounts images in this process: the chunk store (bbolt, one process at a time),
// the fetcher (memory -> store -> source, verified) and the FUSE file system, as `dfnydus mount`
// does. Mounts whose configurations name the same store share one open store and fetcher.
type LocalMounter struct {
	opts LocalOptions
	mu   sync.Mutex
	// stores are the open stores by directory, each with a reference per mount.
	stores map[string]*sharedStore
}

type sharedStore struct {
	dir string
	// kernelRoot holds the work directories of the store's kernel-mode mounts (bootstrap copy,
	// view mount); the store's lock makes this process its only user.
	kernelRoot string
	st         *blobstore.Store
	fetcher    *peer.Fetcher
	refs       int
}

// NewLocalMounter returns a LocalMounter.
func NewLocalMounter(opts LocalOptions) *LocalMounter {
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	if opts.CacheDir == "" {
		opts.CacheDir = DefaultCacheDir
	}
	if opts.MemoryCache == 0 {
		opts.MemoryCache = peer.DefaultMemoryCache
	}
	return &LocalMounter{opts: opts, stores: map[string]*sharedStore{}}
}

// localHandle is a mounted instance of LocalMounter.
type localHandle struct {
	spec   MountSpec
	im     *peer.Image
	srv    server
	driver string // daemon.FSDriverFUSE or daemon.FSDriverEROFS
	img    *rafs.Image
	src    *swapSource
	shared *sharedStore
	stop   context.CancelFunc // stops prefetch
	done   chan struct{}
	once   sync.Once
	start  time.Time
}

// server is what serves a mount: our FUSE file system or kernelfs (EROFS over the views). Both
// unmount as umount(8) would, and Wait returns once the mount is gone however it went.
type server interface {
	Unmount() error
	Wait()
}

func (h *localHandle) Done() <-chan struct{} { return h.done }

// FSDriver reports how the mount is served: fuse or erofs.
func (h *localHandle) FSDriver() string { return h.driver }

func (h *localHandle) Stats() MountStats {
	s := h.im.Stats()
	ms := MountStats{Chunks: s.Chunks, ChunksCached: s.ChunksCached, BytesTotal: s.BytesTotal, BytesCached: s.BytesCached,
		ChunkReads: s.ChunkReads, Fetches: s.Fetches, BytesFetched: s.BytesFetched, BytesPrefetched: s.BytesPrefetched,
		PrefetchState: s.Prefetch.State, StorePath: h.shared.dir, VerifyFailures: s.VerifyFailures, Errors: s.ReadErrors,
		PrefetchRequests: int64(s.Prefetch.ChunksDone)}
	ms.PrefetchDone = s.Prefetch.State == peer.PrefetchDone
	if s.Prefetch.State != "" && s.Prefetch.State != peer.PrefetchIdle {
		ms.PrefetchStarted = h.start.UnixMilli()
		ms.PrefetchWorkers = 1
	}
	return ms
}

// storeKey names a mount's store and kernel-mode work root: the snapshot id from device.id, else
// a hash of the mountpoint.
func storeKey(spec MountSpec) string {
	key := strings.Trim(strings.ReplaceAll(spec.Config.DeviceID, "/", "_"), "_.")
	if key == "" {
		sum := sha256.Sum256([]byte(spec.Mountpoint))
		key = "mnt-" + hex.EncodeToString(sum[:8])
	}
	return key
}

// storeDir is where the store of a mount lives: CACHE/dfnydus-store/KEY, KEY naming the instance
// (the snapshot id from device.id, else a hash of the mountpoint) so that a restarted daemon finds
// the chunks its predecessor verified. One store per instance, because each dedicated nydusd is its
// own process and bbolt admits one process per store; a dfnydus daemon serving every mount will
// share one.
func (m *LocalMounter) storeDir(spec MountSpec) string {
	base := spec.Config.CacheDir
	if base == "" {
		base = m.opts.CacheDir
	}
	return filepath.Join(base, "dfnydus-store", storeKey(spec))
}

// kernelRoot is where the kernel-mode work directories of a store's mounts live:
// CACHE/dfnydus-kernel/KEY, next to the store.
func kernelRoot(storeDir string) string {
	return filepath.Join(filepath.Dir(filepath.Dir(storeDir)), "dfnydus-kernel", filepath.Base(storeDir))
}

func (m *LocalMounter) acquireStore(dir string) (*sharedStore, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s, ok := m.stores[dir]; ok {
		s.refs++
		return s, nil
	}
	sopts := blobstore.DefaultOptions()
	sopts.Log = m.opts.Log
	st, err := blobstore.Open(dir, sopts)
	if err != nil {
		return nil, fmt.Errorf("open chunk store %s: %w", dir, err)
	}
	// Holding the store (its lock) makes this process the only one mounting from it, so any
	// kernel-mode mount under its work root is one a killed predecessor left: its views are
	// dead and its EROFS mount would fail every read.
	kroot := kernelRoot(dir)
	if err := kernelfs.CleanWorkDirs(kroot, m.opts.Log); err != nil && !errors.Is(err, os.ErrNotExist) {
		m.opts.Log.Warn("clean kernel-mode leftovers", zap.String("dir", kroot), zap.Error(err))
	}
	s := &sharedStore{dir: dir, kernelRoot: kroot, st: st, refs: 1,
		fetcher: peer.NewFetcher(peer.Options{Store: st, MemoryCache: m.opts.MemoryCache, Log: m.opts.Log})}
	m.stores[dir] = s
	return s, nil
}

func (m *LocalMounter) releaseStore(s *sharedStore) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s.refs--
	if s.refs > 0 {
		return
	}
	delete(m.stores, s.dir)
	if err := s.st.Close(); err != nil {
		m.opts.Log.Warn("close chunk store", zap.String("dir", s.dir), zap.Error(err))
	}
}

// LoadBootstrap reads a RAFS bootstrap, failing with ErrNotRAFS for anything else.
func LoadBootstrap(path string) (*rafs.Image, error) {
	_, img, err := loadBootstrap(path)
	return img, err
}

// loadBootstrap is LoadBootstrap that also returns the bootstrap as stored (what kernel mode
// hands the kernel's EROFS).
func loadBootstrap(path string) ([]byte, *rafs.Image, error) {
	raw, img, err := bootstrap.Load(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil, fmt.Errorf("bootstrap %s: %w", path, err)
		}
		return nil, nil, fmt.Errorf("bootstrap %s: %w: %w", path, ErrNotRAFS, err)
	}
	return raw, img, nil
}

// Mount implements Mounter.
func (m *LocalMounter) Mount(ctx context.Context, spec MountSpec) (_ Handle, err error) {
	log := m.opts.Log.With(zap.String("id", spec.ID), zap.String("mountpoint", spec.Mountpoint))
	raw, img, err := loadBootstrap(spec.Bootstrap)
	if err != nil {
		return nil, err
	}
	// Refused before anything is set up: mounted, a blob the data path cannot read would fail
	// every read of it with EIO.
	if err := img.Unsupported(); err != nil {
		return nil, fmt.Errorf("bootstrap %s: %w", spec.Bootstrap, err)
	}
	if len(spec.PrefetchFiles) > 0 {
		img.Prefetch = spec.PrefetchFiles
	}
	inner, err := m.openSource(ctx, spec.Config.Backend, img, log)
	if err != nil {
		return nil, err
	}
	src := &swapSource{}
	src.cur.Store(&inner)
	defer func() {
		if err != nil {
			src.Close()
		}
	}()
	shared, err := m.acquireStore(m.storeDir(spec))
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			m.releaseStore(shared)
		}
	}()
	if err := prepareMountpoint(spec.Mountpoint, log); err != nil {
		return nil, err
	}
	name := spec.Config.Backend.Host + "/" + spec.Config.Backend.Repo
	if spec.Config.Backend.Type == BackendLocalfs {
		name = spec.Config.Backend.Dir
	}
	im, err := shared.fetcher.NewImage(name, img, src)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			im.Close()
		}
	}()
	var srv server
	driver := daemon.FSDriverFUSE
	ks, whyNot, err := daemon.KernelMount(m.opts.FSDriver, shared.kernelRoot, spec.Mountpoint, img, raw, im,
		kernelfs.Options{Log: log, Debug: m.opts.FuseDebug})
	switch {
	case err != nil:
		return nil, err
	case ks != nil:
		srv, driver = ks, daemon.FSDriverEROFS
	default:
		if whyNot != "" {
			log.Info("fs driver auto: serving through FUSE", zap.String("why_not_erofs", whyNot))
		}
		fopts := fuse.DefaultOptions()
		fopts.Log, fopts.Debug, fopts.AllowOther = log, m.opts.FuseDebug, m.opts.AllowOther
		fopts.FSName = "dfnydus"
		fs, err := fuse.Mount(spec.Mountpoint, img, im, fopts)
		if err != nil {
			return nil, fmt.Errorf("mount %s: %w", spec.Mountpoint, err)
		}
		srv = fs
	}
	pctx, stop := context.WithCancel(context.Background())
	h := &localHandle{spec: spec, img: img, im: im, srv: srv, driver: driver, src: src, shared: shared, stop: stop,
		done: make(chan struct{}), start: time.Now()}
	im.StartPrefetch(pctx, peer.PrefetchOptions{Mode: peer.PrefetchMode(spec.Config.Prefetch), Rate: spec.Config.PrefetchRate})
	go func() {
		srv.Wait()
		h.release(m)
	}()
	log.Info("mounted", zap.String("bootstrap", spec.Bootstrap), zap.String("source", name), zap.String("prefetch", spec.Config.Prefetch),
		zap.String("store", shared.dir), zap.String("fs_driver", driver))
	return h, nil
}

// release frees what the handle holds once its mount is gone.
func (h *localHandle) release(m *LocalMounter) {
	h.once.Do(func() {
		h.stop()
		h.im.Close()
		h.src.Close()
		m.releaseStore(h.shared)
		close(h.done)
	})
}

// Unmount implements Mounter.
func (m *LocalMounter) Unmount(ctx context.Context, hd Handle) error {
	h, ok := hd.(*localHandle)
	if !ok {
		return fmt.Errorf("unmount: handle %T is not from LocalMounter", hd)
	}
	h.stop()
	if err := h.srv.Unmount(); err != nil {
		// Busy (a process still holds a file): detach, so the mountpoint is free now and the
		// kernel drops the mount when the last user goes.
		m.opts.Log.Warn("unmount busy, detaching", zap.String("mountpoint", h.spec.Mountpoint), zap.Error(err))
		if derr := unix.Unmount(h.spec.Mountpoint, unix.MNT_DETACH); derr != nil {
			return fmt.Errorf("unmount %s: %w (detach: %w)", h.spec.Mountpoint, err, derr)
		}
	}
	select {
	case <-h.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("unmount %s: waiting for the file system to stop: %w", h.spec.Mountpoint, ctx.Err())
	}
}

// openSource builds the back-to-source reader for the backend and checks, before anything is
// mounted, that every blob the bootstrap names is there and readable with the credentials given:
// refused credentials fail the start (ErrAccessDenied) instead of every later read.
func (m *LocalMounter) openSource(ctx context.Context, b Backend, img *rafs.Image, log *zap.Logger) (source.Source, error) {
	var src source.Source
	var check func(ctx context.Context, id string) error
	switch b.Type {
	case BackendRegistry:
		o := registry.Options{PlainHTTP: b.PlainHTTP, Insecure: b.SkipVerify, Username: b.Username, Password: b.Password,
			Retries: -1, Logger: log, UserAgent: m.opts.UserAgent}
		c, err := registry.New(o)
		if err != nil {
			return nil, fmt.Errorf("registry backend %s: %w", b.Host, err)
		}
		ref := registry.Ref{Registry: b.Host, Repository: b.Repo}
		src = source.NewRegistry(c, ref)
		check = func(ctx context.Context, id string) error {
			ok, _, err := c.BlobExists(ctx, ref, digest.NewDigestFromEncoded(digest.SHA256, id))
			switch {
			case errors.Is(err, registry.ErrUnauthorized):
				return fmt.Errorf("%w: registry %s refused the credentials for %s: %w", ErrAccessDenied, b.Host, b.Repo, err)
			case err != nil:
				log.Warn("cannot check blob at start; reads will retry", zap.String("blob", id), zap.Error(err))
				return nil
			case !ok:
				return fmt.Errorf("blob %s is not in %s/%s: %w", id, b.Host, b.Repo, registry.ErrNotFound)
			}
			return nil
		}
	case BackendLocalfs:
		src = source.NewLocal(b.Dir)
		check = func(_ context.Context, id string) error {
			f, err := os.Open(filepath.Join(b.Dir, id))
			if err != nil {
				return fmt.Errorf("localfs backend: blob %s: %w", id, err)
			}
			return f.Close()
		}
	default:
		return nil, fmt.Errorf("%w: backend type %q", ErrUnsupported, b.Type)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for _, bl := range img.Blobs {
		if bl.CompressedSize == 0 && bl.ChunkCount == 0 {
			continue // a blob with no data (empty layer) is never read
		}
		g.Go(func() error { return check(gctx, bl.ID) })
	}
	if err := g.Wait(); err != nil {
		src.Close()
		return nil, err
	}
	if b.Timeout > 0 {
		src = &timeoutSource{Source: src, d: b.Timeout}
	}
	return source.NewRetrying(src, source.RetryOptions{Attempts: b.Retries + 1, Base: 200 * time.Millisecond, Logger: log}), nil
}

// UpdateAuth implements AuthUpdater: later reads use the new credentials once they are checked.
func (m *LocalMounter) UpdateAuth(ctx context.Context, hd Handle, username, password string) error {
	h, ok := hd.(*localHandle)
	if !ok {
		return fmt.Errorf("update auth: handle %T is not from LocalMounter", hd)
	}
	b := h.spec.Config.Backend
	if b.Type != BackendRegistry {
		return fmt.Errorf("%w: credentials of a %s backend", ErrUnsupported, b.Type)
	}
	b.Username, b.Password = username, password
	next, err := m.openSource(ctx, b, h.img, m.opts.Log)
	if err != nil {
		return fmt.Errorf("update auth: %w", err)
	}
	h.spec.Config.Backend = b
	prev := h.src.cur.Swap(&next)
	// Reads that already hold the old source finish with it; its client has nothing to release.
	_ = prev
	return nil
}

// swapSource is a Source whose underlying reader can be replaced (new credentials) while mounted.
type swapSource struct {
	cur atomic.Pointer[source.Source]
}

func (s *swapSource) String() string { return (*s.cur.Load()).String() }
func (s *swapSource) Close() error   { return (*s.cur.Load()).Close() }
func (s *swapSource) ReadRange(ctx context.Context, blobID string, off, n int64) (io.ReadCloser, error) {
	return (*s.cur.Load()).ReadRange(ctx, blobID, off, n)
}

// timeoutSource bounds each back-to-source request, body included (nydus's backend "timeout").
type timeoutSource struct {
	source.Source
	d time.Duration
}

func (t *timeoutSource) ReadRange(ctx context.Context, blobID string, off, n int64) (io.ReadCloser, error) {
	ctx, cancel := context.WithTimeout(ctx, t.d)
	rc, err := t.Source.ReadRange(ctx, blobID, off, n)
	if err != nil {
		cancel()
		return nil, err
	}
	return &cancelOnClose{ReadCloser: rc, cancel: cancel}, nil
}

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// prepareMountpoint creates the mountpoint if needed and clears a FUSE mount left there by a killed
// daemon (its reads fail with ENOTCONN), which is what a restarted daemon finds.
func prepareMountpoint(mp string, log *zap.Logger) error {
	// statfs, unlike stat, is never answered from the kernel's attribute cache: a dead FUSE
	// connection shows as ENOTCONN even when the root's attributes are still cached.
	var sfs unix.Statfs_t
	err := unix.Statfs(mp, &sfs)
	if errors.Is(err, unix.ENOTCONN) || errors.Is(err, unix.ECONNABORTED) {
		log.Warn("clearing a stale mount left by a killed daemon", zap.String("mountpoint", mp))
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("clear stale mount at %s: %w", mp, err)
		}
		err = unix.Statfs(mp, &sfs)
	}
	// A kernel-mode mount left by a killed daemon answers statfs (EROFS's metadata is in the
	// kernel) while every read of data not cached fails: its views are dead.
	if stale, cerr := kernelfs.ClearStale(mp); stale {
		log.Warn("clearing a stale kernel-mode mount left by a killed daemon", zap.String("mountpoint", mp))
		if cerr != nil {
			return fmt.Errorf("clear stale mount at %s: %w", mp, cerr)
		}
		err = unix.Statfs(mp, &sfs)
	}
	if errors.Is(err, unix.ENOENT) {
		err = os.MkdirAll(mp, 0o755)
	}
	if err != nil {
		return fmt.Errorf("mountpoint %s: %w", mp, err)
	}
	// nydus-snapshotter gives a fresh directory per snapshot (or the one a killed nydusd left,
	// cleared above), so a live mount there is never its own and is not forced over.
	if _, err := mountpoint.Check(mp, false); err != nil {
		return err
	}
	return nil
}
