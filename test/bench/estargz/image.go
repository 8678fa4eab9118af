package main

import (
	"encoding/json"
	"fmt"
	"runtime"
	"strconv"

	"github.com/containerd/stargz-snapshotter/estargz"
	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// esgzLayer describes a built eStargz layer blob.
type esgzLayer struct {
	digest           digest.Digest // of the compressed blob
	size             int64         // of the compressed blob
	diffID           digest.Digest // of the uncompressed tar
	tocDigest        digest.Digest // of the uncompressed TOC JSON
	uncompressedSize int64
}

// descriptor is the layer's manifest entry, annotated as eStargz tools expect: the TOC digest
// (which the store verifies the layer against) and the uncompressed size.
func (l esgzLayer) descriptor() ocispec.Descriptor {
	return ocispec.Descriptor{
		MediaType: ocispec.MediaTypeImageLayerGzip,
		Digest:    l.digest,
		Size:      l.size,
		Annotations: map[string]string{
			estargz.TOCJSONDigestAnnotation:         l.tocDigest.String(),
			estargz.StoreUncompressedSizeAnnotation: strconv.FormatInt(l.uncompressedSize, 10),
		},
	}
}

// imageConfig is the OCI config of a linux image for this machine's architecture whose only
// layer has diffID.
func imageConfig(diffID digest.Digest) ([]byte, error) {
	cfg := ocispec.Image{
		Platform: ocispec.Platform{Architecture: runtime.GOARCH, OS: "linux"},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{diffID}},
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("encode image config: %w", err)
	}
	return b, nil
}

// imageManifest is the OCI manifest of config and layers.
func imageManifest(config ocispec.Descriptor, layers ...ocispec.Descriptor) ([]byte, error) {
	m := ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    config,
		Layers:    layers,
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode image manifest: %w", err)
	}
	return b, nil
}

// layerTOCDigest returns the TOC digest of the only layer of an image manifest.
func layerTOCDigest(manifest []byte, mediaType string) (digest.Digest, error) {
	switch mediaType {
	case ocispec.MediaTypeImageManifest, mediaTypeDockerManifest, "":
	default:
		return "", fmt.Errorf("%w: media type %q", errUnsupportedManifest, mediaType)
	}
	var m struct {
		SchemaVersion int                  `json:"schemaVersion"`
		MediaType     string               `json:"mediaType"`
		Manifests     json.RawMessage      `json:"manifests"`
		Layers        []ocispec.Descriptor `json:"layers"`
	}
	if err := json.Unmarshal(manifest, &m); err != nil {
		return "", fmt.Errorf("%w: decode: %w", errUnsupportedManifest, err)
	}
	if m.SchemaVersion != 2 || len(m.Manifests) > 0 ||
		m.MediaType != "" && m.MediaType != ocispec.MediaTypeImageManifest && m.MediaType != mediaTypeDockerManifest {
		return "", fmt.Errorf("%w: schema %d, media type %q", errUnsupportedManifest, m.SchemaVersion, m.MediaType)
	}
	if len(m.Layers) != 1 {
		return "", fmt.Errorf("%w: it has %d", errLayerCount, len(m.Layers))
	}
	v, ok := m.Layers[0].Annotations[estargz.TOCJSONDigestAnnotation]
	if !ok {
		return "", fmt.Errorf("%w: layer %s has no %s annotation", errNotEStargz, m.Layers[0].Digest, estargz.TOCJSONDigestAnnotation)
	}
	toc, err := digest.Parse(v)
	if err != nil {
		return "", fmt.Errorf("%w: layer %s: TOC digest %q: %w", errNotEStargz, m.Layers[0].Digest, v, err)
	}
	return toc, nil
}
