package oci

import (
	"encoding/json"
	"fmt"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Marshalled is a JSON document with its descriptor.
type Marshalled struct {
	Data []byte
	Desc ocispec.Descriptor
}

func marshal(mediaType string, v any) (Marshalled, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return Marshalled{}, fmt.Errorf("marshal %s: %w", mediaType, err)
	}
	return Marshalled{Data: data, Desc: ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}}, nil
}

// Config wraps config bytes in their descriptor (an OCI image config).
func Config(data []byte) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(data), Size: int64(len(data))}
}

// NydusManifest is the OCI manifest of a nydus image: data blobs in blob-table order, then the
// bootstrap layer last. subject, when set, refers back to the source manifest (the OCI referrers
// relation nydusify's --with-referrer writes); its platform is dropped as upstream does.
func NydusManifest(config ocispec.Descriptor, layers []ocispec.Descriptor, subject *ocispec.Descriptor) (Marshalled, error) {
	m := ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    config,
		Layers:    layers,
	}
	if subject != nil {
		s := *subject
		s.Platform = nil
		s.Annotations = nil
		m.Subject = &s
	}
	return marshal(ocispec.MediaTypeImageManifest, m)
}

// NydusIndex lists the nydus manifests of a multi-platform image; each entry carries its platform and
// the nydus artifact type, by which nydus-snapshotter and nydusify recognise nydus manifests.
func NydusIndex(entries []ocispec.Descriptor) (Marshalled, error) {
	idx := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex}
	for _, e := range entries {
		e.ArtifactType = ArtifactTypeNydusManifest
		idx.Manifests = append(idx.Manifests, e)
	}
	return marshal(ocispec.MediaTypeImageIndex, idx)
}
