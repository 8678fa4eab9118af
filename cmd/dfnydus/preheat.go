package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/term"

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
			ro, err := reg.requestOptions(cmd.Flags().Changed, g.log)
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
			stop := preheatProgress(cmd.ErrOrStderr(), args[0])
			err = c.Preheat(cmd.Context(), req)
			stop()
			if err != nil {
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

// preheatProgress shows the time spent on a terminal while the daemon preheats (the scheduler
// finds seed peers every 30 s, then they download every layer); it returns the function that
// ends the display.
func preheatProgress(w io.Writer, ref string) (stop func()) {
	f, ok := w.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return func() {}
	}
	done := make(chan struct{})
	exited := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(exited)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-done:
				fmt.Fprintf(f, "\r\033[K")
				return
			case <-tick.C:
				fmt.Fprintf(f, "\rpreheating %s: %s (seed peers downloading its layers)\033[K", ref, time.Since(start).Round(time.Second))
			}
		}
	}()
	return func() { close(done); <-exited }
}
