package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.uber.org/zap"

	"github.com/dfnydus/dfnydus/oci"
	"github.com/dfnydus/dfnydus/peer/source"
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
}

func (o *openedImage) close() {
	o.src.Close()
	if o.closeFn != nil {
		o.closeFn()
	}
}

// sourceKind says which back-to-source reader a request asks for.
func sourceKind(req MountRequest) string {
	switch {
	case req.Ref == "":
		return "local"
	case strings.HasPrefix(req.Ref, "s3://"):
		return "s3"
	}
	return "registry"
}

// open reads the image's bootstrap (from the registry, or a local file for s3 and local sources).
func (d *Daemon) open(ctx context.Context, req MountRequest) (*openedImage, error) {
	switch sourceKind(req) {
	case "local":
		_, img, err := bootstrap.Load(req.Bootstrap)
		if err != nil {
			return nil, fmt.Errorf("bootstrap: %w", err)
		}
		blobs := make([]BlobRef, len(img.Blobs))
		for i, b := range img.Blobs {
			blobs[i] = BlobRef{ID: b.ID}
			if fi, err := os.Stat(filepath.Join(req.BlobDir, b.ID)); err == nil {
				blobs[i].Size = fi.Size()
			}
		}
		return &openedImage{name: req.Bootstrap, img: img, src: source.NewLocal(req.BlobDir), blobs: blobs}, nil
	case "s3":
		cfg, err := source.ParseS3URL(req.Ref)
		if err != nil {
			return nil, err
		}
		_, img, err := bootstrap.Load(req.Bootstrap)
		if err != nil {
			return nil, fmt.Errorf("bootstrap: %w", err)
		}
		src, err := source.NewS3(cfg)
		if err != nil {
			return nil, err
		}
		blobs := make([]BlobRef, len(img.Blobs))
		for i, b := range img.Blobs {
			blobs[i] = BlobRef{ID: b.ID, Size: int64(b.CompressedSize)}
		}
		return &openedImage{name: req.Ref, img: img, src: src, blobs: blobs}, nil
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
	// Chunk reads get a client without retries of its own: the Retrying source decides, so
	// attempts do not multiply.
	rc, err := d.registryClient(ropts, -1)
	if err != nil {
		return nil, err
	}
	scheme := "https"
	if ropts.PlainHTTP {
		scheme = "http"
	}
	blobs := make([]BlobRef, len(oimg.RAFS.Blobs))
	for i, b := range oimg.RAFS.Blobs {
		desc := oimg.Blobs[b.ID]
		blobs[i] = BlobRef{ID: b.ID, Size: desc.Size,
			URL: fmt.Sprintf("%s://%s/v2/%s/blobs/%s", scheme, oimg.Ref.Registry, oimg.Ref.Repository, desc.Digest)}
	}
	return &openedImage{name: oimg.Ref.String(), img: oimg.RAFS, src: source.NewRegistry(rc, oimg.Ref), blobs: blobs,
		closeFn: func() { rc.Close() }}, nil
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

// ParsePlatform parses "os/arch[/variant]"; "" is this host's platform.
func ParsePlatform(s string) (ocispec.Platform, error) {
	if s == "" {
		return registry.HostPlatform(), nil
	}
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return ocispec.Platform{}, fmt.Errorf("%w: platform %q: want os/arch[/variant]", ErrInvalidRequest, s)
	}
	p := ocispec.Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return registry.NormalizePlatform(p), nil
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
	for _, p := range []struct{ name, path string }{{"bootstrap", req.Bootstrap}, {"blob dir", req.BlobDir}} {
		if p.path != "" && !filepath.IsAbs(p.path) {
			return bad("%s %q: want an absolute path", p.name, p.path)
		}
	}
	switch sourceKind(req) {
	case "local":
		if req.Bootstrap == "" || req.BlobDir == "" {
			return bad("without an image reference, give a bootstrap and a blob dir")
		}
	case "s3":
		if req.Bootstrap == "" {
			return bad("an s3:// source needs a bootstrap")
		}
	}
	if req.Prefetch != "" {
		if _, err := parsePrefetch(req.Prefetch); err != nil {
			return req, err
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
