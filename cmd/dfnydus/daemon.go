package main

import (
	"context"
	"errors"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/dfnydus/dfnydus/peer/daemon"
	"github.com/dfnydus/dfnydus/peer/p2p"
)

// daemonCloseTimeout bounds the wait for busy mounts to go away when the daemon stops.
const daemonCloseTimeout = 2 * time.Minute

func newDaemonCmd(g *globals) *cobra.Command {
	var cfgPath string
	cmd := &cobra.Command{
		Use:   "daemon [--config FILE]",
		Short: "Run the dfnydus peer: one store, many mounts, a control API for mount/umount/stat/list/preheat",
		Long: `Daemon runs until SIGTERM or SIGINT, then unmounts everything it serves. It owns the chunk
store under cacheDir and answers the control API on controlSocket, which dfnydus mount, umount,
stat, list and preheat use. Without --config it runs with the defaults; docs/config.md documents
every key and docs/dfnydus.yaml is an example.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := daemon.DefaultConfig()
			if cfgPath != "" {
				var err error
				if cfg, err = daemon.LoadConfig(cfgPath); err != nil {
					return err
				}
			}
			log := g.log
			if !cmd.Flags().Changed("log-level") { // the config's log.level, unless --log-level says otherwise
				l, err := newLogger(cfg.Log.Level)
				if err != nil {
					return err
				}
				log = l
			}
			defer log.Sync() //nolint:errcheck // stderr
			return runDaemon(cmd.Context(), cfg, log)
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "YAML config file (default: built-in defaults)")
	return cmd
}

// runDaemon serves until ctx is done (a signal), then unmounts everything and closes the store.
func runDaemon(ctx context.Context, cfg daemon.Config, log *zap.Logger) error {
	d, err := daemon.New(ctx, cfg, daemon.Options{Log: log, Version: version, NewDistributor: newDistributor(log)})
	if err != nil {
		return err
	}
	serveErr := d.Serve(ctx)
	if serveErr == nil {
		log.Info("signalled: unmounting everything")
	}
	cctx, cancel := context.WithTimeout(context.Background(), daemonCloseTimeout)
	defer cancel()
	return errors.Join(serveErr, d.Close(cctx))
}

// newDistributor makes the daemon's P2P Distributor (peer/p2p) from its config (scheduler.*), once
// the daemon's store and metrics exist.
func newDistributor(log *zap.Logger) func(ctx context.Context, d *daemon.Daemon) (daemon.Distributor, error) {
	return func(ctx context.Context, d *daemon.Daemon) (daemon.Distributor, error) {
		return p2p.NewDistributor(ctx, d, version, log)
	}
}
