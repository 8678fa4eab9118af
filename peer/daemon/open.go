package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/platforms"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/dfnydus/dfnydus/blobstore"
	"github.com/dfnydus/dfnydus/oci"
	"github.com/dfnydus/dfnydus/peer"
	"github.com/dfnydus/dfnydus/peer/source"
	"github.com/dfnydus/dfnydus/peer/trace"
	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/bootstrap"
	"github.com/dfnydus/dfnydus/registry"
)

// openedImage is an image ready to mount: its model, its raw back-to-source reader, what P2P needs
// to know about its blobs, and what to close when it is unmounted.
type openedImage struct {
	name  string
	img   *rafs.Image
	src   source.Source
	blobs []BlobRef
	// closeFn releases what src does not own (a registry client); nil if nothing.
	closeFn func()
	// manifest is the nydus manifest's digest (registry images), bootstrap the bare bootstrap's:
	// what a start trace recorded on this image is bound to.
	manifest, bootstrap digest.Digest
	// trace is the start trace found as a referrer of the manifest, or nil; traceName its source.
	trace     *trace.Trace
	traceName string
	// raw is the bootstrap as stored (what the kernel's EROFS mounts); dropped once mounted.
	raw []byte
}

func (o *openedImage) close() {
	o.src.Close()
	if o.closeFn != nil {
		o.closeFn()
	}
}

// Source kinds a mount request can ask for (sourceKind).
const (
	kindLocal    = "local"
	kindS3       = "s3"
	kindRegistry = "registry"
	// kindRepoBootstrap is a registry repository's blobs with a bootstrap file given locally:
	// what nydus-snapshotter hands nydusd (image.boot + backend host/repo).
	kindRepoBootstrap = "registry+bootstrap"
)

// sourceKind says which back-to-source reader a request asks for.
func sourceKind(req MountRequest) string {
	switch {
	case req.Ref == "":
		return kindLocal
	case strings.HasPrefix(req.Ref, "s3://"):
		return kindS3
	case req.Bootstrap != "":
		return kindRepoBootstrap
	}
	return kindRegistry
}

// open reads the image's bootstrap (from the registry, or a local file for s3 and local sources).
func (d *Daemon) open(ctx context.Context, req MountRequest) (*openedImage, error) {
	switch sourceKind(req) {
	case kindLocal:
		raw, img, err := loadBootstrap(req.Bootstrap)
		if err != nil {
			return nil, err
		}
		blobs := make([]BlobRef, len(img.Blobs))
		for i, b := range img.Blobs {
			blobs[i] = BlobRef{ID: b.ID}
			if fi, err := os.Stat(filepath.Join(req.BlobDir, b.ID)); err == nil {
				blobs[i].Size = fi.Size()
			}
		}
		return &openedImage{name: req.Bootstrap, img: img, src: source.NewLocal(req.BlobDir), blobs: blobs,
			bootstrap: digest.FromBytes(raw), raw: raw}, nil
	case kindS3:
		cfg, err := source.ParseS3URL(req.Ref)
		if err != nil {
			return nil, err
		}
		raw, img, err := loadBootstrap(req.Bootstrap)
		if err != nil {
			return nil, err
		}
		src, err := source.NewS3(cfg)
		if err != nil {
			return nil, err
		}
		blobs := make([]BlobRef, len(img.Blobs))
		for i, b := range img.Blobs {
			blobs[i] = BlobRef{ID: b.ID, Size: int64(b.CompressedSize)}
		}
		return &openedImage{name: req.Ref, img: img, src: src, blobs: blobs, bootstrap: digest.FromBytes(raw), raw: raw}, nil
	case kindRepoBootstrap:
		return d.openRepoBootstrap(ctx, req)
	}
	ref, err := registry.ParseRef(req.Ref)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	platform, err := ParsePlatform(req.Platform)
	if err != nil {
		return nil, err
	}
	ropts := d.cfg.Registry.merge(req.Registry)
	c, err := d.registryClient(ropts, 0)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	oimg, err := oci.Open(ctx, c, ref, platform)
	if err != nil {
		return nil, err
	}
	if err := oimg.RAFS.Unsupported(); err != nil {
		return nil, fmt.Errorf("%s: %w", oimg.Ref, err)
	}
	// Chunk reads get a client without retries of its own: the Retrying source decides, so
	// attempts do not multiply.
	rc, err := d.registryClient(ropts, -1)
	if err != nil {
		return nil, err
	}
	blobs := make([]BlobRef, len(oimg.RAFS.Blobs))
	for i, b := range oimg.RAFS.Blobs {
		desc := oimg.Blobs[b.ID]
		blobs[i] = BlobRef{ID: b.ID, Size: desc.Size, URL: blobURL(ropts, oimg.Ref, desc.Digest)}
	}
	oi := &openedImage{name: oimg.Ref.String(), img: oimg.RAFS, src: source.NewRegistry(rc, oimg.Ref), blobs: blobs,
		closeFn: func() { rc.Close() }, manifest: oimg.ManifestDesc.Digest, bootstrap: digest.FromBytes(oimg.Bootstrap), raw: oimg.Bootstrap}
	if !req.NoTrace {
		oi.trace, oi.traceName = d.findTrace(ctx, c, oimg.Ref, oimg.ManifestDesc.Digest)
	}
	return oi, nil
}

// loadBootstrap reads a local bootstrap for mounting. An image with a blob the data path cannot
// read is refused here: mounted, it would fail every read of that blob with EIO.
func loadBootstrap(p string) ([]byte, *rafs.Image, error) {
	raw, img, err := bootstrap.Load(p)
	if err != nil {
		return nil, nil, fmt.Errorf("bootstrap: %w", err)
	}
	if err := img.Unsupported(); err != nil {
		return nil, nil, fmt.Errorf("bootstrap %s: %w", p, err)
	}
	return raw, img, nil
}

// blobURL is a blob's registry URL, the P2P task's URL: scheme://host/v2/REPO/blobs/DIGEST (http
// when the registry is reached over plain HTTP).
func blobURL(o RegistryOptions, ref registry.Ref, d digest.Digest) string {
	scheme := "https"
	if o.PlainHTTP {
		scheme = "http"
	}
	return fmt.Sprintf("%s://%s/v2/%s/blobs/%s", scheme, ref.Registry, ref.Repository, d)
}

// openRepoBootstrap opens a registry repository's blobs with a local bootstrap: Ref names the
// repository ("host/repo"; a tag or digest is ignored). Every blob with data is checked with a
// HEAD before anything is mounted, so refused credentials or a missing blob fail the mount instead
// of every later read; the HEAD also gives the size when the bootstrap does not record it.
func (d *Daemon) openRepoBootstrap(ctx context.Context, req MountRequest) (*openedImage, error) {
	ref, err := registry.ParseRef(req.Ref)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	ref.Tag, ref.Digest = "", ""
	raw, img, err := loadBootstrap(req.Bootstrap)
	if err != nil {
		return nil, err
	}
	ropts := d.cfg.Registry.merge(req.Registry)
	hc, err := d.registryClient(ropts, 0)
	if err != nil {
		return nil, err
	}
	defer hc.Close()
	blobs := make([]BlobRef, len(img.Blobs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i, b := range img.Blobs {
		dg := digest.NewDigestFromEncoded(digest.SHA256, b.ID)
		if err := dg.Validate(); err != nil {
			return nil, fmt.Errorf("bootstrap %s: blob id %q is not a sha256 digest: %w", req.Bootstrap, b.ID, err)
		}
		blobs[i] = BlobRef{ID: b.ID, Size: int64(b.CompressedSize), URL: blobURL(ropts, ref, dg)}
		if b.CompressedSize == 0 && b.ChunkCount == 0 {
			continue // no data (an empty layer): never read
		}
		g.Go(func() error {
			ok, size, err := hc.BlobExists(gctx, ref, dg)
			switch {
			case errors.Is(err, registry.ErrUnauthorized):
				return fmt.Errorf("registry %s refused the credentials for %s: %w", ref.Registry, ref.Repository, err)
			case err != nil:
				if blobs[i].Size == 0 {
					return fmt.Errorf("blob %s: the bootstrap has no size and the registry does not say: %w", b.ID, err)
				}
				d.log.Warn("cannot check blob before mounting; reads will retry", zap.String("blob", b.ID), zap.Error(err))
			case !ok:
				return fmt.Errorf("blob %s is not in %s: %w", b.ID, ref.Context(), registry.ErrNotFound)
			case blobs[i].Size == 0:
				blobs[i].Size = size
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	// Chunk reads get a client without retries of its own: the Retrying source decides.
	rc, err := d.registryClient(ropts, -1)
	if err != nil {
		return nil, err
	}
	return &openedImage{name: RepoBootstrapName(ref.Context(), req.Bootstrap), img: img, src: source.NewRegistry(rc, ref),
		blobs: blobs, closeFn: func() { rc.Close() }, bootstrap: digest.FromBytes(raw), raw: raw}, nil
}

// RepoBootstrapName is the MountInfo.Image of a mount of repository repo ("host/repo") with a
// local bootstrap file.
func RepoBootstrapName(repo, bootstrap string) string {
	return repo + " (bootstrap " + bootstrap + ")"
}

// registryClient returns a client with o's settings; retries as registry.Options.Retries.
func (d *Daemon) registryClient(o RegistryOptions, retries int) (*registry.Client, error) {
	c, err := registry.New(registry.Options{PlainHTTP: o.PlainHTTP, Insecure: o.Insecure, CAFile: o.CAFile,
		DockerConfig: o.DockerConfig, Username: o.Username, Password: o.Password, Retries: retries,
		Logger: d.log.Named("registry"), UserAgent: "dfnydus/" + d.opts.Version})
	if err != nil {
		return nil, fmt.Errorf("registry client: %w", err)
	}
	return c, nil
}

// ParsePlatform parses "os/arch[/variant]" (registry.ParsePlatform), normalised; "" is this host's
// platform.
func ParsePlatform(s string) (ocispec.Platform, error) {
	if s == "" {
		return registry.HostPlatform(), nil
	}
	p, err := registry.ParsePlatform(s)
	if err != nil {
		return ocispec.Platform{}, fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	return platforms.Normalize(p), nil
}

// checkRequest validates a mount request and returns it with the mountpoint cleaned.
func checkRequest(req MountRequest) (MountRequest, error) {
	bad := func(format string, args ...any) (MountRequest, error) {
		return req, fmt.Errorf("%w: %s", ErrInvalidRequest, fmt.Sprintf(format, args...))
	}
	if req.Mountpoint == "" || !filepath.IsAbs(req.Mountpoint) {
		return bad("mountpoint %q: want an absolute path", req.Mountpoint)
	}
	req.Mountpoint = filepath.Clean(req.Mountpoint)
	for _, p := range []struct{ name, path string }{{"bootstrap", req.Bootstrap}, {"blob dir", req.BlobDir}, {"trace file", req.RecordTrace}} {
		if p.path != "" && !filepath.IsAbs(p.path) {
			return bad("%s %q: want an absolute path", p.name, p.path)
		}
	}
	switch sourceKind(req) {
	case kindLocal:
		if req.Bootstrap == "" || req.BlobDir == "" {
			return bad("without an image reference, give a bootstrap and a blob dir")
		}
	case kindS3:
		if req.Bootstrap == "" {
			return bad("an s3:// source needs a bootstrap")
		}
	}
	if req.Prefetch != "" {
		if _, err := parsePrefetch(req.Prefetch); err != nil {
			return req, err
		}
	}
	if req.FSDriver != "" {
		if err := checkFSDriver(req.FSDriver); err != nil {
			return bad("fs driver: %v", err)
		}
	}
	return req, nil
}

// logSource describes where a request's blobs come from, for logs.
func logSource(req MountRequest) zap.Field {
	if req.Ref != "" {
		return zap.String("ref", req.Ref)
	}
	return zap.String("blob_dir", req.BlobDir)
}

// reconcileSizes checks each blob's size as the manifest (or the blob file, or a HEAD) says it
// against the bootstrap's record, which is verified with the bootstrap: a disagreement is a lying
// manifest and refuses the mount. A bootstrap without a record takes the other size, so the store,
// the P2P task and every later mount of the blob agree on one.
func reconcileSizes(oi *openedImage) error {
	for i := range oi.blobs {
		if i >= len(oi.img.Blobs) {
			break
		}
		ref, rec := oi.blobs[i].Size, oi.img.Blobs[i].CompressedSize
		switch {
		case ref < 0 || ref > blobstore.MaxBlobSize:
			return fmt.Errorf("blob %s: size %d out of range", oi.blobs[i].ID, ref)
		case ref > 0 && rec != 0 && uint64(ref) != rec:
			return fmt.Errorf("blob %s: %w: the manifest says %d bytes, the bootstrap %d", oi.blobs[i].ID, peer.ErrSizeMismatch, ref, rec)
		case ref > 0 && rec == 0:
			oi.img.Blobs[i].CompressedSize = uint64(ref)
		case ref == 0 && rec != 0:
			oi.blobs[i].Size = int64(rec)
		}
	}
	return nil
}
