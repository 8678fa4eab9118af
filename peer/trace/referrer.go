package trace

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/dfnydus/dfnydus/registry"
)

// ErrNoTrace is returned by Find when the manifest has no start trace referrer.
var ErrNoTrace = errors.New("no start trace referrer")

// Push stores data (an encoded trace) in repo as an OCI 1.1 referrer of subject: an image manifest
// with artifactType MediaType, the empty config and the trace as its one layer (image-spec,
// "Guidelines for Artifact Usage"), pushed by digest. When the registry has no referrers API it then
// adds the manifest to the referrers tag schema's index (distribution-spec, "Pushing Manifests with
// Subject"): a read-modify-write of the tag that keeps every other entry. Two pushers racing on
// that tag can lose one entry; the spec accepts that, and a lost trace only costs its prefetch.
func Push(ctx context.Context, c *registry.Client, repo registry.Ref, subject ocispec.Descriptor, data []byte) (ocispec.Descriptor, error) {
	repo.Tag, repo.Digest = "", ""
	layer := ocispec.Descriptor{MediaType: MediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}
	empty := ocispec.DescriptorEmptyJSON
	for _, b := range []struct {
		desc ocispec.Descriptor
		data []byte
	}{{empty, empty.Data}, {layer, data}} {
		b.desc.Data = nil
		if _, err := c.PushBlob(ctx, repo, b.desc, bytes.NewReader(b.data), nil); err != nil {
			return ocispec.Descriptor{}, fmt.Errorf("push start trace: blob %s: %w", b.desc.Digest, err)
		}
	}
	empty.Data = nil
	created := time.Now().UTC().Format(time.RFC3339)
	m := ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: MediaType,
		Config:       empty,
		Layers:       []ocispec.Descriptor{layer},
		Subject:      &ocispec.Descriptor{MediaType: subject.MediaType, Digest: subject.Digest, Size: subject.Size},
		Annotations:  map[string]string{ocispec.AnnotationCreated: created},
	}
	mdata, err := json.Marshal(m)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("push start trace: manifest: %w", err)
	}
	desc, err := c.PutManifest(ctx, repo.WithDigest(digest.FromBytes(mdata)), ocispec.MediaTypeImageManifest, mdata)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("push start trace: %w", err)
	}
	desc.ArtifactType = MediaType
	desc.Annotations = m.Annotations
	if _, err := c.Referrers(ctx, repo, subject.Digest, MediaType); err == nil {
		return desc, nil // the registry indexes referrers itself
	} else if !errors.Is(err, registry.ErrReferrersUnsupported) {
		return desc, fmt.Errorf("push start trace: pushed %s, but: %w", desc.Digest, err)
	}
	if err := addToTagIndex(ctx, c, repo, subject.Digest, desc); err != nil {
		return desc, fmt.Errorf("push start trace: pushed %s, but: %w", desc.Digest, err)
	}
	return desc, nil
}

// addToTagIndex adds desc to the referrers tag schema's index of subject, creating it if needed.
func addToTagIndex(ctx context.Context, c *registry.Client, repo registry.Ref, subject digest.Digest, desc ocispec.Descriptor) error {
	tagRef := repo
	tagRef.Tag = registry.ReferrersTag(subject)
	idx := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex}
	data, _, err := c.GetManifest(ctx, tagRef)
	switch {
	case errors.Is(err, registry.ErrNotFound):
	case err != nil:
		return fmt.Errorf("referrers tag %s: %w", tagRef, err)
	default:
		if err := json.Unmarshal(data, &idx); err != nil {
			return fmt.Errorf("referrers tag %s: index: %w", tagRef, err)
		}
		idx.MediaType = ocispec.MediaTypeImageIndex
	}
	for _, d := range idx.Manifests {
		if d.Digest == desc.Digest {
			return nil
		}
	}
	idx.Manifests = append(idx.Manifests, desc)
	data, err = json.Marshal(idx)
	if err != nil {
		return fmt.Errorf("referrers tag %s: %w", tagRef, err)
	}
	if _, err := c.PutManifest(ctx, tagRef, ocispec.MediaTypeImageIndex, data); err != nil {
		return fmt.Errorf("referrers tag %s: %w", tagRef, err)
	}
	return nil
}

// Find returns the newest start trace referring to the manifest subject in repo: through the
// referrers API, else the referrers tag schema. The trace is verified (manifest and layer by
// digest), decoded and checked to be bound to subject. ErrNoTrace when there is none.
func Find(ctx context.Context, c *registry.Client, repo registry.Ref, subject digest.Digest) (*Trace, error) {
	repo.Tag, repo.Digest = "", ""
	cands, err := c.Referrers(ctx, repo, subject, MediaType)
	if errors.Is(err, registry.ErrReferrersUnsupported) {
		cands, err = tagReferrers(ctx, c, repo, subject)
	}
	if err != nil {
		return nil, err
	}
	if len(cands) == 0 {
		return nil, ErrNoTrace
	}
	// Newest first by the created annotation (RFC 3339 in UTC sorts as text); later entries win ties,
	// since the tag index appends.
	best := cands[0]
	for _, d := range cands[1:] {
		if d.Annotations[ocispec.AnnotationCreated] >= best.Annotations[ocispec.AnnotationCreated] {
			best = d
		}
	}
	return fetch(ctx, c, repo, subject, best)
}

// tagReferrers reads the referrers tag schema's index of subject; no tag means no referrers.
func tagReferrers(ctx context.Context, c *registry.Client, repo registry.Ref, subject digest.Digest) ([]ocispec.Descriptor, error) {
	tagRef := repo
	tagRef.Tag = registry.ReferrersTag(subject)
	data, _, err := c.GetManifest(ctx, tagRef)
	if errors.Is(err, registry.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("referrers tag %s: %w", tagRef, err)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(data, &idx); err != nil {
		return nil, fmt.Errorf("referrers tag %s: index: %w", tagRef, err)
	}
	return registry.FilterReferrers(idx.Manifests, MediaType), nil
}

// fetch reads one trace referrer and checks it refers to subject.
func fetch(ctx context.Context, c *registry.Client, repo registry.Ref, subject digest.Digest, d ocispec.Descriptor) (*Trace, error) {
	data, _, err := c.GetManifest(ctx, repo.WithDigest(d.Digest))
	if err != nil {
		return nil, fmt.Errorf("start trace referrer: %w", err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("start trace referrer %s: %w", d.Digest, err)
	}
	switch {
	case m.ArtifactType != MediaType:
		return nil, fmt.Errorf("start trace referrer %s: artifactType %q", d.Digest, m.ArtifactType)
	case m.Subject == nil || m.Subject.Digest != subject:
		return nil, fmt.Errorf("start trace referrer %s: %w: its subject is not %s", d.Digest, ErrNotThisImage, subject)
	case len(m.Layers) != 1 || m.Layers[0].MediaType != MediaType:
		return nil, fmt.Errorf("start trace referrer %s: want one layer of %s", d.Digest, MediaType)
	case m.Layers[0].Size <= 0 || m.Layers[0].Size > MaxSize:
		return nil, fmt.Errorf("start trace referrer %s: layer of %d bytes, limit %d", d.Digest, m.Layers[0].Size, MaxSize)
	}
	rc, err := c.FetchBlob(ctx, repo, m.Layers[0])
	if err != nil {
		return nil, fmt.Errorf("start trace referrer %s: %w", d.Digest, err)
	}
	defer rc.Close()
	body, err := io.ReadAll(io.LimitReader(rc, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("start trace %s: %w", m.Layers[0].Digest, err)
	}
	t, err := Decode(body)
	if err != nil {
		return nil, fmt.Errorf("start trace %s: %w", m.Layers[0].Digest, err)
	}
	if err := t.BoundTo(subject, ""); err != nil {
		return nil, fmt.Errorf("start trace %s: %w", m.Layers[0].Digest, err)
	}
	return t, nil
}
