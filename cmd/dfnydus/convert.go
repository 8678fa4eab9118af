package main

import (
	"fmt"
	"strings"
	"sync"

	"github.com/containerd/platforms"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/dfnydus/dfnydus/convert"
	"github.com/dfnydus/dfnydus/internal/progress"
	"github.com/dfnydus/dfnydus/registry"
)

type convertFlags struct {
	formatFlags
	reg          registryFlags
	chunkDict    string
	platforms    string
	withReferrer bool
	workDir      string
}

func newConvertCmd(g *globals) *cobra.Command {
	f := &convertFlags{}
	cmd := &cobra.Command{
		Use:   "convert SOURCE_REF TARGET_REF",
		Short: "Convert an OCI/Docker image in a registry into a nydus image in a registry",
		Long: `Convert pulls SOURCE_REF (one manifest, or an index with several platforms), builds one nydus blob per
layer and a merged bootstrap, and pushes blobs, the bootstrap layer, the config and the manifest (an index
for several platforms) to TARGET_REF, as nydusify does. Blobs the target already has are skipped, others
are mounted across repositories when possible; a convert killed midway resumes where it stopped.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error { return runConvert(cmd, g, f, args[0], args[1]) },
	}
	fl := cmd.Flags()
	f.formatFlags.add(fl)
	f.reg.add(fl)
	fl.StringVar(&f.chunkDict, "chunk-dict", "", "nydus image REF whose chunks the new image reuses (dedup across images)")
	fl.StringVar(&f.platforms, "platform", "", "platforms to convert from an index, e.g. linux/amd64,linux/arm64 (default: all)")
	fl.BoolVar(&f.withReferrer, "with-referrer", false, "set each nydus manifest's subject to its source manifest")
	fl.StringVar(&f.workDir, "work-dir", "", "where built blobs wait between runs (default: the user cache dir)")
	return cmd
}

// parsePlatforms parses --platform: a comma-separated list of os/arch[/variant], where "all" or
// nothing means every platform of the source.
func parsePlatforms(s string) ([]ocispec.Platform, error) {
	var out []ocispec.Platform
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		if p == "" || p == "all" {
			continue
		}
		pl, err := registry.ParsePlatform(p)
		if err != nil {
			return nil, fmt.Errorf("--platform: %w", err)
		}
		out = append(out, pl)
	}
	return out, nil
}

func runConvert(cmd *cobra.Command, g *globals, f *convertFlags, srcArg, dstArg string) error {
	bopts, err := f.formatFlags.options()
	if err != nil {
		return err
	}
	src, err := registry.ParseRef(srcArg)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	dst, err := registry.ParseRef(dstArg)
	if err != nil {
		return fmt.Errorf("target: %w", err)
	}
	plats, err := parsePlatforms(f.platforms)
	if err != nil {
		return err
	}
	c, err := f.reg.client(g.log)
	if err != nil {
		return err
	}
	bars := newBars(cmd)
	res, err := convert.Convert(cmd.Context(), c, src, dst, convert.Options{
		Build: bopts, ChunkDict: f.chunkDict, Platforms: plats, WithReferrer: f.withReferrer,
		WorkDir: f.workDir, Log: g.log, Progress: bars.event,
	})
	if err != nil {
		return err
	}
	for _, p := range res.Platforms {
		g.log.Info("converted", zap.String("platform", platformName(p.Platform)), zap.String("manifest", p.Manifest.Digest.String()),
			zap.Int("blobs", len(p.Blobs)), zap.Int("pushed", p.Pushed), zap.Int("skipped", p.Skipped), zap.Int("mounted", p.Mounted),
			zap.Int64("bytes_uploaded", p.BytesUploaded), zap.Int64("chunks_stored", p.Stats.StoredChunks),
			zap.Int64("chunks_from_dict", p.Stats.DictChunks))
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%s@%s\n", dst, res.Target.Digest)
	return nil
}

func platformName(p *ocispec.Platform) string {
	if p == nil {
		return "single"
	}
	return platforms.Format(*p)
}

// bars shows one progress line per layer being built or blob being pushed (terminals only).
type bars struct {
	mu   sync.Mutex
	cmd  *cobra.Command
	cur  *progress.Bar
	name string
}

func newBars(cmd *cobra.Command) *bars { return &bars{cmd: cmd} }

func (b *bars) event(e convert.Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	name := e.Phase + " " + shortDigest(e.Layer)
	if b.cur == nil || b.name != name {
		b.cur, b.name = progress.New(b.cmd.ErrOrStderr(), name), name
	}
	if e.Finished {
		b.cur.Done(e.Done, e.Total)
		b.cur = nil
		return
	}
	b.cur.Update(e.Done, e.Total)
}

func shortDigest(s string) string {
	s = strings.TrimPrefix(s, "sha256:")
	if len(s) > 12 {
		return s[:12]
	}
	return s
}
