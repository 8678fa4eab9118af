package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/containerd/stargz-snapshotter/estargz"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.uber.org/zap"
)

// convertOptions are the flags of `estargz-bench convert`.
type convertOptions struct {
	srcTar           string   // layer tar (plain, gzip or zstd)
	registry         string   // HOST[:PORT], plain HTTP
	repo, tag        string   // destination
	prioritized      []string // files placed first in the blob (prefetch landmark); empty: none
	chunkSize        int      // eStargz chunk size; 0: the library's default (4 MiB)
	compressionLevel int      // gzip level
	workDir          string   // where the built blob is spooled; "": the system temp dir
	logLevel         string
}

func parseConvert(args []string, stderr io.Writer) (convertOptions, error) {
	o := convertOptions{}
	fs := flag.NewFlagSet("convert", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: estargz-bench convert --src-tar LAYER.tar --registry HOST:PORT --repo NAME [--tag T] [flags]")
		fs.PrintDefaults()
	}
	var prioritized string
	fs.StringVar(&o.srcTar, "src-tar", "", "layer `tar` to convert (uncompressed, gzip or zstd)")
	fs.StringVar(&o.registry, "registry", "", "destination registry `HOST:PORT` (plain HTTP)")
	fs.StringVar(&o.repo, "repo", "", "destination repository `NAME`")
	fs.StringVar(&o.tag, "tag", "latest", "destination `tag`")
	fs.StringVar(&prioritized, "prioritized-files", "", "comma-separated `paths` placed first in the blob (the prefetch landmark); empty: none")
	fs.IntVar(&o.chunkSize, "chunk-size", 0, "eStargz chunk size in `bytes` (0: library default, 4 MiB)")
	fs.IntVar(&o.compressionLevel, "compression-level", gzip.BestCompression, "gzip compression `level` (library default 9)")
	fs.StringVar(&o.workDir, "work-dir", "", "`dir` for the spooled blob (default: system temp dir; estargz.Build itself uses TMPDIR)")
	fs.StringVar(&o.logLevel, "log-level", "warn", "log `level`: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return o, fmt.Errorf("%w: convert: %w", errUsage, err)
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("%w: convert: unexpected arguments %q", errUsage, fs.Args())
	}
	for _, p := range strings.Split(prioritized, ",") {
		if p = strings.TrimSpace(p); p != "" {
			o.prioritized = append(o.prioritized, p)
		}
	}
	switch {
	case o.srcTar == "":
		return o, fmt.Errorf("%w: convert: --src-tar is required", errUsage)
	case o.registry == "":
		return o, fmt.Errorf("%w: convert: --registry is required", errUsage)
	case o.chunkSize < 0:
		return o, fmt.Errorf("%w: convert: --chunk-size %d is negative", errUsage, o.chunkSize)
	case o.compressionLevel < gzip.HuffmanOnly || o.compressionLevel > gzip.BestCompression:
		return o, fmt.Errorf("%w: convert: --compression-level %d out of range", errUsage, o.compressionLevel)
	}
	if err := validRepo(o.repo); err != nil {
		return o, fmt.Errorf("%w: convert: --repo: %w", errUsage, err)
	}
	if err := validTag(o.tag); err != nil {
		return o, fmt.Errorf("%w: convert: --tag: %w", errUsage, err)
	}
	return o, nil
}

// runConvert builds an eStargz layer from o.srcTar, pushes blob, config and manifest, and prints
//
//	REF HOST:PORT/NAME:TAG
//	TOC sha256:...             (the layer's TOC digest: the store's directory name)
//	LAYER sha256:... SIZE      (the compressed blob and its size in bytes)
func runConvert(ctx context.Context, o convertOptions, stdout io.Writer, log *zap.Logger) error {
	reg, err := newRegistryClient(o.registry, &http.Client{}, log)
	if err != nil {
		return err
	}
	blob, layer, err := buildLayer(ctx, o, log)
	if err != nil {
		return err
	}
	defer func() {
		_ = blob.Close()
		_ = os.Remove(blob.Name())
	}()
	if _, err := blob.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("rewind blob %s: %w", blob.Name(), err)
	}
	if err := reg.pushBlob(ctx, o.repo, layer.digest, layer.size, ctxReader{ctx, blob}); err != nil {
		return fmt.Errorf("push layer: %w", err)
	}
	config, err := imageConfig(layer.diffID)
	if err != nil {
		return err
	}
	configDesc := ocispec.Descriptor{
		MediaType: ocispec.MediaTypeImageConfig,
		Digest:    digest.FromBytes(config),
		Size:      int64(len(config)),
	}
	if err := reg.pushBlob(ctx, o.repo, configDesc.Digest, configDesc.Size, bytes.NewReader(config)); err != nil {
		return fmt.Errorf("push config: %w", err)
	}
	manifest, err := imageManifest(configDesc, layer.descriptor())
	if err != nil {
		return err
	}
	if err := reg.putManifest(ctx, o.repo, o.tag, ocispec.MediaTypeImageManifest, manifest); err != nil {
		return err
	}
	ref := imageRef{host: o.registry, repo: o.repo, tag: o.tag}
	log.Info("pushed eStargz image", zap.Stringer("ref", ref), zap.Stringer("toc", layer.tocDigest),
		zap.Int64("blob_bytes", layer.size), zap.Int64("tar_bytes", layer.uncompressedSize))
	if _, err := fmt.Fprintf(stdout, "REF %s\nTOC %s\nLAYER %s %d\n", ref, layer.tocDigest, layer.digest, layer.size); err != nil {
		return fmt.Errorf("write result: %w", err)
	}
	return nil
}

// buildLayer runs estargz.Build on o.srcTar and spools the blob into a temporary file (bounded
// memory; the registry upload needs the digest before the body). The caller removes the file.
func buildLayer(ctx context.Context, o convertOptions, log *zap.Logger) (*os.File, esgzLayer, error) {
	src, err := os.Open(o.srcTar)
	if err != nil {
		return nil, esgzLayer{}, fmt.Errorf("open source tar: %w", err)
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return nil, esgzLayer{}, fmt.Errorf("stat source tar: %w", err)
	}
	opts := []estargz.Option{
		estargz.WithContext(ctx),
		estargz.WithPrioritizedFiles(o.prioritized),
		estargz.WithCompressionLevel(o.compressionLevel),
	}
	if o.chunkSize > 0 {
		opts = append(opts, estargz.WithChunkSize(o.chunkSize))
	}
	blob, err := estargz.Build(io.NewSectionReader(src, 0, st.Size()), opts...)
	if err != nil {
		return nil, esgzLayer{}, fmt.Errorf("build eStargz from %s: %w", o.srcTar, err)
	}
	defer blob.Close()

	out, err := os.CreateTemp(o.workDir, "estargz-blob-*")
	if err != nil {
		return nil, esgzLayer{}, fmt.Errorf("create blob spool file: %w", err)
	}
	fail := func(err error) (*os.File, esgzLayer, error) {
		_ = out.Close()
		_ = os.Remove(out.Name())
		return nil, esgzLayer{}, err
	}
	dg := digest.Canonical.Digester()
	size, err := io.Copy(io.MultiWriter(out, dg.Hash()), ctxReader{ctx, blob})
	if err != nil {
		return fail(fmt.Errorf("write eStargz blob: %w", err))
	}
	if err := blob.Close(); err != nil {
		return fail(fmt.Errorf("finish eStargz build: %w", err))
	}
	usize, err := blob.UncompressedSize()
	if err != nil {
		return fail(fmt.Errorf("eStargz uncompressed size: %w", err))
	}
	layer := esgzLayer{
		digest:           dg.Digest(),
		size:             size,
		diffID:           blob.DiffID(),
		tocDigest:        blob.TOCDigest(),
		uncompressedSize: usize,
	}
	log.Debug("built eStargz layer", zap.Stringer("digest", layer.digest), zap.Int64("size", size),
		zap.Stringer("toc", layer.tocDigest), zap.Strings("prioritized", o.prioritized))
	return out, layer, nil
}

// ctxReader stops a copy once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
