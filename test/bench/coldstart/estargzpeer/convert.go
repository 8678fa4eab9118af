package main

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containerd/stargz-snapshotter/estargz"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// layout is an OCI image layout directory.
type layout string

func (l layout) blobPath(d digest.Digest) string {
	return filepath.Join(string(l), "blobs", d.Algorithm().String(), d.Encoded())
}

func (l layout) readJSON(d digest.Digest, v any) error {
	data, err := os.ReadFile(l.blobPath(d))
	if err != nil {
		return err
	}
	if digest.FromBytes(data) != d {
		return fmt.Errorf("blob %s does not match its digest", d)
	}
	return json.Unmarshal(data, v)
}

// putBlob stores data under its digest and describes it.
func (l layout) putBlob(mediaType string, data []byte) (ocispec.Descriptor, error) {
	d := digest.FromBytes(data)
	if err := os.MkdirAll(filepath.Dir(l.blobPath(d)), 0o755); err != nil {
		return ocispec.Descriptor{}, err
	}
	if err := os.WriteFile(l.blobPath(d), data, 0o644); err != nil {
		return ocispec.Descriptor{}, err
	}
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(data))}, nil
}

func splitRef(s string) (layout, string, error) {
	i := strings.LastIndexByte(s, ':')
	if i <= 0 || i == len(s)-1 {
		return "", "", fmt.Errorf("%q: want LAYOUT:TAG", s)
	}
	return layout(s[:i]), s[i+1:], nil
}

// convertLayout rewrites every layer of src's tag as an eStargz blob (gzip level 6, as umoci
// writes) into a new layout dst and returns the layers' TOC digests, lowest first.
func convertLayout(ctx context.Context, srcRef, dstRef string) ([]digest.Digest, error) {
	src, tag, err := splitRef(srcRef)
	if err != nil {
		return nil, err
	}
	dst, dstTag, err := splitRef(dstRef)
	if err != nil {
		return nil, err
	}
	var index ocispec.Index
	data, err := os.ReadFile(filepath.Join(string(src), "index.json"))
	if err != nil {
		return nil, fmt.Errorf("source layout: %w", err)
	}
	if err := json.Unmarshal(data, &index); err != nil {
		return nil, fmt.Errorf("source index: %w", err)
	}
	var manDesc *ocispec.Descriptor
	for i, m := range index.Manifests {
		if m.Annotations[ocispec.AnnotationRefName] == tag {
			manDesc = &index.Manifests[i]
		}
	}
	if manDesc == nil {
		return nil, fmt.Errorf("tag %s not in %s", tag, src)
	}
	var man ocispec.Manifest
	if err := src.readJSON(manDesc.Digest, &man); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	var cfg ocispec.Image
	if err := src.readJSON(man.Config.Digest, &cfg); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if err := os.MkdirAll(string(dst), 0o755); err != nil {
		return nil, err
	}
	var tocs []digest.Digest
	cfg.RootFS.DiffIDs = nil
	newMan := ocispec.Manifest{Versioned: man.Versioned, MediaType: ocispec.MediaTypeImageManifest}
	for i, l := range man.Layers {
		desc, diffID, toc, err := convertLayer(ctx, src, dst, l)
		if err != nil {
			return nil, fmt.Errorf("layer %d (%s): %w", i, l.Digest, err)
		}
		newMan.Layers = append(newMan.Layers, desc)
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, diffID)
		tocs = append(tocs, toc)
	}
	cfgData, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	if newMan.Config, err = dst.putBlob(ocispec.MediaTypeImageConfig, cfgData); err != nil {
		return nil, err
	}
	manData, err := json.Marshal(newMan)
	if err != nil {
		return nil, err
	}
	md, err := dst.putBlob(ocispec.MediaTypeImageManifest, manData)
	if err != nil {
		return nil, err
	}
	md.Annotations = map[string]string{ocispec.AnnotationRefName: dstTag}
	out := ocispec.Index{Versioned: index.Versioned, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{md}}
	idxData, err := json.Marshal(out)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(string(dst), "index.json"), idxData, 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(string(dst), ocispec.ImageLayoutFile), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		return nil, err
	}
	return tocs, nil
}

func convertLayer(ctx context.Context, src, dst layout, l ocispec.Descriptor) (ocispec.Descriptor, digest.Digest, digest.Digest, error) {
	f, err := os.Open(src.blobPath(l.Digest))
	if err != nil {
		return ocispec.Descriptor{}, "", "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ocispec.Descriptor{}, "", "", err
	}
	blob, err := estargz.Build(io.NewSectionReader(f, 0, fi.Size()), estargz.WithContext(ctx),
		estargz.WithCompressionLevel(gzip.DefaultCompression))
	if err != nil {
		return ocispec.Descriptor{}, "", "", fmt.Errorf("estargz build: %w", err)
	}
	defer blob.Close()
	tmp, err := os.CreateTemp(string(dst), "layer-")
	if err != nil {
		return ocispec.Descriptor{}, "", "", err
	}
	defer os.Remove(tmp.Name())
	dg := digest.Canonical.Digester()
	n, err := io.Copy(io.MultiWriter(tmp, dg.Hash()), blob)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return ocispec.Descriptor{}, "", "", fmt.Errorf("write estargz blob: %w", err)
	}
	d := dg.Digest()
	if err := os.MkdirAll(filepath.Dir(dst.blobPath(d)), 0o755); err != nil {
		return ocispec.Descriptor{}, "", "", err
	}
	if err := os.Rename(tmp.Name(), dst.blobPath(d)); err != nil {
		return ocispec.Descriptor{}, "", "", err
	}
	usize, err := blob.UncompressedSize()
	if err != nil {
		return ocispec.Descriptor{}, "", "", err
	}
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: d, Size: n,
		Annotations: map[string]string{
			estargz.TOCJSONDigestAnnotation:         blob.TOCDigest().String(),
			estargz.StoreUncompressedSizeAnnotation: strconv.FormatInt(usize, 10),
		}}
	return desc, blob.DiffID(), blob.TOCDigest(), nil
}
