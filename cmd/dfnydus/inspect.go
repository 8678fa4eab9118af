package main

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/dfnydus/dfnydus/rafs/inspect"
)

func newInspectCmd(g *globals) *cobra.Command {
	src := &imageSource{}
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "inspect (--bootstrap FILE | --image REF) [--json]",
		Short: "List every entry of an image",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Metadata only: an image whose blobs dfnydus cannot read is still listed, each such
			// blob marked, so that one can see what it holds and why it does not mount.
			img, _, cleanup, err := src.loadImage(cmd.Context(), g, false, true)
			if err != nil {
				return err
			}
			defer cleanup()
			entries, err := inspect.Entries(img)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(entries)
			}
			fmt.Fprintf(out, "RAFS v%d, chunk size %#x, %v, %v, %d blobs\n", img.Version, img.ChunkSize, img.Compressor, img.Digester, len(img.Blobs))
			for i, b := range img.Blobs {
				fmt.Fprintf(out, "blob %d: %s  %d chunks  %d bytes compressed, %d uncompressed  %v\n", i, b.ID, b.ChunkCount, b.CompressedSize, b.UncompressedSize, b.Compressor)
				if err := b.Unsupported(); err != nil {
					fmt.Fprintf(out, "  unreadable: %v\n", err)
				}
			}
			if len(img.Prefetch) > 0 {
				fmt.Fprintf(out, "prefetch: %s\n", strings.Join(img.Prefetch, " "))
			}
			tw := tabwriter.NewWriter(out, 0, 4, 1, ' ', 0)
			for _, e := range entries {
				x := make([]string, 0, len(e.Xattrs))
				for k := range e.Xattrs {
					x = append(x, k)
				}
				sort.Strings(x)
				target := ""
				if e.Target != "" {
					target = " -> " + e.Target
				}
				digest, xattrs := "", ""
				if e.Digest != "" {
					digest = e.Digest[:16] + "\t"
				}
				if len(x) > 0 {
					xattrs = "  xattrs=" + strings.Join(x, ",")
				}
				fmt.Fprintf(tw, "%s\t%s\t%d:%d\t%d\t%s\tnlink=%d\tchunks=%d\t%s%s%s%s\n", e.Type, e.Mode, e.UID, e.GID,
					e.Size, e.Mtime, e.Nlink, e.Chunks, digest, e.Path, target, xattrs)
			}
			return tw.Flush()
		},
	}
	src.add(cmd.Flags(), false)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON array with one object per path")
	return cmd
}
