package oci

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/dfnydus/dfnydus/internal/atomicfile"
	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/bootstrap"
	"github.com/dfnydus/dfnydus/registry"
)

// MaxBootstrapLayer bounds the bootstrap layer we download.
const MaxBootstrapLayer = 512 << 20

// Image is a nydus image read back from a registry: its manifest, its verified bootstrap, and where
// each blob of its blob table lives.
type Image struct {
	Ref           registry.Ref // the repository, with the manifest's digest
	ManifestDesc  ocispec.Descriptor
	Manifest      ocispec.Manifest
	BootstrapDesc ocispec.Descriptor
	Bootstrap     []byte
	RAFS          *rafs.Image
	// Blobs maps each blob id of the bootstrap's blob table to its manifest layer (digest == id).
	Blobs map[string]ocispec.Descriptor
}

// Open resolves ref (an index is resolved for platform, preferring nydus entries), fetches the
// manifest, downloads and verifies the bootstrap layer and decodes it. Every blob the bootstrap
// references must be a layer of the manifest.
func Open(ctx context.Context, c *registry.Client, ref registry.Ref, platform ocispec.Platform) (*Image, error) {
	data, desc, err := c.GetManifest(ctx, ref)
	if err != nil {
		return nil, err
	}
	if IsIndex(desc.MediaType) {
		md, err := selectNydus(data, platform)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", ref, err)
		}
		if data, desc, err = c.GetManifest(ctx, ref.WithDigest(md.Digest)); err != nil {
			return nil, err
		}
	}
	if !IsManifest(desc.MediaType) {
		return nil, fmt.Errorf("%s: unsupported manifest media type %q", ref, desc.MediaType)
	}
	img := &Image{Ref: ref.WithDigest(desc.Digest), ManifestDesc: desc}
	if err := json.Unmarshal(data, &img.Manifest); err != nil {
		return nil, fmt.Errorf("%s: manifest: %w", ref, err)
	}
	if img.BootstrapDesc, err = FindBootstrap(&img.Manifest); err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	if img.BootstrapDesc.Size > MaxBootstrapLayer {
		return nil, fmt.Errorf("%s: bootstrap layer of %d bytes exceeds %d", ref, img.BootstrapDesc.Size, MaxBootstrapLayer)
	}
	rc, err := c.FetchBlob(ctx, img.Ref, img.BootstrapDesc)
	if err != nil {
		return nil, fmt.Errorf("%s: bootstrap layer: %w", ref, err)
	}
	layer, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		return nil, fmt.Errorf("%s: bootstrap layer %s: %w", ref, img.BootstrapDesc.Digest, err)
	}
	if img.Bootstrap, err = ExtractBootstrap(layer); err != nil {
		return nil, fmt.Errorf("%s: bootstrap layer %s: %w", ref, img.BootstrapDesc.Digest, err)
	}
	if img.RAFS, err = bootstrap.Decode(img.Bootstrap); err != nil {
		return nil, fmt.Errorf("%s: bootstrap: %w", ref, err)
	}
	img.Blobs = map[string]ocispec.Descriptor{}
	layers := map[digest.Digest]ocispec.Descriptor{}
	for _, l := range img.Manifest.Layers {
		layers[l.Digest] = l
	}
	for _, b := range img.RAFS.Blobs {
		l, ok := layers[digest.NewDigestFromEncoded(digest.SHA256, b.ID)]
		if !ok {
			return nil, fmt.Errorf("%s: the bootstrap references blob %s, which is not a layer of the manifest", ref, b.ID)
		}
		img.Blobs[b.ID] = l
	}
	return img, nil
}

// selectNydus picks the index entry for platform, preferring one marked as a nydus manifest: a
// nydus entry for an older variant the host runs beats an OCI entry for its own, since only a nydus
// manifest has a bootstrap to mount.
func selectNydus(index []byte, platform ocispec.Platform) (ocispec.Descriptor, error) {
	var idx ocispec.Index
	if err := json.Unmarshal(index, &idx); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("index: %w", err)
	}
	var nydus []ocispec.Descriptor
	for _, m := range idx.Manifests {
		if IsNydusIndexEntry(m) {
			nydus = append(nydus, m)
		}
	}
	if i := registry.BestPlatform(nydus, platform); i >= 0 {
		return nydus[i], nil
	}
	if i := registry.BestPlatform(idx.Manifests, platform); i >= 0 {
		return idx.Manifests[i], nil
	}
	return ocispec.Descriptor{}, registry.NoPlatformError(idx.Manifests, platform)
}

// DownloadBlobs makes every blob of img present in dir (named by blob id), fetching those missing;
// each download is verified against its digest and renamed into place only when complete.
func DownloadBlobs(ctx context.Context, c *registry.Client, img *Image, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for id, desc := range img.Blobs {
		p := filepath.Join(dir, id)
		if fi, err := os.Stat(p); err == nil && fi.Size() == desc.Size {
			continue
		}
		if err := DownloadBlob(ctx, c, img.Ref, desc, p); err != nil {
			return fmt.Errorf("download blob %s: %w", id, err)
		}
	}
	return nil
}

// DownloadBlob fetches one blob of repo into path: verified against desc, written to a temp file
// beside path and renamed into place (atomicfile), so path never holds a partial or wrong blob.
func DownloadBlob(ctx context.Context, c *registry.Client, repo registry.Ref, desc ocispec.Descriptor, path string) error {
	rc, err := c.FetchBlob(ctx, repo, desc)
	if err != nil {
		return err
	}
	defer rc.Close()
	f, err := atomicfile.Create(path, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := io.Copy(f, rc); err != nil {
		return err
	}
	return f.Commit()
}
