// Command dfnydus builds, inspects, checks and unpacks nydus (RAFS) images.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
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
	if err := newRoot().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "dfnydus:", err)
		os.Exit(1)
	}
}

type globals struct {
	logLevel string
	log      *zap.Logger
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
			return nil
		},
	}
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	root.AddCommand(newBuildCmd(g), newInspectCmd(g), newCheckCmd(g), newUnpackCmd(g))
	return root
}
