// Command dfnydus builds, inspects, checks and unpacks nydus (RAFS) images.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"syscall"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if filepath.Base(os.Args[0]) == "nydusd" { // nydus-snapshotter's nydusd_path pointing at a symlink to dfnydus
		os.Exit(runNydusd(ctx, os.Args[1:], os.Stdout, os.Stderr))
	}
	if err := newRoot().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "dfnydus:", err)
		os.Exit(1)
	}
}

type globals struct {
	logLevel   string
	cpuProfile string
	log        *zap.Logger
	stopProf   func()
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "dfnydus",
		Short:         "nydus images inside a Dragonfly peer: build, inspect, check, unpack",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			var lvl zapcore.Level
			if err := lvl.UnmarshalText([]byte(g.logLevel)); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			cfg := zap.NewProductionConfig()
			cfg.Level = zap.NewAtomicLevelAt(lvl)
			cfg.Encoding = "console"
			cfg.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
			log, err := cfg.Build()
			if err != nil {
				return err
			}
			g.log = log
			return g.startProfile()
		},
		PersistentPostRun: func(*cobra.Command, []string) { g.stopProfile() },
	}
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	root.PersistentFlags().StringVar(&g.cpuProfile, "cpu-profile", "", "write a Go CPU profile to this file")
	_ = root.PersistentFlags().MarkHidden("cpu-profile")
	root.AddCommand(newBuildCmd(g), newConvertCmd(g), newInspectCmd(g), newCheckCmd(g), newUnpackCmd(g),
		newMountCmd(g), newUmountCmd(g), newStatCmd(g), newProfileCmd(g))
	root.AddCommand(newDaemonCmd(g), newListCmd(g), newPreheatCmd(g))
	root.AddCommand(newNydusdCmd())
	return root
}

func (g *globals) startProfile() error {
	if g.cpuProfile == "" {
		return nil
	}
	f, err := os.Create(g.cpuProfile)
	if err != nil {
		return fmt.Errorf("--cpu-profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return fmt.Errorf("--cpu-profile: %w", err)
	}
	g.stopProf = func() { pprof.StopCPUProfile(); f.Close() }
	return nil
}

func (g *globals) stopProfile() {
	if g.stopProf != nil {
		g.stopProf()
		g.stopProf = nil
	}
}
