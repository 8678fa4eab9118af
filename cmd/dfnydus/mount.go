package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/dfnydus/dfnydus/fuse"
	"github.com/dfnydus/dfnydus/oci"
	"github.com/dfnydus/dfnydus/peer"
	"github.com/dfnydus/dfnydus/peer/source"
	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/bootstrap"
	"github.com/dfnydus/dfnydus/registry"
	"github.com/dfnydus/dfnydus/store"
)

// DefaultCacheDir holds the chunk store and the mounts' API sockets.
const DefaultCacheDir = "/var/lib/dfnydus"

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
	allowOther, fuseDbg bool
	sourceRetries       int
	readyFile           string
}

func newMountCmd(g *globals) *cobra.Command {
	f := &mountFlags{}
	cmd := &cobra.Command{
		Use:   "mount [flags] (IMAGE_REF | s3://BUCKET/PREFIX | --bootstrap FILE --blob-dir DIR) MOUNTPOINT",
		Short: "Mount a nydus image lazily: serve it now, fetch chunks on demand, prefetch the rest",
		Long: `Mount serves the image at MOUNTPOINT over FUSE in the foreground until it is unmounted
(dfnydus umount MOUNTPOINT) or signalled. Every chunk is verified against its digest before it is
stored or returned; verified chunks are kept in the store under --cache-dir and survive restarts.
SOURCE is an image reference in a registry, an s3:// location (with --bootstrap; credentials from
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, endpoint as ?endpoint=URL), or, with no SOURCE, a local
or NAS directory of blobs (--blob-dir) with --bootstrap.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error { return runMount(cmd, g, f, args) },
	}
	fl := cmd.Flags()
	f.reg.add(fl)
	fl.StringVar(&f.bootstrap, "bootstrap", "", "bootstrap file (local and s3 sources)")
	fl.StringVar(&f.blobDir, "blob-dir", "", "directory of blobs named by id (local source)")
	fl.StringVar(&f.cacheDir, "cache-dir", DefaultCacheDir, "where the chunk store and API sockets live")
	fl.StringVar(&f.prefetch, "prefetch", "all", "background prefetch: off, files (the image's prefetch list) or all")
	fl.Int64Var(&f.prefetchRate, "prefetch-rate", 0, "prefetch bandwidth limit in bytes/s (0: unlimited)")
	fl.Int64Var(&f.budget, "cache-budget", 0, "bytes of chunk data the store may keep (0: unlimited); least recently used chunks go first")
	fl.BoolVar(&f.verifyReads, "verify-reads", false, "re-verify every cached chunk on every read (default: once per chunk per process)")
	fl.StringVar(&f.metricsAddr, "metrics-addr", "", "also serve Prometheus metrics on this TCP address (e.g. 127.0.0.1:9100)")
	fl.Int64Var(&f.memCache, "memory-cache", peer.DefaultMemoryCache, "bytes of recently read chunks kept in memory")
	fl.BoolVar(&f.allowOther, "allow-other", false, "let other users see the mount (FUSE allow_other)")
	fl.BoolVar(&f.fuseDbg, "fuse-debug", false, "log every FUSE request")
	fl.IntVar(&f.sourceRetries, "source-retries", 5, "attempts for a failed back-to-source read")
	fl.StringVar(&f.readyFile, "ready-file", "", "write this file once the mount serves (for scripts)")
	return cmd
}

// openedImage is an image ready to mount: its model, its blob source and a display name.
type openedImage struct {
	name string
	img  *rafs.Image
	src  source.Source
}

func (f *mountFlags) open(ctx context.Context, g *globals, sourceArg string) (*openedImage, error) {
	switch {
	case sourceArg == "":
		if f.bootstrap == "" || f.blobDir == "" {
			return nil, errors.New("without SOURCE, give --bootstrap FILE and --blob-dir DIR")
		}
		_, img, err := bootstrap.Load(f.bootstrap)
		if err != nil {
			return nil, err
		}
		return &openedImage{name: f.bootstrap, img: img, src: source.NewLocal(f.blobDir)}, nil
	case strings.HasPrefix(sourceArg, "s3://"):
		if f.bootstrap == "" {
			return nil, errors.New("an s3:// source needs --bootstrap FILE")
		}
		cfg, err := source.ParseS3URL(sourceArg)
		if err != nil {
			return nil, err
		}
		src, err := source.NewS3(cfg)
		if err != nil {
			return nil, err
		}
		_, img, err := bootstrap.Load(f.bootstrap)
		if err != nil {
			src.Close()
			return nil, err
		}
		return &openedImage{name: sourceArg, img: img, src: src}, nil
	}
	ref, err := registry.ParseRef(sourceArg)
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	c, err := f.reg.client(g.log)
	if err != nil {
		return nil, err
	}
	oimg, err := oci.Open(ctx, c, ref, registry.HostPlatform())
	if err != nil {
		return nil, err
	}
	// Chunk reads get their own client without retries of its own: the fetcher's Retrying source
	// decides, so attempts do not multiply.
	f.reg.retries = 0
	rc, err := f.reg.client(g.log)
	if err != nil {
		return nil, err
	}
	return &openedImage{name: oimg.Ref.String(), img: oimg.RAFS, src: source.NewRegistry(rc, oimg.Ref)}, nil
}

func runMount(cmd *cobra.Command, g *globals, f *mountFlags, args []string) error {
	ctx := cmd.Context()
	mountpoint, sourceArg := args[len(args)-1], ""
	if len(args) == 2 {
		sourceArg = args[0]
	}
	mode, err := peer.ParsePrefetchMode(f.prefetch)
	if err != nil {
		return err
	}
	if err := prepareMountpoint(mountpoint, g.log); err != nil {
		return err
	}
	oi, err := f.open(ctx, g, sourceArg)
	if err != nil {
		return err
	}
	src := source.Retrying(oi.src, f.sourceRetries, 200*time.Millisecond)
	defer src.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	sopts := store.DefaultOptions()
	sopts.Budget, sopts.VerifyReads, sopts.Log, sopts.Metrics = f.budget, f.verifyReads, g.log, reg
	st, err := store.Open(filepath.Join(f.cacheDir, "store"), sopts)
	if err != nil {
		return err
	}
	defer st.Close()
	fetcher := peer.NewFetcher(peer.Options{Store: st, MemoryCache: f.memCache, Log: g.log, Metrics: reg})
	defer fetcher.Close() // store writes in flight finish before the store closes
	im := fetcher.NewImage(oi.name, oi.img, src)

	fopts := fuse.DefaultOptions()
	fopts.AllowOther, fopts.Debug, fopts.Log, fopts.Metrics = f.allowOther, f.fuseDbg, g.log, reg
	srv, err := fuse.Mount(mountpoint, oi.img, im, fopts)
	if err != nil {
		return fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	api, err := peer.ServeAPI(peer.SocketPath(f.cacheDir, mountpoint), mountpoint, func() []*peer.Image { return []*peer.Image{im} }, reg)
	if err != nil {
		_ = srv.Unmount()
		return err
	}
	defer api.Close()
	if f.metricsAddr != "" {
		ln, err := net.Listen("tcp", f.metricsAddr)
		if err != nil {
			_ = srv.Unmount()
			return fmt.Errorf("--metrics-addr: %w", err)
		}
		go func() { _ = http.Serve(ln, promhttp.HandlerFor(reg, promhttp.HandlerOpts{})) }()
		defer ln.Close()
	}
	pctx, stopPrefetch := context.WithCancel(context.Background())
	defer stopPrefetch()
	im.StartPrefetch(pctx, peer.PrefetchOptions{Mode: mode, Rate: f.prefetchRate})
	g.log.Info("mounted", zap.String("image", oi.name), zap.String("mountpoint", mountpoint), zap.String("source", oi.src.String()),
		zap.String("prefetch", string(mode)))
	if f.readyFile != "" {
		if err := os.WriteFile(f.readyFile, []byte(mountpoint+"\n"), 0o644); err != nil {
			g.log.Warn("ready file", zap.Error(err))
		}
	}

	done := make(chan struct{})
	go func() { srv.Wait(); close(done) }()
	select {
	case <-done:
		g.log.Info("unmounted", zap.String("mountpoint", mountpoint))
	case <-ctx.Done():
		g.log.Info("signalled: unmounting", zap.String("mountpoint", mountpoint))
		stopPrefetch()
		if err := srv.Unmount(); err != nil {
			g.log.Warn("unmount failed, detaching lazily", zap.Error(err))
			_ = unix.Unmount(mountpoint, unix.MNT_DETACH)
		}
		<-done
	}
	return nil
}

// prepareMountpoint checks the mountpoint and clears a mount left by a dfnydus that was killed
// (reads there fail with ENOTCONN).
func prepareMountpoint(mp string, log *zap.Logger) error {
	_, err := os.Stat(mp)
	if errors.Is(err, unix.ENOTCONN) {
		log.Warn("clearing a stale mount left by a killed process", zap.String("mountpoint", mp))
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("clear stale mount at %s: %w", mp, err)
		}
		_, err = os.Stat(mp)
	}
	if err != nil {
		return fmt.Errorf("mountpoint: %w", err)
	}
	return nil
}

func newUmountCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "umount MOUNTPOINT",
		Short: "Unmount a dfnydus mount (its dfnydus mount process then exits)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := unix.Unmount(args[0], 0); err != nil {
				if errors.Is(err, unix.EINVAL) {
					return fmt.Errorf("%s is not a mount point", args[0])
				}
				return fmt.Errorf("unmount %s: %w", args[0], err)
			}
			return nil
		},
	}
}

func newStatCmd(g *globals) *cobra.Command {
	var cacheDir string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "stat MOUNTPOINT",
		Short: "Show a mount's progress: chunks cached, bytes fetched, prefetch state",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			info, err := peer.QueryStat(ctx, peer.SocketPath(cacheDir, args[0]))
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
				fmt.Fprintf(out, "  errors   %d verify failures, %d read errors; store repaired %d chunks\n", s.VerifyFailures, s.ReadErrors, s.StoreRepairedEver)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&cacheDir, "cache-dir", DefaultCacheDir, "the mount's --cache-dir")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
