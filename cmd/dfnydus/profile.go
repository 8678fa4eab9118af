package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/dfnydus/dfnydus/oci"
	"github.com/dfnydus/dfnydus/peer/daemon"
	"github.com/dfnydus/dfnydus/peer/trace"
	"github.com/dfnydus/dfnydus/registry"
)

type profileFlags struct {
	reg      registryFlags
	output   string
	push     bool
	timeout  time.Duration
	chroot   bool
	fromFile string
	platform string
	cacheDir string
}

func newProfileCmd(g *globals) *cobra.Command {
	f := &profileFlags{}
	cmd := &cobra.Command{
		Use:   "profile REF [flags] -- CMD [ARG...]  |  profile --from-file TRACE --push REF",
		Short: "Record which chunks a program reads at start (a start trace), and store it as a referrer of the image",
		Long: `Profile mounts the nydus image REF lazily (foreground, temporary mountpoint and cache, no prefetch),
runs CMD in the mountpoint (working directory; $DFNYDUS_ROOT names it) or, with --chroot, inside it
(with /proc, /dev and /sys bound read-only where the image has those directories), records the
chunks read in order of first read, and when CMD exits (or --timeout passes) unmounts and writes the
start trace (-o FILE). With --push the trace is stored as an OCI 1.1 referrer of REF's nydus
manifest, which every later mount of the image finds and prefetches first. --from-file pushes a
trace recorded earlier (it must have been recorded on REF's manifest).`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.fromFile != "" {
				if len(args) != 1 || !f.push {
					return errors.New("--from-file takes --push and exactly one REF")
				}
				return pushTraceFile(cmd, g, f, args[0])
			}
			dash := cmd.ArgsLenAtDash()
			if dash != 1 || len(args) < 2 {
				return errors.New("usage: dfnydus profile REF [flags] -- CMD [ARG...]")
			}
			if f.output == "" && !f.push {
				return errors.New("give -o FILE, --push, or both")
			}
			return runProfile(cmd, g, f, args[0], args[1:])
		},
	}
	fl := cmd.Flags()
	f.reg.add(fl)
	fl.StringVarP(&f.output, "output", "o", "", "write the start trace to this file")
	fl.BoolVar(&f.push, "push", false, "store the trace as a referrer of REF's nydus manifest")
	fl.DurationVar(&f.timeout, "timeout", time.Minute, "stop CMD (SIGKILL) and the recording after this long")
	fl.BoolVar(&f.chroot, "chroot", false, "run CMD chrooted into the image, with /proc, /dev and /sys bound read-only")
	fl.StringVar(&f.fromFile, "from-file", "", "push this start trace instead of recording one")
	fl.StringVar(&f.platform, "platform", "", "platform to pick from an image index, os/arch[/variant] (default: this host's)")
	fl.StringVar(&f.cacheDir, "cache-dir", "", "chunk store for the recording (default: a temporary one, removed afterwards)")
	return cmd
}

func runProfile(cmd *cobra.Command, g *globals, f *profileFlags, ref string, argv []string) error {
	ctx := cmd.Context()
	tmp, err := os.MkdirTemp("", "dfnydus-profile-")
	if err != nil {
		return fmt.Errorf("profile: %w", err)
	}
	defer os.RemoveAll(tmp)
	mp := filepath.Join(tmp, "root")
	if err := os.Mkdir(mp, 0o755); err != nil {
		return fmt.Errorf("profile: %w", err)
	}
	out := f.output
	if out == "" {
		out = filepath.Join(tmp, "trace.json")
	}
	if out, err = filepath.Abs(out); err != nil {
		return err
	}
	cfg := daemon.DefaultConfig()
	cfg.CacheDir = filepath.Join(tmp, "cache")
	if f.cacheDir != "" {
		if cfg.CacheDir, err = filepath.Abs(f.cacheDir); err != nil {
			return err
		}
	}
	cfg.Prefetch = daemon.PrefetchConfig{Mode: "off"}
	cfg.Registry = daemon.RegistryOptions{PlainHTTP: f.reg.plainHTTP, Insecure: f.reg.insecure, CAFile: f.reg.caFile, DockerConfig: f.reg.dockerCfg}
	if err := cfg.Validate(); err != nil {
		return err
	}
	regOpts, err := f.reg.requestOptions(cmd.Flags().Changed, g.log)
	if err != nil {
		return err
	}
	d, err := daemon.New(ctx, cfg, daemon.Options{Log: g.log, Version: version})
	if err != nil {
		return err
	}
	closeDaemon := func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := d.Close(cctx); err != nil {
			g.log.Warn("shutdown", zap.Error(err))
		}
	}
	// Recording with no prefetch: the trace is what the program read, and nothing else competes.
	// NoTrace: an older trace must not shape this one's timing.
	info, err := d.Mount(ctx, daemon.MountRequest{Mountpoint: mp, Ref: ref, Platform: f.platform, Prefetch: "off",
		Registry: regOpts, RecordTrace: out, NoTrace: true})
	if err != nil {
		closeDaemon()
		return err
	}
	runErr := runTraced(ctx, g.log, f, info.Mountpoint, argv)
	// Unmounting ends the recording and writes the trace (the mount's watcher does, before Umount
	// returns).
	uctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	err = d.Umount(uctx, info.Mountpoint)
	cancel()
	closeDaemon()
	if err != nil {
		return fmt.Errorf("profile: unmount: %w", err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		return fmt.Errorf("profile: the trace was not written: %w", err)
	}
	t, err := trace.Decode(data)
	if err != nil {
		return fmt.Errorf("profile: %s: %w", out, err)
	}
	g.log.Info("start trace recorded", zap.String("image", info.Image), zap.String("manifest", t.Manifest.String()),
		zap.Int("chunks", len(t.Entries)), zap.Int("files", len(t.PrefetchPaths())))
	if runErr != nil {
		// The program's start is recorded whatever its exit: a trace of a failed start is still
		// worth keeping, but the caller hears about the failure.
		g.log.Warn("program failed", zap.Error(runErr))
	}
	if f.push {
		if err := pushTrace(cmd, g, f, ref, t, data); err != nil {
			return err
		}
	}
	if f.output != "" {
		fmt.Fprintln(cmd.OutOrStdout(), out)
	}
	return runErr
}

// runTraced runs argv in (or, with --chroot, inside) the mounted image until it exits or the
// timeout passes; SIGINT/SIGTERM stop it too, and the recording then ends as if it had exited.
func runTraced(ctx context.Context, log *zap.Logger, f *profileFlags, root string, argv []string) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	c := exec.CommandContext(ctx, argv[0], argv[1:]...)
	c.Stdin, c.Stdout, c.Stderr = os.Stdin, os.Stdout, os.Stderr
	c.Env = append(os.Environ(), "DFNYDUS_ROOT="+root)
	c.Dir = root
	if f.chroot {
		binds, err := bindSystemDirs(root, log)
		defer unbind(binds, log)
		if err != nil {
			return err
		}
		c.Dir = "/"
		c.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
	}
	err := c.Run()
	if ctx.Err() != nil {
		return fmt.Errorf("%s: stopped after %s: %w", argv[0], f.timeout, ctx.Err())
	}
	if err != nil {
		return fmt.Errorf("%s: %w", argv[0], err)
	}
	return nil
}

// bindSystemDirs binds /proc, /dev and /sys read-only over the image's directories of those names
// (a program chrooted into an image needs them; the image itself is read-only, so a missing one is
// skipped).
func bindSystemDirs(root string, log *zap.Logger) ([]string, error) {
	var done []string
	for _, dir := range []string{"/proc", "/dev", "/sys"} {
		target := filepath.Join(root, dir)
		if fi, err := os.Lstat(target); err != nil || !fi.IsDir() {
			log.Warn("the image has no directory for a bind mount; skipped", zap.String("dir", dir))
			continue
		}
		if err := unix.Mount(dir, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return done, fmt.Errorf("bind %s: %w", dir, err)
		}
		done = append(done, target)
		if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			return done, fmt.Errorf("bind %s read-only: %w", dir, err)
		}
	}
	return done, nil
}

// unbind detaches the bind mounts (lazily: the program may have left children holding them), so
// the image can be unmounted.
func unbind(targets []string, log *zap.Logger) {
	for i := len(targets) - 1; i >= 0; i-- {
		if err := unix.Unmount(targets[i], unix.MNT_DETACH); err != nil {
			log.Warn("unbind", zap.String("target", targets[i]), zap.Error(err))
		}
	}
}

// pushTraceFile pushes a trace recorded earlier as a referrer of ref's nydus manifest.
func pushTraceFile(cmd *cobra.Command, g *globals, f *profileFlags, ref string) error {
	data, err := os.ReadFile(f.fromFile)
	if err != nil {
		return fmt.Errorf("--from-file: %w", err)
	}
	t, err := trace.Decode(data)
	if err != nil {
		return fmt.Errorf("--from-file %s: %w", f.fromFile, err)
	}
	return pushTrace(cmd, g, f, ref, t, data)
}

// pushTrace checks the trace belongs to ref's nydus manifest (digest, and every chunk in the image)
// and pushes it as a referrer of that manifest.
func pushTrace(cmd *cobra.Command, g *globals, f *profileFlags, refArg string, t *trace.Trace, data []byte) error {
	ctx := cmd.Context()
	ref, err := registry.ParseRef(refArg)
	if err != nil {
		return err
	}
	platform, err := daemon.ParsePlatform(f.platform)
	if err != nil {
		return err
	}
	c, err := f.reg.client(g.log)
	if err != nil {
		return err
	}
	defer c.Close()
	img, err := oci.Open(ctx, c, ref, platform)
	if err != nil {
		return fmt.Errorf("push start trace: %w", err)
	}
	if err := t.BoundTo(img.ManifestDesc.Digest, ""); err != nil {
		return fmt.Errorf("push start trace to %s: %w", ref, err)
	}
	if _, err := t.Resolve(img.RAFS); err != nil {
		return fmt.Errorf("push start trace to %s: %w", ref, err)
	}
	desc, err := trace.Push(ctx, c, img.Ref, img.ManifestDesc, data)
	if err != nil {
		return err
	}
	g.log.Info("start trace pushed", zap.String("referrer", desc.Digest.String()), zap.String("subject", img.ManifestDesc.Digest.String()),
		zap.String("repository", img.Ref.Context()))
	return nil
}
