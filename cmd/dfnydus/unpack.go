package main

import (
	"bufio"
	"strings"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/dfnydus/dfnydus/internal/atomicfile"
	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/blob"
	"github.com/dfnydus/dfnydus/rafs/unpack"
)

func newUnpackCmd(g *globals) *cobra.Command {
	src := &imageSource{}
	var output string
	cmd := &cobra.Command{
		Use:   "unpack (--bootstrap FILE --blob-dir DIR | --image REF) --output DIR|FILE.tar",
		Short: "Write an image's tree into a directory or a tar file, verifying every chunk",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			img, dir, cleanup, err := src.load(cmd.Context(), g, true)
			if err != nil {
				return err
			}
			defer cleanup()
			blobs := blob.NewDir(dir)
			defer blobs.Close()
			if strings.HasSuffix(output, ".tar") {
				return unpackTar(cmd, img, blobs, output)
			}
			if err := unpack.ToDir(cmd.Context(), img, blobs, output, unpack.Options{}); err != nil {
				return err
			}
			g.log.Info("unpacked", zap.String("output", output))
			return nil
		},
	}
	src.add(cmd.Flags(), true)
	cmd.Flags().StringVar(&output, "output", "", "output directory (created, must be empty) or a file ending in .tar")
	_ = cmd.MarkFlagRequired("output")
	return cmd
}

// unpackTar writes the tar beside output and renames it into place once complete.
func unpackTar(cmd *cobra.Command, img *rafs.Image, src rafs.ChunkReader, output string) error {
	f, err := atomicfile.Create(output, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	if err := unpack.ToTar(cmd.Context(), img, src, bw, unpack.Options{}); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	return f.Commit()
}
