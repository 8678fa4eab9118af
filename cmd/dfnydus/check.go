package main

import (
	"fmt"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/dfnydus/dfnydus/rafs/bootstrap"
	"github.com/dfnydus/dfnydus/rafs/check"
)

func newCheckCmd(g *globals) *cobra.Command {
	var boot, blobDir string
	cmd := &cobra.Command{
		Use:   "check --bootstrap FILE --blob-dir DIR",
		Short: "Verify an image: superblock, tables, Merkle tree, ToC and every chunk",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, img, err := bootstrap.Load(boot)
			if err != nil {
				return err
			}
			rep, err := check.Image(cmd.Context(), img, blobDir)
			if err != nil {
				return fmt.Errorf("check failed: %w", err)
			}
			for _, w := range rep.Warnings {
				g.log.Warn(w)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "OK: RAFS v%d, %d entries, %d blobs, %d chunks (%d bytes) verified\n",
				img.Version, rep.Inodes, rep.Blobs, rep.Chunks, rep.Bytes)
			g.log.Debug("check passed", zap.Int("chunks", rep.Chunks))
			return nil
		},
	}
	cmd.Flags().StringVar(&boot, "bootstrap", "", "bootstrap file, bootstrap layer tar(.gz), or blob with an inlined bootstrap")
	cmd.Flags().StringVar(&blobDir, "blob-dir", "", "directory holding the blobs, named by blob id")
	_ = cmd.MarkFlagRequired("bootstrap")
	_ = cmd.MarkFlagRequired("blob-dir")
	return cmd
}
