package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/dfnydus/dfnydus/peer/daemon"
)

func newPreheatCmd(g *globals) *cobra.Command {
	var socket, platform string
	var reg registryFlags
	cmd := &cobra.Command{
		Use:   "preheat IMAGE_REF",
		Short: "Ask the daemon's P2P network to bring an image's blobs to seed peers",
		Long: `Preheat asks the running daemon to have the Dragonfly P2P network fetch the image's blobs into seed
peers, so the first mounts read them from peers instead of the registry. It needs a daemon with a
scheduler configured (scheduler.addrs).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := daemon.ParsePlatform(platform); err != nil {
				return fmt.Errorf("--platform: %w", err)
			}
			ro, err := reg.requestOptions(cmd.Flags().Changed)
			if err != nil {
				return err
			}
			c, err := needDaemon(cmd.Context(), socket)
			if err != nil {
				return err
			}
			defer c.Close()
			req := daemon.PreheatRequest{Ref: args[0], Platform: platform}
			if ro != nil {
				req.Registry = *ro
			}
			if err := c.Preheat(cmd.Context(), req); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "preheated %s\n", args[0])
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&platform, "platform", "", "platform to pick from an image index, os/arch[/variant] (default: the daemon's host)")
	reg.add(fl)
	addDaemonSocketFlag(fl, &socket)
	return cmd
}
