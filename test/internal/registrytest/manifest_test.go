package registrytest_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/dfnydus/dfnydus/registry"
	"github.com/dfnydus/dfnydus/test/internal/registrytest"
)

func TestManifestPutGetByTagAndDigest(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	c := newClient(t, registry.Options{})
	ref := mustRef(t, reg.Ref("manifests/app", "v1"))
	img := pushImage(t, c, ref, 20, "amd64")

	desc, err := c.PutManifest(ctxT(t), ref, img.manifest.MediaType, img.manifestData)
	noErr(t, err)
	equal(t, desc.Digest, img.manifest.Digest, "pushed digest")
	equal(t, desc.Size, img.manifest.Size, "pushed size")

	for _, r := range []registry.Ref{ref, ref.WithDigest(img.manifest.Digest), {Registry: ref.Registry, Repository: ref.Repository, Digest: img.manifest.Digest.String()}} {
		data, got, err := c.GetManifest(ctxT(t), r)
		noErr(t, err)
		sameBytes(t, data, img.manifestData, "manifest of "+r.String())
		equal(t, got.Digest, img.manifest.Digest, "digest of "+r.String())
		equal(t, got.MediaType, ocispec.MediaTypeImageManifest, "media type of "+r.String())

		res, err := c.Resolve(ctxT(t), r)
		noErr(t, err)
		equal(t, res.Digest, img.manifest.Digest, "resolved digest of "+r.String())
		equal(t, res.Size, img.manifest.Size, "resolved size of "+r.String())
		equal(t, res.MediaType, ocispec.MediaTypeImageManifest, "resolved media type of "+r.String())
	}

	// Push by digest alone (no tag), as index children are pushed.
	byDigest := registry.Ref{Registry: ref.Registry, Repository: "manifests/other", Digest: img.manifest.Digest.String()}
	pushImage(t, c, byDigest, 20, "amd64")
	_, err = c.PutManifest(ctxT(t), byDigest, img.manifest.MediaType, img.manifestData)
	noErr(t, err)
	_, _, err = c.GetManifest(ctxT(t), byDigest)
	noErr(t, err)
}

func TestManifestErrors(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	c := newClient(t, registry.Options{})
	ref := mustRef(t, reg.Ref("manifests/errors", "v1"))
	img := pushImage(t, c, ref, 21, "amd64")

	// Content that does not match the reference's digest is refused before sending.
	wrong := ref.WithDigest(digest.FromString("something else"))
	_, err := c.PutManifest(ctxT(t), wrong, img.manifest.MediaType, img.manifestData)
	errIs(t, err, registry.ErrDigestMismatch)

	_, _, err = c.GetManifest(ctxT(t), mustRef(t, reg.Ref("manifests/errors", "nope")))
	errIs(t, err, registry.ErrNotFound)
	if !strings.Contains(err.Error(), "MANIFEST_UNKNOWN") {
		t.Errorf("error %q does not carry the registry's code", err)
	}
	_, err = c.Resolve(ctxT(t), mustRef(t, reg.Ref("manifests/errors", "nope")))
	errIs(t, err, registry.ErrNotFound)

	// The registry refuses a manifest whose blobs it does not have.
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: img.config,
		Layers: []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromString("absent"), Size: 6}}}
	m.SchemaVersion = 2
	data, _ := json.Marshal(m)
	_, err = c.PutManifest(ctxT(t), ref, ocispec.MediaTypeImageManifest, data)
	if err == nil || !strings.Contains(err.Error(), "MANIFEST_BLOB_UNKNOWN") {
		t.Errorf("put manifest with a missing layer: %v, want MANIFEST_BLOB_UNKNOWN", err)
	}
}

func TestIndexAndPlatformSelection(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	c := newClient(t, registry.Options{})
	ref := mustRef(t, reg.Ref("multi/arch", "latest"))
	var entries []ocispec.Descriptor
	for i, p := range []ocispec.Platform{
		{OS: "linux", Architecture: "amd64"},
		{OS: "linux", Architecture: "arm64", Variant: "v8"},
		{OS: "linux", Architecture: "arm", Variant: "v6"},
	} {
		img := pushImage(t, c, ref, uint64(30+i), p.Architecture)
		_, err := c.PutManifest(ctxT(t), ref.WithDigest(img.manifest.Digest), img.manifest.MediaType, img.manifestData)
		noErr(t, err)
		d := img.manifest
		d.Platform = &p
		entries = append(entries, d)
	}
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: entries}
	idx.SchemaVersion = 2
	data, _ := json.Marshal(idx)
	_, err := c.PutManifest(ctxT(t), ref, ocispec.MediaTypeImageIndex, data)
	noErr(t, err)

	got, desc, err := c.GetManifest(ctxT(t), ref)
	noErr(t, err)
	equal(t, desc.MediaType, ocispec.MediaTypeImageIndex, "index media type")
	tests := []struct {
		want ocispec.Platform
		pick int // index entry, -1 for none
	}{
		{ocispec.Platform{OS: "linux", Architecture: "x86_64"}, 0},
		{ocispec.Platform{OS: "linux", Architecture: "aarch64"}, 1},
		{ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}, 2}, // v6 runs on v7
		{ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v5"}, -1},
		{ocispec.Platform{OS: "windows", Architecture: "amd64"}, -1},
	}
	for _, tt := range tests {
		d, err := registry.SelectPlatform(got, tt.want)
		if tt.pick < 0 {
			errIs(t, err, registry.ErrPlatformNotFound)
			continue
		}
		noErr(t, err)
		equal(t, d.Digest, entries[tt.pick].Digest, "manifest for "+tt.want.Architecture+"/"+tt.want.Variant)
		_, md, err := c.GetManifest(ctxT(t), ref.WithDigest(d.Digest))
		noErr(t, err)
		equal(t, md.MediaType, ocispec.MediaTypeImageManifest, "child media type")
	}
}

func TestServerErrorsAreRetried(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	proxy := registrytest.NewProxy(t, reg.Host())
	c := newClient(t, registry.Options{})
	ref := mustRef(t, proxy.Ref("retry/manifest", "v1"))
	img := pushImage(t, c, ref, 40, "amd64")
	_, err := c.PutManifest(ctxT(t), ref, img.manifest.MediaType, img.manifestData)
	noErr(t, err)

	proxy.FailNext(`^GET /v2/.*/manifests/`, 3, 500)
	before := c.Stats().Retries
	_, desc, err := c.GetManifest(ctxT(t), ref)
	noErr(t, err)
	equal(t, desc.Digest, img.manifest.Digest, "digest")
	equal(t, c.Stats().Retries-before, 3, "retries")

	// Retry-After is honoured.
	proxy.Inject(registrytest.Fault{Match: `^GET /v2/.*/manifests/`, Status: 429, Header: map[string][]string{"Retry-After": {"1"}}})
	start := time.Now()
	_, _, err = c.GetManifest(ctxT(t), ref)
	noErr(t, err)
	if el := time.Since(start); el < 900*time.Millisecond {
		t.Errorf("retried a 429 with Retry-After: 1 after %v", el)
	}

	// More failures than retries: the error says what failed.
	proxy.FailNext(`^GET /v2/.*/manifests/`, 10, 503)
	lim := newClient(t, registry.Options{Retries: 2})
	_, _, err = lim.GetManifest(ctxT(t), ref)
	if err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("after 3 failures with 2 retries: %v, want the 503", err)
	}
	proxy.ClearFaults()

	// A client error is not retried.
	proxy.ResetCounts()
	_, _, err = c.GetManifest(ctxT(t), mustRef(t, proxy.Ref("retry/manifest", "missing")))
	errIs(t, err, registry.ErrNotFound)
	equal(t, proxy.Counts(registrytest.KindManifest).Requests, 1, "requests for a missing manifest")
}
