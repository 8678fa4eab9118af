package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/pflag"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/dfnydus/dfnydus/peer/daemon"
)

// socketEnv names the daemon's control socket for every command that talks to it.
const socketEnv = "DFNYDUS_SOCKET"

// defaultDaemonSocket is $DFNYDUS_SOCKET, else the daemon's default control socket.
func defaultDaemonSocket() string {
	if s := os.Getenv(socketEnv); s != "" {
		return s
	}
	return daemon.DefaultControlSocket
}

// addDaemonSocketFlag adds --daemon-socket.
func addDaemonSocketFlag(fl *pflag.FlagSet, p *string) {
	fl.StringVar(p, "daemon-socket", defaultDaemonSocket(), "control socket of a running `dfnydus daemon` (env "+socketEnv+")")
}

// probeTimeout bounds the question "does a daemon answer on the socket?".
const probeTimeout = 10 * time.Second

// connectDaemon returns a client of the daemon answering on socket, or nil when none does (no
// socket, or nothing listening behind it). A daemon that is there but does not answer in time is
// an error.
func connectDaemon(ctx context.Context, socket string) (*daemon.Client, error) {
	if fi, err := os.Stat(socket); err != nil || fi.Mode().Type() != os.ModeSocket {
		return nil, nil
	}
	c, err := daemon.Dial(socket)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	if _, err := c.Version(ctx); err != nil {
		c.Close()
		if errors.Is(err, daemon.ErrUnavailable) {
			return nil, nil
		}
		return nil, err
	}
	return c, nil
}

// needDaemon is connectDaemon for commands that only work through a daemon.
func needDaemon(ctx context.Context, socket string) (*daemon.Client, error) {
	c, err := connectDaemon(ctx, socket)
	if err == nil && c == nil {
		err = fmt.Errorf("no dfnydus daemon answers at %s (start one with `dfnydus daemon`, or set --daemon-socket / %s)", socket, socketEnv)
	}
	return c, err
}

// newLogger builds the console logger every command uses, at level.
func newLogger(level string) (*zap.Logger, error) {
	var lvl zapcore.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	cfg := zap.NewProductionConfig()
	cfg.Level = zap.NewAtomicLevelAt(lvl)
	cfg.Encoding = "console"
	cfg.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	return cfg.Build()
}

// daemonConfig is the configuration of the in-process daemon of a foreground `dfnydus mount`,
// from its flags.
func (f *mountFlags) daemonConfig() (daemon.Config, error) {
	cacheDir, err := filepath.Abs(f.cacheDir)
	if err != nil {
		return daemon.Config{}, fmt.Errorf("--cache-dir: %w", err)
	}
	cfg := daemon.DefaultConfig()
	cfg.CacheDir = cacheDir
	cfg.Store = daemon.StoreConfig{Budget: daemon.ByteSize(f.budget), VerifyReads: f.verifyReads}
	cfg.MemoryCache = daemon.ByteSize(f.memCache)
	cfg.ReadWindow = daemon.ByteSize(f.readWindow)
	cfg.Metrics.Addr = f.metricsAddr
	cfg.Prefetch = daemon.PrefetchConfig{Mode: f.prefetch, Rate: daemon.ByteSize(f.prefetchRate)}
	cfg.Source.Retries = f.sourceRetries
	cfg.Registry = daemon.RegistryOptions{PlainHTTP: f.reg.plainHTTP, Insecure: f.reg.insecure, CAFile: f.reg.caFile, DockerConfig: f.reg.dockerCfg}
	if err := cfg.Validate(); err != nil {
		return daemon.Config{}, err
	}
	return cfg, nil
}

// requestOptions are the registry flags as a request's options (credentials included); nil when
// none was given.
func (f *registryFlags) requestOptions(changed func(string) bool, log *zap.Logger) (*daemon.RegistryOptions, error) {
	o := &daemon.RegistryOptions{PlainHTTP: f.plainHTTP, Insecure: f.insecure, CAFile: f.caFile, DockerConfig: f.dockerCfg}
	var err error
	if o.Username, o.Password, err = f.creds.get(log); err != nil {
		return nil, err
	}
	for _, p := range []*string{&o.CAFile, &o.DockerConfig} {
		if *p != "" {
			if *p, err = filepath.Abs(*p); err != nil {
				return nil, err
			}
		}
	}
	if *o == (daemon.RegistryOptions{}) && !changed("plain-http") && !changed("insecure") {
		return nil, nil
	}
	return o, nil
}
