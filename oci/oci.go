// Package oci describes nydus images as OCI artifacts: the media types and annotations nydus tools
// put on blob and bootstrap layers, the bootstrap layer itself (a gzip tar holding image/image.boot),
// the rewritten image config, manifests and multi-platform indexes. Facts from
// containerd/nydus-snapshotter pkg/converter (constant.go, convert_unix.go, utils.go) and
// dragonflyoss/nydus contrib/nydusify (pkg/utils/constant.go, pkg/parser/parser.go).
package oci

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/dfnydus/dfnydus/rafs/bootstrap"
)

// Media types and annotations of nydus images.
const (
	MediaTypeNydusBlob        = "application/vnd.oci.image.layer.nydus.blob.v1"
	ArtifactTypeNydusManifest = "application/vnd.nydus.image.manifest.v1+json"
	OSFeatureNydus            = "nydus.remoteimage.v1" // older (< nydus 2.3.5) marker in platform.os.features

	AnnotationNydusBlob      = "containerd.io/snapshot/nydus-blob"
	AnnotationNydusBootstrap = "containerd.io/snapshot/nydus-bootstrap"
	AnnotationFSVersion      = "containerd.io/snapshot/nydus-fs-version"
	AnnotationSourceDigest   = "containerd.io/snapshot/nydus-source-digest"

	MediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeDockerLayerGzip    = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	MediaTypeDockerConfig       = "application/vnd.docker.container.image.v1+json"
)

// IsIndex and IsManifest classify manifest media types (OCI and Docker).
func IsIndex(mt string) bool {
	return mt == ocispec.MediaTypeImageIndex || mt == MediaTypeDockerManifestList
}
func IsManifest(mt string) bool {
	return mt == ocispec.MediaTypeImageManifest || mt == MediaTypeDockerManifest
}

// BootstrapLayer is a packed bootstrap layer: the gzip tar bytes and its two digests.
type BootstrapLayer struct {
	Data         []byte
	Digest       digest.Digest // of Data (the layer digest)
	Uncompressed digest.Digest // of the tar (the diff id)
}

// PackBootstrap writes the bootstrap layer: a directory "image" and the file "image/image.boot", with
// fixed modes and zero times so the same bootstrap always packs to the same layer digest.
func PackBootstrap(boot []byte) (*BootstrapLayer, error) {
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	hdrs := []*tar.Header{
		{Name: "image", Mode: 0o755, Typeflag: tar.TypeDir, Format: tar.FormatPAX},
		{Name: bootstrap.LayerPath, Mode: 0o644, Typeflag: tar.TypeReg, Size: int64(len(boot)), Format: tar.FormatPAX},
	}
	for _, h := range hdrs {
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("pack bootstrap: %w", err)
		}
	}
	if _, err := tw.Write(boot); err != nil {
		return nil, fmt.Errorf("pack bootstrap: %w", err)
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("pack bootstrap: %w", err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	if _, err := zw.Write(tarBuf.Bytes()); err != nil {
		return nil, fmt.Errorf("pack bootstrap: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("pack bootstrap: %w", err)
	}
	return &BootstrapLayer{Data: gz.Bytes(), Digest: digest.FromBytes(gz.Bytes()), Uncompressed: digest.FromBytes(tarBuf.Bytes())}, nil
}

// BlobDescriptor is the manifest layer of a nydus data blob: its digest is the blob id, and nydus
// blobs are their own diff id.
func BlobDescriptor(id string, size int64) ocispec.Descriptor {
	return ocispec.Descriptor{
		MediaType:   MediaTypeNydusBlob,
		Digest:      digest.NewDigestFromEncoded(digest.SHA256, id),
		Size:        size,
		Annotations: map[string]string{AnnotationNydusBlob: "true"},
	}
}

// BootstrapDescriptor is the manifest layer of the bootstrap; oci chooses the OCI or the Docker
// gzip layer media type, following the source manifest's flavour.
func BootstrapDescriptor(l *BootstrapLayer, fsVersion int, oci bool) ocispec.Descriptor {
	mt := MediaTypeDockerLayerGzip
	if oci {
		mt = ocispec.MediaTypeImageLayerGzip
	}
	return ocispec.Descriptor{
		MediaType: mt,
		Digest:    l.Digest,
		Size:      int64(len(l.Data)),
		Annotations: map[string]string{
			AnnotationNydusBootstrap: "true",
			AnnotationFSVersion:      strconv.Itoa(fsVersion),
		},
	}
}

// FindBootstrap returns the manifest's bootstrap layer: the last layer, marked by the nydus
// bootstrap annotation (older images may only carry it on the last layer's annotations).
func FindBootstrap(m *ocispec.Manifest) (ocispec.Descriptor, error) {
	if len(m.Layers) == 0 {
		return ocispec.Descriptor{}, errors.New("manifest has no layers: not a nydus image")
	}
	last := m.Layers[len(m.Layers)-1]
	if last.Annotations[AnnotationNydusBootstrap] != "true" {
		return ocispec.Descriptor{}, fmt.Errorf("last layer %s has no %s annotation: not a nydus image", last.Digest, AnnotationNydusBootstrap)
	}
	return last, nil
}

// IsNydus reports whether a manifest is a nydus image.
func IsNydus(m *ocispec.Manifest) bool {
	_, err := FindBootstrap(m)
	return err == nil
}

// IsNydusIndexEntry reports whether an index entry points at a nydus manifest (artifactType, or the
// older os.features marker).
func IsNydusIndexEntry(d ocispec.Descriptor) bool {
	if d.ArtifactType == ArtifactTypeNydusManifest {
		return true
	}
	if d.Platform != nil {
		for _, f := range d.Platform.OSFeatures {
			if f == OSFeatureNydus {
				return true
			}
		}
	}
	return false
}

// NydusConfig rewrites a source image config for the nydus image: diff ids become the blob digests
// plus the bootstrap's uncompressed digest, and a history entry records the bootstrap layer
// (pkg/converter/convert_unix.go convertManifest). Unknown fields of the source config are kept.
func NydusConfig(src []byte, layers []ocispec.Descriptor, boot *BootstrapLayer) ([]byte, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(src, &raw); err != nil {
		return nil, fmt.Errorf("source image config: %w", err)
	}
	var diffIDs []digest.Digest
	for _, l := range layers {
		if l.Annotations[AnnotationNydusBootstrap] == "true" {
			diffIDs = append(diffIDs, boot.Uncompressed)
		} else {
			diffIDs = append(diffIDs, l.Digest)
		}
	}
	rootfs, err := json.Marshal(ocispec.RootFS{Type: "layers", DiffIDs: diffIDs})
	if err != nil {
		return nil, err
	}
	raw["rootfs"] = rootfs
	var history []ocispec.History
	if h, ok := raw["history"]; ok {
		if err := json.Unmarshal(h, &history); err != nil {
			return nil, fmt.Errorf("source image config history: %w", err)
		}
	}
	history = append(history, ocispec.History{CreatedBy: "Nydus Converter", Comment: "Nydus Bootstrap Layer"})
	if raw["history"], err = json.Marshal(history); err != nil {
		return nil, err
	}
	return json.Marshal(raw)
}

// ExtractBootstrap returns image/image.boot from a bootstrap layer blob (gzip tar, or plain tar).
func ExtractBootstrap(layer []byte) ([]byte, error) {
	return bootstrap.Extract(bytes.NewReader(layer), int64(len(layer)))
}
