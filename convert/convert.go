// Package convert turns an OCI or Docker image in a registry into a nydus image in a registry: it
// streams each source layer through the builder (one nydus blob per layer, one merged bootstrap),
// pushes the blobs (skipping those the target has, mounting across repositories), then the bootstrap
// layer, the rewritten config and the manifest, in that order, so no manifest ever points at a blob
// that is missing. Re-running after a crash pushes only what is not there yet.
package convert

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/platforms"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.uber.org/zap"

	"github.com/dfnydus/dfnydus/oci"
	"github.com/dfnydus/dfnydus/rafs/builder"
	"github.com/dfnydus/dfnydus/registry"
)

// Options configure a conversion.
type Options struct {
	Build builder.Options
	// ChunkDict names a nydus image whose chunks the new image reuses instead of storing them again.
	ChunkDict string
	// Platforms to convert from a multi-platform source; empty means all of them.
	Platforms []ocispec.Platform
	// WithReferrer sets each nydus manifest's subject to its source manifest.
	WithReferrer bool
	// WorkDir holds built blobs between runs (default: a directory under the user cache dir).
	WorkDir string
	Log     *zap.Logger
	// Progress receives per-layer progress events (may be nil).
	Progress func(Event)
}

// Event is a progress report: Phase "build" while a source layer streams in, "push" while a blob
// uploads; Done and Total are bytes (Total 0 when unknown).
type Event struct {
	Phase       string
	Layer       string
	Done, Total int64
	Finished    bool
}

// Result describes a finished conversion.
type Result struct {
	Target    ocispec.Descriptor // what the target tag points at (manifest or index)
	Platforms []PlatformResult
}

// PlatformResult is one converted manifest.
type PlatformResult struct {
	Platform      *ocispec.Platform
	Source        ocispec.Descriptor
	Manifest      ocispec.Descriptor
	Blobs         []string // blob ids, in blob-table order
	Pushed        int      // blobs uploaded
	Skipped       int      // blobs the target already had
	Mounted       int      // blobs mounted from another repository
	BytesUploaded int64
	Stats         builder.Stats
}

// Convert converts src into dst.
func Convert(ctx context.Context, c *registry.Client, src, dst registry.Ref, opts Options) (*Result, error) {
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	if opts.WorkDir == "" {
		dir, err := os.UserCacheDir()
		if err != nil {
			dir = os.TempDir()
		}
		opts.WorkDir = filepath.Join(dir, "dfnydus", "convert")
	}
	cv := &converter{c: c, src: src, dst: dst, opts: opts}
	if opts.ChunkDict != "" {
		if err := cv.loadDict(ctx); err != nil {
			return nil, err
		}
	}
	data, desc, err := c.GetManifest(ctx, src)
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", src, err)
	}
	res := &Result{}
	switch {
	case oci.IsManifest(desc.MediaType):
		pr, err := cv.platform(ctx, desc, data, nil)
		if err != nil {
			return nil, err
		}
		res.Platforms = append(res.Platforms, pr.PlatformResult)
		if err := cv.putManifestTag(ctx, pr.Manifest, pr.manifestData); err != nil {
			return nil, err
		}
		res.Target = pr.Manifest
	case oci.IsIndex(desc.MediaType):
		if err := cv.index(ctx, data, res); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("source %s: unsupported manifest media type %q", src, desc.MediaType)
	}
	return res, nil
}

type converter struct {
	c        *registry.Client
	src, dst registry.Ref
	opts     Options
	dict     *oci.Image
}

func (cv *converter) loadDict(ctx context.Context) error {
	ref, err := registry.ParseRef(cv.opts.ChunkDict)
	if err != nil {
		return fmt.Errorf("--chunk-dict: %w", err)
	}
	img, err := oci.Open(ctx, cv.c, ref, registry.HostPlatform())
	if err != nil {
		return fmt.Errorf("chunk dict %s: %w", ref, err)
	}
	cv.dict = img
	cv.opts.Build.ChunkDict = img.RAFS
	return nil
}

// index converts the selected platforms of a multi-platform source and pushes an index of them.
func (cv *converter) index(ctx context.Context, data []byte, res *Result) error {
	var idx ocispec.Index
	if err := json.Unmarshal(data, &idx); err != nil {
		return fmt.Errorf("source index: %w", err)
	}
	var entries []ocispec.Descriptor
	for _, m := range idx.Manifests {
		if !oci.IsManifest(m.MediaType) || m.Platform == nil || !cv.wanted(*m.Platform) || oci.IsNydusIndexEntry(m) {
			continue
		}
		mdata, mdesc, err := cv.c.GetManifest(ctx, cv.src.WithDigest(m.Digest))
		if err != nil {
			return fmt.Errorf("source %s platform %s: %w", cv.src, platformString(m.Platform), err)
		}
		mdesc.Platform = m.Platform
		pr, err := cv.platform(ctx, mdesc, mdata, m.Platform)
		if err != nil {
			return fmt.Errorf("platform %s: %w", platformString(m.Platform), err)
		}
		if _, err := cv.c.PutManifest(ctx, cv.dst.WithDigest(pr.Manifest.Digest), pr.Manifest.MediaType, pr.manifestData); err != nil {
			return fmt.Errorf("push manifest for %s: %w", platformString(m.Platform), err)
		}
		e := pr.Manifest
		e.Platform = m.Platform
		entries = append(entries, e)
		res.Platforms = append(res.Platforms, pr.PlatformResult)
	}
	if len(entries) == 0 {
		return fmt.Errorf("source %s: no manifest matches the requested platforms", cv.src)
	}
	ix, err := oci.NydusIndex(entries)
	if err != nil {
		return err
	}
	if err := cv.putManifestTag(ctx, ix.Desc, ix.Data); err != nil {
		return err
	}
	res.Target = ix.Desc
	return nil
}

func (cv *converter) putManifestTag(ctx context.Context, desc ocispec.Descriptor, data []byte) error {
	if _, err := cv.c.PutManifest(ctx, cv.dst, desc.MediaType, data); err != nil {
		return fmt.Errorf("push %s: %w", cv.dst, err)
	}
	cv.opts.Log.Info("pushed", zap.String("target", cv.dst.String()), zap.String("digest", desc.Digest.String()))
	return nil
}

// wanted reports whether p is one of the platforms asked for, compared as containerd compares them
// (x86_64 is amd64, arm64/v8 is arm64). One asked for without a variant takes every variant of its
// OS and architecture ("linux/arm" converts arm/v6 and arm/v7): the user is choosing what to
// convert, not what one host runs.
func (cv *converter) wanted(p ocispec.Platform) bool {
	if len(cv.opts.Platforms) == 0 {
		return true
	}
	for _, w := range cv.opts.Platforms {
		if w.Variant == "" {
			w.Variant = platforms.Normalize(p).Variant
		}
		if platforms.NewMatcher(w).Match(p) {
			return true
		}
	}
	return false
}

func platformString(p *ocispec.Platform) string {
	if p == nil {
		return "unknown"
	}
	return platforms.Format(*p)
}

// platformResult carries the manifest bytes next to the public result.
type platformResult struct {
	PlatformResult
	manifestData []byte
}

// layerMediaTypes are the source layer types convert can stream through the builder.
var layerMediaTypes = map[string]bool{
	ocispec.MediaTypeImageLayer:                    true,
	ocispec.MediaTypeImageLayerGzip:                true,
	ocispec.MediaTypeImageLayerZstd:                true,
	oci.MediaTypeDockerLayerGzip:                   true,
	"application/vnd.docker.image.rootfs.diff.tar": true,
}

// platform converts one source manifest and pushes everything but the manifest itself.
func (cv *converter) platform(ctx context.Context, srcDesc ocispec.Descriptor, data []byte, p *ocispec.Platform) (*platformResult, error) {
	var m ocispec.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("source manifest %s: %w", srcDesc.Digest, err)
	}
	if oci.IsNydus(&m) {
		return nil, fmt.Errorf("source %s is already a nydus image", cv.src)
	}
	for _, l := range m.Layers {
		if !layerMediaTypes[l.MediaType] {
			return nil, fmt.Errorf("source layer %s: unsupported media type %q", l.Digest, l.MediaType)
		}
	}
	configData, err := cv.fetchSmall(ctx, m.Config)
	if err != nil {
		return nil, fmt.Errorf("source config %s: %w", m.Config.Digest, err)
	}
	pr := &platformResult{PlatformResult: PlatformResult{Platform: p, Source: srcDesc}}

	b, err := cv.build(ctx, srcDesc, m.Layers)
	if err != nil {
		return nil, err
	}
	pr.Stats = b.Stats

	// Blobs first, in blob-table order: the image's own, and the chunk dict's it now references.
	var layers []ocispec.Descriptor
	for _, id := range b.Blobs {
		desc, err := cv.pushBlob(ctx, id, b.dir, pr)
		if err != nil {
			return nil, err
		}
		layers = append(layers, desc)
		pr.Blobs = append(pr.Blobs, id)
	}
	boot, err := oci.PackBootstrap(b.bootstrap)
	if err != nil {
		return nil, err
	}
	bootDesc := oci.BootstrapDescriptor(boot, cv.opts.Build.FSVersion, true)
	if err := cv.pushBytes(ctx, bootDesc, boot.Data, "bootstrap", pr); err != nil {
		return nil, err
	}
	layers = append(layers, bootDesc)
	cfg, err := oci.NydusConfig(configData, layers, boot)
	if err != nil {
		return nil, err
	}
	cfgDesc := oci.Config(cfg)
	if err := cv.pushBytes(ctx, cfgDesc, cfg, "config", pr); err != nil {
		return nil, err
	}
	var subject *ocispec.Descriptor
	if cv.opts.WithReferrer {
		subject = &srcDesc
	}
	man, err := oci.NydusManifest(cfgDesc, layers, subject)
	if err != nil {
		return nil, err
	}
	pr.Manifest, pr.manifestData = man.Desc, man.Data
	return pr, nil
}

// fetchSmall reads a small blob (a config) fully, verified.
func (cv *converter) fetchSmall(ctx context.Context, desc ocispec.Descriptor) ([]byte, error) {
	if desc.Size > 16<<20 {
		return nil, fmt.Errorf("%d bytes is too large for an image config", desc.Size)
	}
	rc, err := cv.c.FetchBlob(ctx, cv.src, desc)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

var errNotLocal = errors.New("blob is not in the work directory")

// pushBlob makes blob id present in the target: skipped if there, mounted from the source or chunk
// dict repository when possible, else uploaded from the work dir (chunk dict blobs are first copied
// there when they live on another registry).
func (cv *converter) pushBlob(ctx context.Context, id, dir string, pr *platformResult) (ocispec.Descriptor, error) {
	path := filepath.Join(dir, id)
	var mountFrom []registry.Ref
	size := int64(-1)
	if cv.dict != nil {
		if d, ok := cv.dict.Blobs[id]; ok {
			size = d.Size
			if cv.dict.Ref.Registry == cv.dst.Registry {
				mountFrom = append(mountFrom, cv.dict.Ref)
			}
		}
	}
	if fi, err := os.Stat(path); err == nil {
		size = fi.Size()
	}
	if size < 0 {
		return ocispec.Descriptor{}, fmt.Errorf("blob %s: %w", id, errNotLocal)
	}
	desc := oci.BlobDescriptor(id, size)
	if _, err := os.Stat(path); err != nil {
		// A chunk dict blob: try what needs no bytes, then copy it through the work dir.
		r, err := cv.c.PushBlob(ctx, cv.dst, desc, notLocal{}, mountFrom)
		if err == nil {
			cv.count(r, pr)
			return desc, nil
		}
		if !errors.Is(err, errNotLocal) {
			return desc, fmt.Errorf("push chunk dict blob %s: %w", id, err)
		}
		if err := oci.DownloadBlob(ctx, cv.c, cv.dict.Ref, desc, path); err != nil {
			return desc, fmt.Errorf("copy chunk dict blob %s: %w", id, err)
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return desc, err
	}
	defer f.Close()
	start := time.Now()
	r, err := cv.c.PushBlob(ctx, cv.dst, desc, cv.progressReaderAt(f, id, size), mountFrom)
	if err != nil {
		return desc, fmt.Errorf("push blob %s: %w", id, err)
	}
	cv.count(r, pr)
	cv.opts.Log.Info("blob", zap.String("id", id), zap.Int64("size", size), zap.Bool("skipped", r.Skipped),
		zap.Bool("mounted", r.Mounted), zap.Int64("uploaded", r.BytesUploaded), zap.Duration("took", time.Since(start)))
	cv.event(Event{Phase: "push", Layer: id, Done: size, Total: size, Finished: true})
	return desc, nil
}

func (cv *converter) count(r registry.PushResult, pr *platformResult) {
	switch {
	case r.Skipped:
		pr.Skipped++
	case r.Mounted:
		pr.Mounted++
	default:
		pr.Pushed++
	}
	pr.BytesUploaded += r.BytesUploaded
}

func (cv *converter) pushBytes(ctx context.Context, desc ocispec.Descriptor, data []byte, what string, pr *platformResult) error {
	r, err := cv.c.PushBlob(ctx, cv.dst, desc, bytesReaderAt(data), nil)
	if err != nil {
		return fmt.Errorf("push %s %s: %w", what, desc.Digest, err)
	}
	pr.BytesUploaded += r.BytesUploaded
	return nil
}

func (cv *converter) event(e Event) {
	if cv.opts.Progress != nil {
		cv.opts.Progress(e)
	}
}

// notLocal is a blob source that has no bytes: PushBlob reaching for them means neither the target
// had the blob nor could it be mounted.
type notLocal struct{}

func (notLocal) ReadAt([]byte, int64) (int, error) { return 0, errNotLocal }

type bytesReaderAt []byte

func (b bytesReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(b)) {
		return 0, io.EOF
	}
	n := copy(p, b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
