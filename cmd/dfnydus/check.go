package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/dfnydus/dfnydus/rafs/check"
)

func newCheckCmd(g *globals) *cobra.Command {
	src := &imageSource{}
	cmd := &cobra.Command{
		Use:   "check (--bootstrap FILE --blob-dir DIR | --image REF)",
		Short: "Verify an image: superblock, tables, Merkle tree, ToC and every chunk",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			img, dir, cleanup, err := src.load(cmd.Context(), g, true)
			if err != nil {
				return err
			}
			defer cleanup()
			rep, err := check.Image(cmd.Context(), img, dir)
			if err != nil {
				return fmt.Errorf("check failed: %w", err)
			}
			for _, w := range rep.Warnings {
				g.log.Warn(w)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "OK: RAFS v%d, %d entries, %d blobs, %d chunks (%d bytes) verified\n",
				img.Version, rep.Inodes, rep.Blobs, rep.Chunks, rep.Bytes)
			return nil
		},
	}
	src.add(cmd.Flags(), true)
	return cmd
}
