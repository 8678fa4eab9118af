package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	mountpointpkg "github.com/dfnydus/dfnydus/internal/mountpoint"
	"github.com/dfnydus/dfnydus/kernelfs"
	"github.com/dfnydus/dfnydus/peer"
	"github.com/dfnydus/dfnydus/peer/daemon"
)

// DefaultCacheDir holds the chunk store and the mounts' API sockets.
const DefaultCacheDir = daemon.DefaultCacheDir

type mountFlags struct {
	reg                 registryFlags
	bootstrap, blobDir  string
	cacheDir            string
	prefetch            string
	prefetchRate        int64
	budget              int64
	verifyReads         bool
	metricsAddr         string
	memCache            int64
	readWindow          int64
	allowOther, fuseDbg bool
	sourceRetries       int
	readyFile           string
	platform            string
	daemonSocket        string
	foreground          bool
	force               bool
	recordTrace         string
	fsDriver            string
}

// daemonOnlyFlags configure the process that owns the store: a mount through a running daemon
// takes them from the daemon's config instead.
var daemonOnlyFlags = []string{"cache-dir", "cache-budget", "verify-reads", "metrics-addr", "memory-cache", "read-window", "source-retries"}

func newMountCmd(g *globals) *cobra.Command {
	f := &mountFlags{}
	cmd := &cobra.Command{
		Use:   "mount [flags] (IMAGE_REF | s3://BUCKET/PREFIX | --bootstrap FILE --blob-dir DIR) MOUNTPOINT",
		Short: "Mount a nydus image lazily: serve it now, fetch chunks on demand, prefetch the rest",
		Long: `Mount serves the image at MOUNTPOINT over FUSE. Every chunk is verified against its digest before
it is stored or returned; verified chunks are kept in the store and survive restarts.
SOURCE is an image reference in a registry, an s3:// location (with --bootstrap; credentials from
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, endpoint as ?endpoint=URL), or, with no SOURCE, a local
or NAS directory of blobs (--blob-dir) with --bootstrap.

When a dfnydus daemon answers on --daemon-socket, the daemon mounts the image (in its store, with
its configuration) and mount returns once the mount serves, printing the mountpoint. Otherwise (or
with --foreground) mount serves the image itself, with a store under --cache-dir, in the
foreground until it is unmounted (dfnydus umount MOUNTPOINT) or signalled.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error { return runMount(cmd, g, f, args) },
	}
	fl := cmd.Flags()
	f.reg.add(fl)
	fl.StringVar(&f.bootstrap, "bootstrap", "", "bootstrap file (local and s3 sources)")
	fl.StringVar(&f.blobDir, "blob-dir", "", "directory of blobs named by id (local source)")
	fl.StringVar(&f.cacheDir, "cache-dir", DefaultCacheDir, "where the chunk store and API sockets live (foreground mounts)")
	fl.StringVar(&f.prefetch, "prefetch", "all", "background prefetch: off, files (the image's prefetch list) or all")
	fl.Int64Var(&f.prefetchRate, "prefetch-rate", 0, "prefetch bandwidth limit in bytes/s (0: unlimited)")
	fl.Int64Var(&f.budget, "cache-budget", 0, "bytes of chunk data the store may keep (0: unlimited); least recently used chunks go first")
	fl.BoolVar(&f.verifyReads, "verify-reads", false, "re-verify every cached chunk on every read (default: once per chunk per process)")
	fl.StringVar(&f.metricsAddr, "metrics-addr", "", "also serve Prometheus metrics on this TCP address (e.g. 127.0.0.1:9100)")
	fl.Int64Var(&f.memCache, "memory-cache", peer.DefaultMemoryCache, "bytes of recently read chunks kept in memory")
	fl.Int64Var(&f.readWindow, "read-window", peer.DefaultReadWindow, "bytes past a missing chunk one on-demand fetch also brings (0: the chunk alone)")
	fl.BoolVar(&f.allowOther, "allow-other", false, "let other users see the mount (FUSE allow_other)")
	fl.BoolVar(&f.fuseDbg, "fuse-debug", false, "log every FUSE request")
	fl.IntVar(&f.sourceRetries, "source-retries", 5, "attempts for a failed back-to-source read")
	fl.StringVar(&f.readyFile, "ready-file", "", "write this file once the mount serves (for scripts)")
	fl.StringVar(&f.platform, "platform", "", "platform to pick from an image index, os/arch[/variant] (default: this host's)")
	fl.BoolVar(&f.foreground, "foreground", false, "serve in this process even when a daemon answers on --daemon-socket")
	fl.BoolVar(&f.force, "force", false, "mount over a directory that already is a mount point (with --foreground; /proc, /sys and /dev are always refused)")
	fl.StringVar(&f.recordTrace, "record-trace", "", "record the chunks the mount reads, in order of first read, and write them as a start trace to FILE when unmounted (foreground mounts)")
	fl.StringVar(&f.fsDriver, "fs-driver", "", "how the kernel sees the image: fuse, erofs (the kernel's EROFS, RAFS v6 only) or auto (erofs where possible, else fuse); default: the daemon's fsDriver (fuse)")
	addDaemonSocketFlag(fl, &f.daemonSocket)
	return cmd
}

// request is the mount request the flags and arguments make; paths are made absolute.
func (f *mountFlags) request(changed func(string) bool, log *zap.Logger, sourceArg, mountpoint string) (daemon.MountRequest, error) {
	req := daemon.MountRequest{Ref: sourceArg, Platform: f.platform, AllowOther: f.allowOther, FuseDebug: f.fuseDbg, Force: f.force,
		FSDriver: f.fsDriver}
	for _, p := range []struct {
		dst *string
		src string
	}{{&req.Mountpoint, mountpoint}, {&req.Bootstrap, f.bootstrap}, {&req.BlobDir, f.blobDir}, {&req.RecordTrace, f.recordTrace}} {
		if p.src == "" {
			continue
		}
		abs, err := filepath.Abs(p.src)
		if err != nil {
			return req, err
		}
		*p.dst = abs
	}
	switch {
	case sourceArg == "" && (f.bootstrap == "" || f.blobDir == ""):
		return req, errors.New("without SOURCE, give --bootstrap FILE and --blob-dir DIR")
	case strings.HasPrefix(sourceArg, "s3://") && f.bootstrap == "":
		return req, errors.New("an s3:// source needs --bootstrap FILE")
	}
	if changed("prefetch") {
		if _, err := peer.ParsePrefetchMode(f.prefetch); err != nil {
			return req, err
		}
		req.Prefetch = f.prefetch
	}
	if changed("prefetch-rate") {
		req.PrefetchRate = f.prefetchRate
		if f.prefetchRate == 0 {
			req.PrefetchRate = -1 // asked for unlimited, not for the daemon's default
		}
	}
	reg, err := f.reg.requestOptions(changed, log)
	if err != nil {
		return req, err
	}
	req.Registry = reg
	return req, nil
}

func runMount(cmd *cobra.Command, g *globals, f *mountFlags, args []string) error {
	ctx := cmd.Context()
	mountpoint, sourceArg := args[len(args)-1], ""
	if len(args) == 2 {
		sourceArg = args[0]
	}
	req, err := f.request(cmd.Flags().Changed, g.log, sourceArg, mountpoint)
	if err != nil {
		return err
	}
	// Refuse a dangerous mountpoint before anything is fetched; the daemon checks again. A stale
	// mount a killed dfnydus left (its FUSE connection gone, or the views of its EROFS mount) is
	// not refused here: the daemon clears it, then checks.
	if !mountpointpkg.Stale(req.Mountpoint) && !kernelfs.Stale(req.Mountpoint) {
		if _, err := mountpointpkg.Check(req.Mountpoint, f.force); err != nil {
			return err
		}
	}
	if !f.foreground {
		c, err := connectDaemon(ctx, f.daemonSocket)
		if c != nil && f.force {
			c.Close()
			// The control API has no force field: a daemon would refuse the mount after all.
			return errors.New("--force needs --foreground: a daemon answers on --daemon-socket and does not mount over mount points")
		}
		if c != nil && f.recordTrace != "" {
			c.Close()
			// The control API has no trace field: the recording lives in the process that serves.
			return errors.New("--record-trace needs --foreground: a daemon answers on --daemon-socket")
		}
		if err != nil {
			return err
		}
		if c != nil {
			defer c.Close()
			return mountThroughDaemon(cmd, g, f, c, req)
		}
	}
	return mountForeground(cmd, g, f, req)
}

// mountThroughDaemon asks the daemon to mount and returns once the mount serves.
func mountThroughDaemon(cmd *cobra.Command, g *globals, f *mountFlags, c *daemon.Client, req daemon.MountRequest) error {
	for _, name := range daemonOnlyFlags {
		if cmd.Flags().Changed(name) {
			g.log.Warn("flag ignored: the daemon's config decides", zap.String("flag", "--"+name), zap.String("daemon", c.Socket()))
		}
	}
	info, err := c.Mount(cmd.Context(), req)
	if err != nil {
		return err
	}
	g.log.Info("mounted by the daemon", zap.String("image", info.Image), zap.String("mountpoint", info.Mountpoint),
		zap.String("daemon", c.Socket()), zap.Bool("p2p", info.P2P), zap.String("fs_driver", info.FSDriver))
	fmt.Fprintln(cmd.OutOrStdout(), info.Mountpoint)
	writeReadyFile(f.readyFile, info.Mountpoint, g.log)
	return nil
}

// mountForeground serves the mount in this process, through an in-process daemon built from the
// flags, until it is unmounted or the process is signalled.
func mountForeground(cmd *cobra.Command, g *globals, f *mountFlags, req daemon.MountRequest) error {
	ctx := cmd.Context()
	cfg, err := f.daemonConfig()
	if err != nil {
		return err
	}
	d, err := daemon.New(ctx, cfg, daemon.Options{Log: g.log, Version: version})
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := d.Close(cctx); err != nil {
			g.log.Warn("shutdown", zap.Error(err))
		}
	}()
	info, err := d.Mount(ctx, req)
	if err != nil {
		return err
	}
	writeReadyFile(f.readyFile, info.Mountpoint, g.log)
	if err := d.Wait(ctx, info.Mountpoint); err != nil {
		g.log.Info("signalled: unmounting", zap.String("mountpoint", info.Mountpoint))
		return nil // the deferred Close unmounts
	}
	return nil
}

// writeReadyFile writes the mountpoint to path (if set) once the mount serves.
func writeReadyFile(path, mountpoint string, log *zap.Logger) {
	if path == "" {
		return
	}
	if err := os.WriteFile(path, []byte(mountpoint+"\n"), 0o644); err != nil {
		log.Warn("ready file", zap.Error(err))
	}
}

func newUmountCmd(g *globals) *cobra.Command {
	var socket, cacheDir string
	cmd := &cobra.Command{
		Use:   "umount MOUNTPOINT",
		Short: "Unmount a dfnydus mount (through the daemon when it serves it; a foreground mount process then exits)",
		Long: `Umount asks the daemon on --daemon-socket when one serves MOUNTPOINT. Otherwise it asks the
mount's own API socket under --cache-dir (that of a foreground mount): the process serving the
mount unmounts it (through fusermount when it is not root's) and umount returns once the mount is
released, its start trace (--record-trace) written. When neither answers it unmounts MOUNTPOINT
as umount(8) does.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			mp, err := filepath.Abs(args[0])
			if err != nil {
				return err
			}
			c, err := connectDaemon(cmd.Context(), socket)
			if err != nil {
				return err
			}
			if c != nil {
				defer c.Close()
				err := c.Umount(cmd.Context(), mp)
				if !errors.Is(err, daemon.ErrNotMounted) {
					return err
				}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Minute)
			defer cancel()
			if err := peer.RequestUmount(ctx, peer.SocketPath(cacheDir, mp)); !errors.Is(err, peer.ErrNoMountAPI) {
				return err
			}
			if err := unix.Unmount(mp, 0); err != nil {
				if errors.Is(err, unix.EINVAL) {
					return fmt.Errorf("%s is not a mount point", args[0])
				}
				return fmt.Errorf("unmount %s: %w", args[0], err)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&cacheDir, "cache-dir", DefaultCacheDir, "the --cache-dir of a foreground mount, whose API socket is asked to unmount it")
	addDaemonSocketFlag(cmd.Flags(), &socket)
	return cmd
}

func newListCmd(g *globals) *cobra.Command {
	var socket string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the daemon's mounts",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := needDaemon(cmd.Context(), socket)
			if err != nil {
				return err
			}
			defer c.Close()
			mounts, err := c.List(cmd.Context())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return writeJSON(out, mounts)
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "MOUNTPOINT\tSOURCE\tP2P\tPREFETCH\tUP\tIMAGE")
			for _, m := range mounts {
				fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%s\t%s\n", m.Mountpoint, m.Source, m.P2P, m.Prefetch,
					time.Since(m.Started).Round(time.Second), m.Image)
			}
			return tw.Flush()
		},
	}
	addDaemonSocketFlag(cmd.Flags(), &socket)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newStatCmd(g *globals) *cobra.Command {
	var cacheDir, socket string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "stat MOUNTPOINT",
		Short: "Show a mount's progress: chunks cached, bytes fetched, prefetch state",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			info, err := queryStat(ctx, socket, cacheDir, args[0])
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return writeJSON(out, info)
			}
			fmt.Fprintf(out, "mountpoint %s (pid %d, up %s)\n", info.Mountpoint, info.PID, time.Since(info.Started).Round(time.Second))
			for _, s := range info.Images {
				fmt.Fprintf(out, "image %s from %s\n", s.Name, s.Source)
				fmt.Fprintf(out, "  cached   %d/%d chunks, %d/%d bytes (%.1f%%)\n", s.ChunksCached, s.Chunks, s.BytesCached, s.BytesTotal,
					100*float64(s.BytesCached)/float64(max(s.BytesTotal, 1)))
				fmt.Fprintf(out, "  fetched  %d bytes in %d requests (%d on demand, %d by prefetch)\n", s.BytesFetched, s.Fetches, s.BytesOnDemand, s.BytesPrefetched)
				fmt.Fprintf(out, "  prefetch %s: %d/%d chunks, %d failed\n", s.Prefetch.State, s.Prefetch.ChunksDone, s.Prefetch.ChunksTotal, s.Prefetch.Failed)
				if tr := s.Prefetch.Trace; tr != nil {
					fmt.Fprintf(out, "  trace    %s: %d chunks, %d prefetched; first reads %d hits, %d misses\n", tr.Name, tr.Chunks, tr.Prefetched, tr.Hits, tr.Misses)
				} else {
					fmt.Fprintf(out, "  trace    none used\n")
				}
				fmt.Fprintf(out, "  errors   %d verify failures, %d read errors; store repaired %d chunks\n", s.VerifyFailures, s.ReadErrors, s.StoreRepairedEver)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&cacheDir, "cache-dir", DefaultCacheDir, "the --cache-dir of a foreground mount")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	addDaemonSocketFlag(cmd.Flags(), &socket)
	return cmd
}

// queryStat asks the daemon about mountpoint when it serves it, else the foreground mount's API
// socket under cacheDir.
func queryStat(ctx context.Context, socket, cacheDir, mountpoint string) (*peer.MountInfo, error) {
	mp, err := filepath.Abs(mountpoint)
	if err != nil {
		return nil, err
	}
	c, err := connectDaemon(ctx, socket)
	if err != nil {
		return nil, err
	}
	if c != nil {
		defer c.Close()
		info, err := c.Stat(ctx, mp)
		if !errors.Is(err, daemon.ErrNotMounted) {
			return info, err
		}
	}
	return peer.QueryStat(ctx, peer.SocketPath(cacheDir, mp))
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
