package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/dfnydus/dfnydus/fuse"
	"github.com/dfnydus/dfnydus/internal/mountpoint"
	"github.com/dfnydus/dfnydus/kernelfs"
	"github.com/dfnydus/dfnydus/peer"
	"github.com/dfnydus/dfnydus/peer/source"
	"github.com/dfnydus/dfnydus/peer/trace"
	"github.com/dfnydus/dfnydus/rafs"
)

// mount is one served image and everything that lives as long as it does.
type mount struct {
	info         MountInfo
	oi           *openedImage  // its src is the Retrying back-to-source reader
	attached     source.Source // the Distributor's source, or nil
	im           *peer.Image
	srv          server
	api          *peer.APIServer
	stopPrefetch context.CancelFunc
	log          *zap.Logger
	// dev is the mount's device ("major:minor" in /proc/self/mountinfo), to tell whether the
	// mountpoint still shows this mount.
	dev     string
	apiOnce sync.Once
	// rec records the start trace when the request asked (RecordTrace), written to recordPath
	// once the mount is gone.
	rec        *trace.Recorder
	recordPath string

	// umu serialises unmounts; unmounted is set once one succeeded.
	umu       sync.Mutex
	unmounted bool
	// gone is closed once the mount is gone and everything it held is released.
	gone chan struct{}
}

// sourceRetryBase is the backoff before the first retry of a back-to-source read.
const sourceRetryBase = 200 * time.Millisecond

// Mount serves an image at req.Mountpoint and returns once the mount answers. A mount that fails
// leaves nothing behind: no mount, no API socket, no entry, nothing attached. ctx bounds the mount
// itself (opening the image, attaching to P2P), not the mount's life.
func (d *Daemon) Mount(ctx context.Context, req MountRequest) (MountInfo, error) {
	req, err := checkRequest(req)
	if err != nil {
		return MountInfo{}, err
	}
	mp := req.Mountpoint
	shadowed, err := d.reserve(mp)
	if err != nil {
		return MountInfo{}, err
	}
	defer d.inflight.Done()
	if shadowed != nil {
		// Its API socket path is the new mount's.
		shadowed.closeAPI()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(d.closing, cancel)()

	m, err := d.mount(ctx, req)
	d.mu.Lock()
	delete(d.pending, mp)
	if err == nil && d.closed {
		err = ErrClosed
		d.mu.Unlock()
		m.undo()
	} else {
		if err == nil {
			d.mounts[mp] = m
		}
		d.mu.Unlock()
	}
	if err != nil {
		d.log.Warn("mount failed", zap.String("mountpoint", mp), logSource(req), zap.Error(err))
		return MountInfo{}, err
	}
	go d.watch(m)
	m.log.Info("mounted", zap.String("source", m.info.Source), zap.Bool("p2p", m.info.P2P), zap.String("prefetch", m.info.Prefetch),
		zap.String("fs_driver", m.info.FSDriver))
	return m.info, nil
}

// reserve marks mp as being mounted; the caller must call d.inflight.Done. A mount of this daemon
// at mp that the mountpoint no longer shows is dropped from the table and returned: it was
// unmounted from outside while something still uses it (an overlay whose lower layer it is holds a
// private clone of it: nydus-snapshotter unmounts a killed nydusd's mountpoint that way). It goes
// on serving its users until the kernel drops it (watch releases it then), and mp can be mounted
// anew.
func (d *Daemon) reserve(mp string) (shadowed *mount, _ error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.closed:
		return nil, ErrClosed
	case d.pending[mp]:
		return nil, fmt.Errorf("%s: %w (a mount is in progress)", mp, ErrAlreadyMounted)
	case d.mounts[mp] != nil:
		old := d.mounts[mp]
		if !old.shadowed() {
			return nil, fmt.Errorf("%s: %w", mp, ErrAlreadyMounted)
		}
		old.log.Warn("the mountpoint no longer shows this mount (unmounted from outside while in use): it serves its users until they go; mounting anew")
		delete(d.mounts, mp)
		shadowed = old
	}
	d.pending[mp] = true
	d.inflight.Add(1)
	return shadowed, nil
}

// shadowed reports whether the mountpoint shows another file system than this mount's (it was
// unmounted from outside, and something else or nothing is there).
func (m *mount) shadowed() bool {
	dev, err := mountDevice(m.info.Mountpoint)
	return err == nil && m.dev != "" && dev != m.dev
}

// mountDevice returns the device ("major:minor") of the topmost mount at mp in this process's mount
// namespace, or "" when nothing is mounted there (/proc/self/mountinfo: ID PARENT MAJ:MIN ROOT
// MOUNTPOINT ..., the mount point with space, tab, newline and backslash octal-escaped).
func mountDevice(mp string) (string, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("mount table: %w", err)
	}
	esc := strings.NewReplacer("\\", "\\134", " ", "\\040", "\t", "\\011", "\n", "\\012").Replace(mp)
	dev := ""
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == esc {
			dev = f[2] // later lines are mounted on top of earlier ones
		}
	}
	return dev, nil
}

// closeAPI closes the mount's API socket once.
func (m *mount) closeAPI() {
	m.apiOnce.Do(func() {
		if m.api != nil {
			m.api.Close()
		}
	})
}

// prefetchFor returns the request's prefetch mode and rate, falling back to the config.
func (d *Daemon) prefetchFor(req MountRequest) (peer.PrefetchMode, int64) {
	mode := req.Prefetch
	if mode == "" {
		mode = d.cfg.Prefetch.Mode
	}
	rate := req.PrefetchRate
	switch {
	case rate == 0:
		rate = int64(d.cfg.Prefetch.Rate)
	case rate < 0:
		rate = 0
	}
	m, _ := parsePrefetch(mode) // checked by checkRequest and Validate
	return m, rate
}

func parsePrefetch(s string) (peer.PrefetchMode, error) {
	m, err := peer.ParsePrefetchMode(s)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	return m, nil
}

// mount does the work of Mount; on error everything done so far is undone.
func (d *Daemon) mount(ctx context.Context, req MountRequest) (_ *mount, err error) {
	mp := req.Mountpoint
	mode, rate := d.prefetchFor(req)
	m := &mount{log: d.log.With(zap.String("mountpoint", mp)), gone: make(chan struct{})}
	defer func() {
		if err != nil {
			m.undo()
		}
	}()
	if err := prepareMountpoint(mp, req.Force, m.log); err != nil {
		return nil, err
	}
	oi, err := d.open(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", mp, err)
	}
	oi.src = source.Retrying(oi.src, d.cfg.Source.Retries, sourceRetryBase)
	m.oi = oi
	if err := reconcileSizes(oi); err != nil {
		return nil, fmt.Errorf("mount %s: %w", mp, err)
	}
	m.log = m.log.With(zap.String("image", oi.name))
	read := oi.src
	if d.dist != nil {
		att, err := d.dist.Attach(ctx, AttachedImage{Name: oi.name, RAFS: oi.img, Blobs: oi.blobs, Source: oi.src})
		if err != nil {
			return nil, fmt.Errorf("mount %s: attach to P2P: %w", mp, err)
		}
		m.attached, read = att, att
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("mount %s: %w", mp, err)
	}
	if m.im, err = d.fetcher.NewImage(oi.name, oi.img, read); err != nil {
		return nil, fmt.Errorf("mount %s: %w", mp, err)
	}
	var reader rafs.ChunkReader = m.im
	if req.RecordTrace != "" {
		m.rec, m.recordPath = trace.NewRecorder(oi.img, m.im), req.RecordTrace
		reader = m.rec
	}
	ks, whyNot, err := KernelMount(d.fsDriverFor(req), d.kernelRoot(), mp, oi.img, oi.raw, reader,
		kernelfs.Options{Log: m.log, Debug: req.FuseDebug})
	if err != nil {
		return nil, err
	}
	if ks != nil {
		m.srv = kernelServer{ks}
	}
	oi.raw = nil // the kernel has its copy
	if m.srv == nil {
		if whyNot != "" {
			m.log.Info("fs driver auto: serving through FUSE", zap.String("why_not_erofs", whyNot))
		}
		fopts := fuse.DefaultOptions()
		fopts.AllowOther, fopts.Debug, fopts.Log, fopts.Metrics = req.AllowOther, req.FuseDebug, d.log, d.reg
		fs, err := fuse.Mount(mp, oi.img, reader, fopts)
		if err != nil {
			return nil, err // says "mount MP: ..."
		}
		m.srv = fuseServer{fs}
	}
	if m.dev, err = mountDevice(mp); err != nil {
		return nil, fmt.Errorf("mount %s: %w", mp, err)
	}
	sock := peer.SocketPath(d.cfg.CacheDir, mp)
	// Set before the API serves: its umount reads it.
	m.info = MountInfo{Mountpoint: mp, Image: oi.name, Source: oi.src.String(), APISocket: sock, Started: time.Now(),
		P2P: m.attached != nil, Prefetch: string(mode), FSDriver: m.srv.Driver()}
	im := m.im
	// `dfnydus umount --cache-dir` asks here when no daemon answers for the mount (a foreground
	// mount): the process that serves it unmounts it as the daemon's Umount does.
	umount := func(context.Context) error { return m.detach(false) }
	if m.api, err = peer.ServeAPI(sock, mp, func() []*peer.Image { return []*peer.Image{im} }, d.reg, umount); err != nil {
		return nil, fmt.Errorf("mount %s: %w", mp, err)
	}
	if err := ctx.Err(); err != nil { // the caller gave up, or the daemon is closing
		return nil, fmt.Errorf("mount %s: %w", mp, err)
	}
	pctx, stop := context.WithCancel(context.Background())
	m.stopPrefetch = stop
	first, firstName := traceFirst(oi, m.log)
	m.im.StartPrefetch(pctx, peer.PrefetchOptions{Mode: mode, Rate: rate, First: first, FirstName: firstName})
	return m, nil
}

// undo releases a mount that never made it into the daemon's table.
func (m *mount) undo() {
	if m.srv != nil {
		if err := m.srv.Unmount(); err != nil {
			m.log.Warn("unmount of a failed mount failed, detaching lazily", zap.Error(err))
			m.srv.Detach(m.log)
		}
	}
	m.release()
}

// release stops prefetch and closes the API socket and the sources, once the mount is gone.
func (m *mount) release() {
	if m.stopPrefetch != nil {
		m.stopPrefetch()
		waitPrefetch(m.im)
	}
	m.closeAPI()
	if m.im != nil {
		m.im.Close()
	}
	if m.attached != nil {
		if err := m.attached.Close(); err != nil {
			m.log.Warn("detach from P2P", zap.Error(err))
		}
	}
	if m.oi != nil {
		m.oi.close()
	}
}

// waitPrefetch waits for a cancelled prefetch to stop, so nothing reaches the fetcher or the store
// after the mount is released. The peer package has no handle on its prefetch goroutine; its state
// leaves "running" just before the goroutine returns.
func waitPrefetch(im *peer.Image) {
	for im.PrefetchStatus().State == peer.PrefetchRunning {
		time.Sleep(5 * time.Millisecond)
	}
}

// watch waits until the mount is gone, however that happens (Umount, umount(8) from outside,
// Close), then releases it and removes its entry.
func (d *Daemon) watch(m *mount) {
	m.srv.Wait()
	m.writeTrace()
	m.release()
	d.mu.Lock()
	if d.mounts[m.info.Mountpoint] == m {
		delete(d.mounts, m.info.Mountpoint)
	}
	d.mu.Unlock()
	m.log.Info("unmounted")
	close(m.gone)
}

// Umount unmounts the daemon's mount at mountpoint and returns once it is released. A busy mount
// (a process holds a file or sits in a directory) stays mounted and serving, and the error says
// so (it wraps unix.EBUSY).
func (d *Daemon) Umount(ctx context.Context, mountpoint string) error {
	m, err := d.lookup(mountpoint)
	if err != nil {
		return err
	}
	return d.unmount(ctx, m, false)
}

// unmount unmounts m and waits until it is released. With force a mount that stays busy is
// detached lazily (it leaves the mount table; its FUSE connection is aborted if fusectl is there).
func (d *Daemon) unmount(ctx context.Context, m *mount, force bool) error {
	if err := m.detach(force); err != nil {
		return err
	}
	select {
	case <-m.gone:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("umount %s: waiting for the mount to go: %w", m.info.Mountpoint, ctx.Err())
	}
}

// detach takes m out of the mount table, once; watch releases it then. Without force a busy
// mount stays mounted and serving, and the error says so (it wraps unix.EBUSY); with force it is
// detached lazily.
func (m *mount) detach(force bool) error {
	m.umu.Lock()
	defer m.umu.Unlock()
	if m.unmounted {
		return nil
	}
	var err error
	if force {
		// Cancels the reads in flight, so blocked readers let go, then retries a while.
		err = m.srv.Unmount()
	} else {
		err = plainUnmount(m)
	}
	if err != nil && !m.srv.Mounted() {
		err = nil // unmounted from outside meanwhile: watch releases it
	}
	if err != nil && force {
		m.log.Warn("mount busy, detaching lazily", zap.Error(err))
		m.srv.Detach(m.log)
		err = nil
	}
	m.unmounted = err == nil
	return err
}

// plainUnmount unmounts as umount(8) does: a busy mount stays mounted and keeps serving.
// (fuse.Server.Unmount would also cancel the mount's reads, leaving a busy mount broken.)
func plainUnmount(m *mount) error {
	err := unix.Unmount(m.info.Mountpoint, 0)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EBUSY):
		return fmt.Errorf("umount %s: %w (a process has a file open or its working directory there)", m.info.Mountpoint, err)
	case errors.Is(err, unix.EPERM):
		return m.srv.Unmount() // through fusermount (FUSE mounts of a user)
	}
	return fmt.Errorf("umount %s: %w", m.info.Mountpoint, err)
}

// fuseSuperMagic is statfs's f_type of FUSE file systems (linux/magic.h).
const fuseSuperMagic = 0x65735546

// isFUSEMount reports whether a FUSE file system is mounted at mp.
func isFUSEMount(mp string) bool {
	var st unix.Statfs_t
	return unix.Statfs(mp, &st) == nil && st.Type == fuseSuperMagic
}

// forceDetach removes a busy FUSE mount from the mount table (MNT_DETACH) and aborts its
// connection through fusectl when mounted at /sys/fs/fuse/connections, so blocked readers fail and
// the server stops.
func forceDetach(mp string, log *zap.Logger) {
	var st unix.Stat_t
	statErr := unix.Stat(mp, &st)
	if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		log.Warn("lazy unmount failed", zap.Error(err))
	}
	if statErr != nil {
		return
	}
	// The connection directory is named by the superblock's kernel dev_t (MINORBITS 20).
	dev := uint64(unix.Major(st.Dev))<<20 | uint64(unix.Minor(st.Dev))
	abort := fmt.Sprintf("/sys/fs/fuse/connections/%d/abort", dev)
	if err := os.WriteFile(abort, []byte("1"), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
		log.Warn("abort FUSE connection", zap.String("path", abort), zap.Error(err))
	}
}

// prepareMountpoint checks the mountpoint and clears a mount left by a dfnydus that was killed
// (reads there fail with ENOTCONN). It refuses /proc, /sys and /dev, and, unless force, a directory
// that still is a mount point once a stale one is cleared (mounting there would hide it).
func prepareMountpoint(mp string, force bool, log *zap.Logger) error {
	if stale, err := mountpoint.ClearStale(mp); stale {
		log.Warn("clearing a stale mount left by a killed process", zap.String("mountpoint", mp))
		if err != nil {
			return fmt.Errorf("clear stale mount at %s: %w", mp, err)
		}
	}
	if stale, err := kernelfs.ClearStale(mp); stale {
		log.Warn("clearing a stale kernel-mode mount left by a killed process", zap.String("mountpoint", mp))
		if err != nil {
			return fmt.Errorf("clear stale mount at %s: %w", mp, err)
		}
	}
	fi, err := os.Stat(mp)
	if err != nil {
		return fmt.Errorf("%w: mountpoint: %w", ErrInvalidRequest, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%w: mountpoint %s is not a directory", ErrInvalidRequest, mp)
	}
	if _, err := mountpoint.Check(mp, force); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	return nil
}
