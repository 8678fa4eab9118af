package main

import (
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/containerd/stargz-snapshotter/fs/config"
	memorymetadata "github.com/containerd/stargz-snapshotter/metadata/memory"
	"github.com/containerd/stargz-snapshotter/store"
	digest "github.com/opencontainers/go-digest"
	"go.uber.org/zap"
)

// mountOptions are the flags of `estargz-bench mount`.
type mountOptions struct {
	ref             imageRef
	mountpoint      string
	root            string        // the store's state and caches; use a fresh one per cold run
	tocDigest       digest.Digest // "": read from the manifest's annotation
	noPrefetch      bool
	backgroundFetch bool
	requestTimeout  time.Duration
	readyTimeout    time.Duration
	debug           bool
	logLevel        string
}

func parseMount(args []string, stderr io.Writer) (mountOptions, error) {
	o := mountOptions{}
	fs := flag.NewFlagSet("mount", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: estargz-bench mount --ref HOST:PORT/NAME:T --mountpoint DIR --root DIR [--no-prefetch] [flags]")
		fs.PrintDefaults()
	}
	var ref, toc string
	fs.StringVar(&ref, "ref", "", "image `HOST:PORT/NAME:TAG` (plain HTTP registry, single eStargz layer)")
	fs.StringVar(&o.mountpoint, "mountpoint", "", "`dir` to mount the store on (created if missing)")
	fs.StringVar(&o.root, "root", "", "`dir` for the store's state and caches (created if missing)")
	fs.StringVar(&toc, "toc-digest", "", "the layer's TOC `digest` (default: from the manifest annotation)")
	fs.BoolVar(&o.noPrefetch, "no-prefetch", false, "disable prefetch of the image's prioritized files")
	fs.BoolVar(&o.backgroundFetch, "background-fetch", false, "enable fetching the whole layer in the background")
	fs.DurationVar(&o.requestTimeout, "request-timeout", 30*time.Second, "timeout of each registry request")
	fs.DurationVar(&o.readyTimeout, "ready-timeout", 2*time.Minute, "give up if the layer is not resolved within this `duration`")
	fs.BoolVar(&o.debug, "debug", false, "log every FUSE request")
	fs.StringVar(&o.logLevel, "log-level", "warn", "log `level`: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return o, fmt.Errorf("%w: mount: %w", errUsage, err)
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("%w: mount: unexpected arguments %q", errUsage, fs.Args())
	}
	var err error
	if o.ref, err = parseRef(ref); err != nil {
		return o, fmt.Errorf("%w: mount: --ref: %w", errUsage, err)
	}
	if toc != "" {
		if o.tocDigest, err = digest.Parse(toc); err != nil {
			return o, fmt.Errorf("%w: mount: --toc-digest: %w", errUsage, err)
		}
	}
	switch {
	case o.mountpoint == "":
		return o, fmt.Errorf("%w: mount: --mountpoint is required", errUsage)
	case o.root == "":
		return o, fmt.Errorf("%w: mount: --root is required", errUsage)
	case o.requestTimeout <= 0 || o.readyTimeout <= 0:
		return o, fmt.Errorf("%w: mount: timeouts must be positive", errUsage)
	}
	if o.mountpoint, err = filepath.Abs(o.mountpoint); err != nil {
		return o, fmt.Errorf("%w: mount: --mountpoint: %w", errUsage, err)
	}
	if o.root, err = filepath.Abs(o.root); err != nil {
		return o, fmt.Errorf("%w: mount: --root: %w", errUsage, err)
	}
	return o, nil
}

// storeConfig is the stargz store's configuration: lazy reads only (no background fetch, and no
// prefetch when asked), no global Prometheus registration.
func storeConfig(o mountOptions) config.Config {
	return config.Config{
		NoPrefetch:        o.noPrefetch,
		NoBackgroundFetch: !o.backgroundFetch,
		NoPrometheus:      true,
		Debug:             o.debug,
	}
}

// layerDir is the store's directory of one layer: <mnt>/<base64(ref)>/<TOC digest>.
func layerDir(mountpoint string, ref imageRef, toc digest.Digest) string {
	return filepath.Join(mountpoint, base64.StdEncoding.EncodeToString([]byte(ref.String())), toc.String())
}

// runMount mounts the stargz store, resolves the image's layer, prints "READY <diff dir>", and
// serves until ctx is done; then it releases the layer and unmounts. On SIGUSR1 it prints
// "STATS requests=N bytes=M" (what the store fetched from the registry so far); it prints a last
// STATS line before returning.
func runMount(ctx context.Context, o mountOptions, stdout io.Writer, log *zap.Logger) (err error) {
	stats := &fetchStats{}
	transport := newCountingTransport(stats)
	toc := o.tocDigest
	if toc == "" {
		if toc, err = lookupTOCDigest(ctx, o.ref, &http.Client{Transport: transport, Timeout: o.requestTimeout}, log); err != nil {
			return err
		}
	}
	for _, dir := range []string{o.mountpoint, o.root} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", dir, err)
		}
	}
	lm, err := store.NewLayerManager(ctx, o.root, plainHTTPHosts(transport, o.requestTimeout), memorymetadata.NewReader, storeConfig(o))
	if err != nil {
		return fmt.Errorf("create stargz layer manager in %s: %w", o.root, err)
	}
	if err := store.Mount(ctx, o.mountpoint, lm, o.debug); err != nil {
		return fmt.Errorf("mount stargz store on %s: %w", o.mountpoint, err)
	}
	log.Info("mounted stargz store", zap.String("mountpoint", o.mountpoint), zap.String("root", o.root))
	defer func() {
		if uerr := unmount(o.mountpoint, log); uerr != nil {
			err = errors.Join(err, uerr)
		}
	}()

	dir := layerDir(o.mountpoint, o.ref, toc)
	diff := filepath.Join(dir, "diff")
	if err := resolveLayer(ctx, dir, o.readyTimeout); err != nil {
		return fmt.Errorf("resolve layer %s of %s: %w", toc, o.ref, err)
	}
	defer releaseLayer(dir, log)
	if _, err := fmt.Fprintf(stdout, "READY %s\n", diff); err != nil {
		return fmt.Errorf("write READY: %w", err)
	}
	log.Info("layer ready", zap.String("diff", diff), zap.Stringer("fetched", stats))

	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	for {
		select {
		case <-usr1:
			if _, err := fmt.Fprintf(stdout, "STATS %s\n", stats); err != nil {
				return fmt.Errorf("write STATS: %w", err)
			}
		case <-ctx.Done():
			log.Info("stopping", zap.Stringer("fetched", stats))
			if _, err := fmt.Fprintf(stdout, "STATS %s\n", stats); err != nil {
				return fmt.Errorf("write STATS: %w", err)
			}
			return nil
		}
	}
}

// lookupTOCDigest reads the TOC digest annotation of ref's only layer from its manifest.
func lookupTOCDigest(ctx context.Context, ref imageRef, client *http.Client, log *zap.Logger) (digest.Digest, error) {
	reg, err := newRegistryClient(ref.host, client, log)
	if err != nil {
		return "", err
	}
	manifest, mediaType, err := reg.getManifest(ctx, ref.repo, ref.tag)
	if err != nil {
		return "", err
	}
	toc, err := layerTOCDigest(manifest, mediaType)
	if err != nil {
		return "", fmt.Errorf("image %s: %w", ref, err)
	}
	return toc, nil
}

// resolveLayer makes the store resolve the layer behind dir (fetch the blob's footer and TOC,
// verify the TOC digest) by looking up its diff directory, and marks the layer in use the way
// container runtimes do (creating the "use" file, which the store answers with ENOENT).
// The lookup is a filesystem call that cannot be interrupted; ctx and timeout only stop waiting.
func resolveLayer(ctx context.Context, dir string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		f, err := os.OpenFile(filepath.Join(dir, "use"), os.O_CREATE|os.O_RDONLY, 0o400)
		if err == nil {
			_ = f.Close()
		} else if !errors.Is(err, os.ErrNotExist) {
			done <- fmt.Errorf("mark layer in use: %w", err)
			return
		}
		fi, err := os.Stat(filepath.Join(dir, "diff"))
		if err == nil && !fi.IsDir() {
			err = fmt.Errorf("%s/diff is not a directory", dir)
		}
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("wait for layer: %w", ctx.Err())
	}
}

// releaseLayer drops the in-use mark (rmdir of the layer directory, which the store answers with
// ENOENT once it has released the layer).
func releaseLayer(dir string, log *zap.Logger) {
	err := syscall.Rmdir(dir)
	if err != nil && !errors.Is(err, syscall.ENOENT) {
		log.Warn("release layer", zap.String("dir", dir), zap.Error(err))
	}
}

// unmount detaches the store's FUSE mount, lazily if it stays busy.
func unmount(mountpoint string, log *zap.Logger) error {
	var err error
	for range 20 {
		err = syscall.Unmount(mountpoint, 0)
		if err == nil || errors.Is(err, syscall.EINVAL) { // EINVAL: not mounted any more
			return nil
		}
		if !errors.Is(err, syscall.EBUSY) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	log.Warn("unmount failed; detaching lazily", zap.String("mountpoint", mountpoint), zap.Error(err))
	if err := syscall.Unmount(mountpoint, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("unmount %s: %w", mountpoint, err)
	}
	return nil
}
