package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/dfnydus/dfnydus/peer/daemon"
	"github.com/dfnydus/dfnydus/peer/nydusapi"
)

// The nydusd-compatible front: containerd's nydus-snapshotter launches "nydusd" for every nydus
// image; pointing its nydusd_path at a symlink named nydusd (or running `dfnydus nydusd ...`)
// makes dfnydus that daemon. The flags are those nydus-snapshotter v0.16.1 passes
// (pkg/daemon/command/command.go); see docs/containers.md.

type nydusdFlags struct {
	config, bootstrap, mountpoint, apisock string
	id, supervisor                         string
	upgrade                                bool
	threadNum                              int
	logLevel, logFile                      string
	logRotationSize                        int
	failoverPolicy                         string
	prefetchFiles, backendSource           string
	fscache                                string
	fscacheThreads                         int
	version                                bool
	allowOther, fuseDebug                  bool
	fsDriver                               string
}

// fsDriverEnv sets `dfnydus nydusd --fs-driver`: the snapshotter execs nydusd with its own flags
// and passes its environment on, so the environment (or a wrapper) is how an operator chooses.
const fsDriverEnv = "DFNYDUS_FS_DRIVER"

// newNydusdCmd is the `dfnydus nydusd` subcommand: it hands its arguments to the nydusd command
// tree, so flags are parsed exactly as when dfnydus runs as "nydusd".
func newNydusdCmd() *cobra.Command {
	return &cobra.Command{
		Use:                "nydusd [fuse] --config FILE --bootstrap FILE --mountpoint DIR --apisock SOCK ...",
		Short:              "Serve as the nydusd of containerd's nydus-snapshotter (also: run dfnydus as \"nydusd\")",
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if code := runNydusd(cmd.Context(), args, cmd.OutOrStdout(), cmd.ErrOrStderr()); code != 0 {
				os.Exit(code)
			}
			return nil
		},
	}
}

// runNydusd runs the nydusd command line args and returns the process exit code.
func runNydusd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newNydusdRoot(stdout)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(stderr, "nydusd (dfnydus):", err)
		return 1
	}
	return 0
}

func newNydusdRoot(stdout io.Writer) *cobra.Command {
	f := &nydusdFlags{}
	run := func(cmd *cobra.Command, _ []string) error {
		if f.version {
			printNydusdVersion(stdout)
			return nil
		}
		return runNydusdFuse(cmd.Context(), f)
	}
	root := &cobra.Command{
		Use:           "nydusd",
		Short:         "dfnydus as nydusd: serve a RAFS image over FUSE with the nydusd HTTP API",
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE:          run,
	}
	fl := root.PersistentFlags()
	fl.BoolVarP(&f.version, "version", "V", false, "print version information")
	fl.StringVar(&f.config, "config", "", "nydusd v1 JSON configuration file")
	fl.StringVar(&f.bootstrap, "bootstrap", "", "RAFS bootstrap to mount at --mountpoint (dedicated mode)")
	fl.StringVar(&f.mountpoint, "mountpoint", "", "FUSE mountpoint (shared mode: instances mount under it)")
	fl.StringVar(&f.apisock, "apisock", "", "unix socket of the HTTP API")
	fl.StringVar(&f.id, "id", "", "daemon id (reported by GET /api/v1/daemon)")
	fl.StringVar(&f.supervisor, "supervisor", "", "supervisor socket for failover (not supported: ignored)")
	fl.BoolVar(&f.upgrade, "upgrade", false, "start to take over a running daemon's FUSE session (not supported)")
	fl.IntVar(&f.threadNum, "thread-num", 0, "FUSE worker threads (ignored: Go schedules requests)")
	fl.StringVar(&f.logLevel, "log-level", "info", "trace, debug, info, warn or error")
	fl.StringVar(&f.logFile, "log-file", "", "write logs to this file (default: stderr)")
	fl.IntVar(&f.logRotationSize, "log-rotation-size", 0, "log rotation size in MB (ignored)")
	fl.StringVar(&f.failoverPolicy, "failover-policy", "", "FUSE failover policy: none, resend or flush (ignored)")
	fl.StringVar(&f.prefetchFiles, "prefetch-files", "", "files to prefetch, separated by newlines or commas (default: the image's list)")
	fl.StringVar(&f.backendSource, "backend-source", "", "URL to fetch the backend configuration from (not supported)")
	fl.StringVar(&f.fscache, "fscache", "", "fscache work directory (singleton mode; not supported)")
	fl.IntVar(&f.fscacheThreads, "fscache-threads", 0, "fscache threads (not supported)")
	fl.BoolVar(&f.allowOther, "allow-other", true, "let every user read the mounts (FUSE allow_other)")
	fl.BoolVar(&f.fuseDebug, "fuse-debug", false, "log every FUSE request")
	fl.StringVar(&f.fsDriver, "fs-driver", os.Getenv(fsDriverEnv), "how the kernel sees the images: fuse, erofs (the kernel's EROFS, RAFS v6 only) or "+
		"auto (erofs where possible, else fuse); default: the dfnydus daemon's fsDriver when mounting through it, else fuse (env "+fsDriverEnv+")")
	fuseCmd := &cobra.Command{
		Use:   "fuse",
		Short: "serve RAFS over FUSE (the form nydus-snapshotter uses)",
		Args:  cobra.NoArgs,
		RunE:  run,
	}
	singleton := &cobra.Command{
		Use:   "singleton",
		Short: "fscache/EROFS singleton daemon (not supported by dfnydus)",
		RunE: func(*cobra.Command, []string) error {
			return fmt.Errorf("singleton (fscache) mode: %w; configure the snapshotter with fs_driver \"fusedev\"", nydusapi.ErrUnsupported)
		},
	}
	root.AddCommand(fuseCmd, singleton)
	return root
}

// nydusdVersion returns the version and the git commit this binary was built from.
func nydusdVersion() (ver, commit, built string) {
	ver, commit, built = version, "unknown", "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
			case "vcs.time":
				built = s.Value
			}
		}
	}
	if commit == "unknown" && ver != "" {
		commit = ver
	}
	return ver, commit, built
}

// printNydusdVersion prints what `nydusd --version` prints (nydus src/bin/nydusd/main.rs, the
// BuildTimeInfo dump); the snapshotter parses the "Git Commit:" line.
func printNydusdVersion(w io.Writer) {
	ver, commit, built := nydusdVersion()
	fmt.Fprintf(w, "Version: \t%s\nGit Commit: \t%s\nBuild Time: \t%s\nProfile: \trelease\nRustc: \t\t%s (dfnydus, Go)\n",
		ver, commit, built, runtime.Version())
}

// nydusdLogger logs at level to the log file (or stderr), and errors to stderr as well, so the
// snapshotter's own log shows why a daemon failed to start.
func nydusdLogger(level, file string) (*zap.Logger, func(), error) {
	if level == "trace" {
		level = "debug"
	}
	var lvl zapcore.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, nil, fmt.Errorf("--log-level: %w", err)
	}
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	encoder := zapcore.NewConsoleEncoder(enc)
	stderr := zapcore.Lock(os.Stderr)
	closeFn := func() {}
	var core zapcore.Core
	if file == "" {
		core = zapcore.NewCore(encoder, stderr, lvl)
	} else {
		fh, err := os.OpenFile(file, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, nil, fmt.Errorf("--log-file: %w", err)
		}
		closeFn = func() { _ = fh.Close() }
		core = zapcore.NewTee(zapcore.NewCore(encoder, zapcore.Lock(fh), lvl),
			zapcore.NewCore(encoder, stderr, zapcore.ErrorLevel))
	}
	return zap.New(core).With(zap.Int("pid", os.Getpid())), closeFn, nil
}

func runNydusdFuse(ctx context.Context, f *nydusdFlags) error {
	log, closeLog, err := nydusdLogger(f.logLevel, f.logFile)
	if err != nil {
		return err
	}
	defer closeLog()
	err = serveNydusd(ctx, f, log)
	if err != nil {
		log.Error("nydusd failed", zap.Error(err))
	}
	_ = log.Sync()
	return err
}

func serveNydusd(ctx context.Context, f *nydusdFlags, log *zap.Logger) error {
	switch {
	case f.fscache != "":
		return fmt.Errorf("--fscache: %w; configure the snapshotter with fs_driver \"fusedev\"", nydusapi.ErrUnsupported)
	case f.upgrade:
		return fmt.Errorf("--upgrade: taking over a running daemon's FUSE session is %w; use recover_policy \"restart\"", nydusapi.ErrUnsupported)
	case f.apisock == "":
		return errors.New("--apisock is required")
	case f.mountpoint == "":
		return errors.New("--mountpoint is required")
	case f.bootstrap != "" && f.config == "":
		return errors.New("--bootstrap needs --config")
	}
	if f.fsDriver != "" {
		if err := daemon.CheckFSDriver(f.fsDriver); err != nil {
			return fmt.Errorf("--fs-driver (or $%s): %w", fsDriverEnv, err)
		}
	}
	var ignored []string
	if f.supervisor != "" {
		ignored = append(ignored, "--supervisor (no FUSE session hand-over: recover_policy \"restart\" works, \"failover\" does not)")
	}
	if f.backendSource != "" {
		ignored = append(ignored, "--backend-source (the backend comes from --config)")
	}
	if f.threadNum > 0 || f.logRotationSize > 0 || f.failoverPolicy != "" {
		ignored = append(ignored, "--thread-num, --log-rotation-size, --failover-policy (no equivalent)")
	}
	for _, ig := range ignored {
		log.Warn("ignoring flag", zap.String("flag", ig))
	}

	// Everything that can be checked before mounting is: a bad configuration or bootstrap fails the
	// start with nothing mounted.
	var spec *nydusapi.MountSpec
	if f.bootstrap != "" {
		data, err := os.ReadFile(f.config)
		if err != nil {
			return fmt.Errorf("--config: %w", err)
		}
		cfg, err := nydusapi.ParseConfig(data)
		if err != nil {
			return fmt.Errorf("--config %s: %w", f.config, err)
		}
		for _, ig := range cfg.Ignored {
			log.Info("ignoring configuration setting", zap.String("setting", ig))
		}
		img, err := nydusapi.LoadBootstrap(f.bootstrap)
		if err != nil {
			return err
		}
		// Refuse before daemonizing, as the mount itself would.
		if err := img.Unsupported(); err != nil {
			return fmt.Errorf("bootstrap %s: %w", f.bootstrap, err)
		}
		spec = &nydusapi.MountSpec{ID: "/", Mountpoint: f.mountpoint, Bootstrap: f.bootstrap, Config: cfg,
			PrefetchFiles: splitPrefetchFiles(f.prefetchFiles)}
	} else if err := os.MkdirAll(f.mountpoint, 0o755); err != nil {
		return fmt.Errorf("--mountpoint: %w", err)
	}

	ver, commit, built := nydusdVersion()
	exit := make(chan struct{})
	mounter, closeMounter := nydusdMounter(ctx, f, log)
	defer closeMounter()
	srv := nydusapi.NewServer(nydusapi.ServerOptions{ID: f.id, Mounter: mounter, Root: f.mountpoint, Log: log,
		Version: nydusapi.BuildInfo{PackageVer: ver, GitCommit: commit, BuildTime: built, Profile: "release", Rustc: runtime.Version()},
		Exit:    func() { close(exit) }})
	if err := srv.Listen(f.apisock); err != nil {
		return err
	}
	shutdown := func() error {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err := srv.Close(sctx)
		if rerr := os.Remove(f.apisock); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = errors.Join(err, rerr)
		}
		return err
	}
	if spec != nil {
		if err := srv.Mount(ctx, *spec); err != nil {
			return errors.Join(err, shutdown())
		}
	}
	srv.SetState(nydusapi.StateReady)
	srv.SetState(nydusapi.StateRunning)
	log.Info("nydusd running", zap.String("mountpoint", f.mountpoint), zap.String("apisock", f.apisock), zap.String("version", ver))
	select {
	case <-ctx.Done():
		log.Info("signalled: unmounting and exiting")
	case <-exit:
		log.Info("exit requested: unmounting and exiting")
	}
	if err := shutdown(); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Info("nydusd stopped")
	return nil
}

// nydusdMounter picks how the images are mounted: through the dfnydus daemon answering on
// $DFNYDUS_SOCKET or the default control socket (its store, its P2P; mounts outlive this process),
// else in this process. The second result releases what the mounter holds (not the mounts).
func nydusdMounter(ctx context.Context, f *nydusdFlags, log *zap.Logger) (nydusapi.Mounter, func()) {
	socket := defaultDaemonSocket()
	c, err := connectDaemon(ctx, socket)
	if err != nil {
		log.Warn("the dfnydus daemon does not answer: mounting in this process", zap.String("socket", socket), zap.Error(err))
	}
	if c != nil {
		pctx, cancel := context.WithTimeout(ctx, probeTimeout)
		v, verr := c.Version(pctx)
		cancel()
		if verr == nil {
			log.Info("mounting through the dfnydus daemon (its store and P2P)", zap.String("socket", socket),
				zap.Int("daemon_pid", v.PID), zap.String("daemon_version", v.Version), zap.Bool("p2p", v.P2P))
			m := nydusapi.NewDaemonMounter(c, nydusapi.DaemonOptions{Log: log, AllowOther: f.allowOther, FuseDebug: f.fuseDebug,
				FSDriver: f.fsDriver})
			return m, func() { _ = m.Close() }
		}
		log.Warn("the dfnydus daemon does not answer: mounting in this process", zap.String("socket", socket), zap.Error(verr))
		c.Close()
	} else if err == nil {
		log.Info("no dfnydus daemon answers: mounting in this process", zap.String("socket", socket))
	}
	return nydusapi.NewLocalMounter(nydusapi.LocalOptions{Log: log, UserAgent: "dfnydus/" + version,
		AllowOther: f.allowOther, FuseDebug: f.fuseDebug, FSDriver: f.fsDriver}), func() {}
}

// splitPrefetchFiles splits --prefetch-files into absolute paths.
func splitPrefetchFiles(s string) []string {
	var out []string
	for _, p := range strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == ',' }) {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, "/"+strings.TrimPrefix(p, "/"))
		}
	}
	return out
}
