package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/dfnydus/dfnydus/internal/atomicfile"
	"github.com/dfnydus/dfnydus/internal/progress"
	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/bootstrap"
	"github.com/dfnydus/dfnydus/rafs/builder"
)

// formatFlags are the image-format options build and convert share.
type formatFlags struct {
	compressor, digester, chunkSize, prefetchList string
	prefetchTrace, prefetchPatterns               string
	fsVersion, workers                            int
}

func (f *formatFlags) add(fl *pflag.FlagSet) {
	fl.IntVar(&f.fsVersion, "fs-version", 6, "RAFS version: 5 or 6")
	fl.StringVar(&f.compressor, "compressor", "zstd", "chunk compressor: none, lz4_block, gzip, zstd")
	fl.StringVar(&f.digester, "digester", "blake3", "chunk digest: blake3, sha256")
	fl.StringVar(&f.chunkSize, "chunk-size", "0x100000", "chunk size, a power of two from 0x1000 to 0x1000000")
	fl.StringVar(&f.prefetchList, "prefetch-list", "", "file with one absolute path per line to prefetch first ('-' for stdin)")
	fl.StringVar(&f.prefetchTrace, "prefetch-trace", "", "start trace (dfnydus profile -o, mount --record-trace) whose files, in order of first read, become the prefetch table")
	fl.StringVar(&f.prefetchPatterns, "prefetch-patterns", "", "file with one absolute path per line, as nydusify's --prefetch-patterns (a directory means everything under it; '-' for stdin)")
	fl.IntVar(&f.workers, "workers", 0, "compression workers (0: one per CPU)")
}

func (f *formatFlags) options() (builder.Options, error) {
	o := builder.DefaultOptions()
	o.FSVersion, o.Workers = f.fsVersion, f.workers
	var err error
	if o.Compressor, err = rafs.ParseCompressor(f.compressor); err != nil {
		return o, err
	}
	if o.Digester, err = rafs.ParseDigester(f.digester); err != nil {
		return o, err
	}
	cs, err := strconv.ParseUint(f.chunkSize, 0, 32)
	if err != nil || !rafs.ValidChunkSize(cs) {
		return o, fmt.Errorf("--chunk-size %q: want a power of two from 0x1000 to 0x1000000", f.chunkSize)
	}
	o.ChunkSize = uint32(cs)
	if o.Prefetch, err = f.prefetchPaths(); err != nil {
		return o, err
	}
	return o, nil
}

type buildFlags struct {
	formatFlags
	bootstrap, blobDir, chunkDict, outputJSON string
	inlineMeta                                bool
}

func newBuildCmd(g *globals) *cobra.Command {
	f := &buildFlags{}
	cmd := &cobra.Command{
		Use:   "build (--bootstrap FILE | --blob-inline-meta) --blob-dir DIR [options] SOURCE...",
		Short: "Build a nydus image from directories or (OCI layer) tars, lowest layer first",
		Long: `Build writes one data blob per SOURCE into --blob-dir (named by its sha256, the blob id) and one
bootstrap merged over all SOURCEs with OCI whiteouts (.wh.NAME, .wh..wh..opq) applied. A SOURCE is a
directory or a tar, plain or gzip/zstd compressed.

With --blob-inline-meta the bootstrap goes into the last SOURCE's blob instead of a file, as
nydus-image --blob-inline-meta does: give that blob as --bootstrap to inspect, check, unpack and mount.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return runBuild(cmd, g, f, args) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.bootstrap, "bootstrap", "", "output bootstrap file (required unless --blob-inline-meta)")
	fl.BoolVar(&f.inlineMeta, "blob-inline-meta", false, "write the bootstrap into the last SOURCE's blob instead of --bootstrap (fs-version 6)")
	// nydus-image's other name for the same option.
	fl.BoolVar(&f.inlineMeta, "inline-bootstrap", false, "same as --blob-inline-meta")
	_ = fl.MarkHidden("inline-bootstrap")
	fl.StringVar(&f.blobDir, "blob-dir", "", "directory the blobs are written to (required)")
	f.formatFlags.add(fl)
	fl.StringVar(&f.chunkDict, "chunk-dict", "", "bootstrap of an existing image whose chunks may be reused (also bootstrap=PATH)")
	fl.StringVar(&f.outputJSON, "output-json", "", "write a JSON summary (blobs, stats) to this file")
	_ = cmd.MarkFlagRequired("blob-dir")
	return cmd
}

func (f *buildFlags) options() (builder.Options, error) {
	o, err := f.formatFlags.options()
	if err != nil {
		return o, err
	}
	o.InlineBootstrap = f.inlineMeta
	if f.chunkDict != "" {
		_, dict, err := bootstrap.Load(strings.TrimPrefix(f.chunkDict, "bootstrap="))
		if err != nil {
			return o, fmt.Errorf("--chunk-dict: %w", err)
		}
		// Its chunks would become the new image's, which could then not be read either.
		if err := dict.Unsupported(); err != nil {
			return o, fmt.Errorf("--chunk-dict: %w", err)
		}
		o.ChunkDict = dict
	}
	return o, nil
}

func readPrefetchList(p string) ([]string, error) {
	var r io.Reader = os.Stdin
	if p != "-" {
		fh, err := os.Open(p)
		if err != nil {
			return nil, err
		}
		defer fh.Close()
		r = fh
	}
	var out []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if !strings.HasPrefix(line, "/") {
			return nil, fmt.Errorf("%q is not an absolute path", line)
		}
		out = append(out, filepath.Clean(line))
	}
	return out, sc.Err()
}

type buildSummary struct {
	Bootstrap string         `json:"bootstrap"` // the file, or with --blob-inline-meta the blob, holding it
	FSVersion int            `json:"fs_version"`
	Blobs     []string       `json:"blobs"`       // every blob the image references
	NewBlobs  []*string      `json:"layer_blobs"` // per source: the blob written, or null
	Stats     builder.Stats  `json:"stats"`
	Seconds   float64        `json:"seconds"`
	Extra     map[string]any `json:"extra,omitempty"`
}

func runBuild(cmd *cobra.Command, g *globals, f *buildFlags, args []string) error {
	switch {
	case f.bootstrap == "" && !f.inlineMeta:
		return errors.New("give --bootstrap FILE, or --blob-inline-meta to put the bootstrap in the last blob")
	case f.bootstrap != "" && f.inlineMeta:
		return errors.New("--bootstrap and --blob-inline-meta exclude each other: with --blob-inline-meta the last blob holds the bootstrap")
	case f.inlineMeta && f.fsVersion != 6:
		return fmt.Errorf("--blob-inline-meta needs --fs-version 6 (v5 blobs have no place for a bootstrap), not %d", f.fsVersion)
	}
	// A build can take long; an output it could not write would only fail it at the end.
	if err := checkOutputs(map[string]string{"--bootstrap": f.bootstrap, "--output-json": f.outputJSON}, f.blobDir); err != nil {
		return err
	}
	opts, err := f.options()
	if err != nil {
		return err
	}
	var layers []builder.Layer
	var total int64
	for _, a := range args {
		layers = append(layers, builder.PathLayer(a))
		if fi, err := os.Stat(a); err == nil && !fi.IsDir() {
			total += fi.Size()
		}
	}
	bar := progress.New(cmd.ErrOrStderr(), "build")
	opts.Progress = func(n int64) { bar.Update(n, 0) }
	start := time.Now()
	res, err := builder.Build(cmd.Context(), opts, f.blobDir, layers)
	if err != nil {
		return err
	}
	bar.Done(res.Stats.BytesRead, 0)
	if f.bootstrap != "" {
		if err := writeFileAtomic(f.bootstrap, res.Bootstrap); err != nil {
			return err
		}
	}
	for _, w := range res.Warnings {
		g.log.Warn(w)
	}
	sum := buildSummary{Bootstrap: f.bootstrap, FSVersion: opts.FSVersion, Stats: res.Stats, Seconds: time.Since(start).Seconds()}
	if f.inlineMeta {
		// The blob that holds the bootstrap is what --bootstrap takes from now on.
		sum.Bootstrap = filepath.Join(f.blobDir, res.LayerBlobs[len(res.LayerBlobs)-1].ID)
	}
	for _, b := range res.Image.Blobs {
		sum.Blobs = append(sum.Blobs, b.ID)
	}
	for _, b := range res.LayerBlobs {
		if b == nil {
			sum.NewBlobs = append(sum.NewBlobs, nil)
		} else {
			id := b.ID
			sum.NewBlobs = append(sum.NewBlobs, &id)
		}
	}
	g.log.Info("built image", zap.String("bootstrap", sum.Bootstrap), zap.Strings("blobs", sum.Blobs),
		zap.Int64("files", res.Stats.Files), zap.Int64("bytes_read", res.Stats.BytesRead),
		zap.Int64("chunks_stored", res.Stats.StoredChunks), zap.Int64("chunks_deduped", res.Stats.DedupChunks),
		zap.Int64("chunks_from_dict", res.Stats.DictChunks), zap.Int64("stored_bytes", res.Stats.StoredBytes),
		zap.Duration("took", time.Since(start)))
	if f.outputJSON != "" {
		data, _ := json.MarshalIndent(sum, "", "  ")
		if err := writeFileAtomic(f.outputJSON, append(data, '\n')); err != nil {
			return err
		}
	}
	return nil
}

// checkOutputs fails when one of the output files (flag -> path; "" is not written) or the blob
// directory could not be written: a directory where a file goes, a file where a directory goes,
// or a nearest existing directory that is not writable.
func checkOutputs(files map[string]string, blobDir string) error {
	flags := make([]string, 0, len(files))
	for fl := range files {
		flags = append(flags, fl)
	}
	sort.Strings(flags)
	for _, fl := range flags {
		p := files[fl]
		if p == "" {
			continue
		}
		if fi, err := os.Stat(p); err == nil && fi.IsDir() {
			return fmt.Errorf("%s %s is a directory: give the path of the file to write", fl, p)
		}
		if err := checkWritableDir(filepath.Dir(p)); err != nil {
			return fmt.Errorf("%s %s: %w", fl, p, err)
		}
	}
	if blobDir != "" {
		if fi, err := os.Stat(blobDir); err == nil && !fi.IsDir() {
			return fmt.Errorf("--blob-dir %s is not a directory", blobDir)
		}
		if err := checkWritableDir(blobDir); err != nil {
			return fmt.Errorf("--blob-dir %s: %w", blobDir, err)
		}
	}
	return nil
}

// checkWritableDir checks that dir, or the nearest of its ancestors that exists (where the
// missing ones will be made), is a writable directory. Nothing is created.
func checkWritableDir(dir string) error {
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		switch {
		case errors.Is(err, os.ErrNotExist) && d != filepath.Dir(d):
			continue
		case err != nil:
			return err
		case !fi.IsDir():
			return fmt.Errorf("%s is not a directory", d)
		}
		if err := unix.Access(d, unix.W_OK|unix.X_OK); err != nil {
			return fmt.Errorf("directory %s is not writable: %w", d, err)
		}
		return nil
	}
}

// writeFileAtomic writes data to p, creating its directory, so that readers never see a
// half-written file (atomicfile).
func writeFileAtomic(p string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	return atomicfile.WriteFile(p, data, 0o644)
}
