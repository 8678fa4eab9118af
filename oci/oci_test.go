package oci

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/dfnydus/dfnydus/registry"
)

func TestPackBootstrapIsDeterministicAndReadable(t *testing.T) {
	boot := bytes.Repeat([]byte("bootstrap bytes "), 1000)
	a, err := PackBootstrap(boot)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := PackBootstrap(boot)
	if a.Digest != b.Digest || !bytes.Equal(a.Data, b.Data) {
		t.Error("the same bootstrap packed to two different layers")
	}
	if a.Digest != digest.FromBytes(a.Data) || a.Uncompressed == a.Digest {
		t.Errorf("digests %s / %s", a.Digest, a.Uncompressed)
	}
	got, err := ExtractBootstrap(a.Data)
	if err != nil || !bytes.Equal(got, boot) {
		t.Errorf("extract: %v, %d bytes back of %d", err, len(got), len(boot))
	}
}

func TestDescriptors(t *testing.T) {
	id := strings.Repeat("ab", 32)
	d := BlobDescriptor(id, 42)
	if d.MediaType != MediaTypeNydusBlob || d.Digest.Encoded() != id || d.Annotations[AnnotationNydusBlob] != "true" {
		t.Errorf("blob descriptor %+v", d)
	}
	l, _ := PackBootstrap([]byte("x"))
	for _, tc := range []struct {
		oci  bool
		want string
	}{{true, ocispec.MediaTypeImageLayerGzip}, {false, MediaTypeDockerLayerGzip}} {
		bd := BootstrapDescriptor(l, 5, tc.oci)
		if bd.MediaType != tc.want || bd.Annotations[AnnotationFSVersion] != "5" || bd.Annotations[AnnotationNydusBootstrap] != "true" {
			t.Errorf("bootstrap descriptor %+v", bd)
		}
	}
}

func TestFindBootstrap(t *testing.T) {
	boot := ocispec.Descriptor{Digest: "sha256:b", Annotations: map[string]string{AnnotationNydusBootstrap: "true"}}
	blob := ocispec.Descriptor{Digest: "sha256:a"}
	tests := []struct {
		name   string
		layers []ocispec.Descriptor
		ok     bool
	}{
		{"bootstrap last", []ocispec.Descriptor{blob, boot}, true},
		{"no layers", nil, false},
		{"bootstrap not last", []ocispec.Descriptor{boot, blob}, false},
		{"plain OCI image", []ocispec.Descriptor{blob}, false},
	}
	for _, tc := range tests {
		_, err := FindBootstrap(&ocispec.Manifest{Layers: tc.layers})
		if (err == nil) != tc.ok || IsNydus(&ocispec.Manifest{Layers: tc.layers}) != tc.ok {
			t.Errorf("%s: err = %v", tc.name, err)
		}
	}
}

// The config keeps everything of the source and gets diff ids that follow the new layers, plus a
// history entry for the bootstrap layer.
func TestNydusConfig(t *testing.T) {
	src := `{"architecture":"arm64","os":"linux","config":{"Env":["A=1"]},"rootfs":{"type":"layers","diff_ids":["sha256:old"]},"history":[{"created_by":"base"}]}`
	l, _ := PackBootstrap([]byte("boot"))
	blob := BlobDescriptor(strings.Repeat("cd", 32), 10)
	out, err := NydusConfig([]byte(src), []ocispec.Descriptor{blob, BootstrapDescriptor(l, 6, true)}, l)
	if err != nil {
		t.Fatal(err)
	}
	var cfg ocispec.Image
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Architecture != "arm64" || len(cfg.Config.Env) != 1 {
		t.Errorf("source fields lost: %s", out)
	}
	if len(cfg.RootFS.DiffIDs) != 2 || cfg.RootFS.DiffIDs[0] != blob.Digest || cfg.RootFS.DiffIDs[1] != l.Uncompressed {
		t.Errorf("diff ids %v", cfg.RootFS.DiffIDs)
	}
	if len(cfg.History) != 2 || cfg.History[1].Comment != "Nydus Bootstrap Layer" {
		t.Errorf("history %+v", cfg.History)
	}
	if _, err := NydusConfig([]byte("not json"), nil, l); err == nil {
		t.Error("a broken source config was accepted")
	}
}

func TestIndexAndSelection(t *testing.T) {
	amd := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: "sha256:1", Platform: &ocispec.Platform{OS: "linux", Architecture: "amd64"}}
	arm := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: "sha256:2", Platform: &ocispec.Platform{OS: "linux", Architecture: "arm64"}}
	ix, err := NydusIndex([]ocispec.Descriptor{amd, arm})
	if err != nil {
		t.Fatal(err)
	}
	var idx ocispec.Index
	json.Unmarshal(ix.Data, &idx)
	for _, m := range idx.Manifests {
		if !IsNydusIndexEntry(m) {
			t.Errorf("entry %s lacks the nydus artifact type", m.Digest)
		}
	}
	// An index with both an OCI and a nydus manifest for a platform: the nydus one is chosen.
	ociAmd := amd
	ociAmd.Digest = "sha256:oci"
	oldNydus := amd
	oldNydus.Digest = "sha256:old-nydus"
	oldNydus.Platform = &ocispec.Platform{OS: "linux", Architecture: "amd64", OSFeatures: []string{OSFeatureNydus}}
	mixed, _ := json.Marshal(ocispec.Index{Manifests: []ocispec.Descriptor{ociAmd, oldNydus, arm}})
	got, err := selectNydus(mixed, ocispec.Platform{OS: "linux", Architecture: "amd64"})
	if err != nil || got.Digest != "sha256:old-nydus" {
		t.Errorf("selected %s, %v; want the nydus entry", got.Digest, err)
	}
	if _, err := selectNydus(mixed, ocispec.Platform{OS: "linux", Architecture: "s390x"}); err == nil {
		t.Error("a missing platform was selected")
	}
}

func TestSelectNydus(t *testing.T) {
	entry := func(d string, arch, variant string, nydus bool) ocispec.Descriptor {
		e := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.Digest(d),
			Platform: &ocispec.Platform{OS: "linux", Architecture: arch, Variant: variant}}
		if nydus {
			e.ArtifactType = ArtifactTypeNydusManifest
		}
		return e
	}
	armv7 := ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}
	tests := []struct {
		name    string
		entries []ocispec.Descriptor
		want    ocispec.Platform
		pick    string // "" for none
	}{
		{"nydus beats OCI for the same platform",
			[]ocispec.Descriptor{entry("oci", "arm", "v7", false), entry("nydus", "arm", "v7", true)}, armv7, "nydus"},
		{"a nydus entry for an older variant beats an OCI entry for the host's own",
			[]ocispec.Descriptor{entry("oci", "arm", "v7", false), entry("nydus", "arm", "v6", true)}, armv7, "nydus"},
		{"among nydus entries the closest variant wins",
			[]ocispec.Descriptor{entry("v6", "arm", "v6", true), entry("v7", "arm", "v7", true)}, armv7, "v7"},
		{"without a nydus entry the best OCI one is taken",
			[]ocispec.Descriptor{entry("v6", "arm", "v6", false), entry("v7", "arm", "v7", false)}, armv7, "v7"},
		{"a nydus entry the host cannot run is not taken",
			[]ocispec.Descriptor{entry("oci", "arm", "v6", false), entry("nydus", "arm64", "", true)}, armv7, "oci"},
		{"nothing for the platform", []ocispec.Descriptor{entry("nydus", "amd64", "", true)}, armv7, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			index, _ := json.Marshal(ocispec.Index{Manifests: tt.entries})
			got, err := selectNydus(index, tt.want)
			if tt.pick == "" {
				if !errors.Is(err, registry.ErrPlatformNotFound) {
					t.Fatalf("selectNydus = %s, %v; want ErrPlatformNotFound", got.Digest, err)
				}
				return
			}
			if err != nil || got.Digest != digest.Digest(tt.pick) {
				t.Errorf("selectNydus = %s, %v; want %s", got.Digest, err, tt.pick)
			}
		})
	}
}

func TestNydusManifestSubject(t *testing.T) {
	subj := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: "sha256:src", Size: 10,
		Platform: &ocispec.Platform{OS: "linux", Architecture: "amd64"}}
	m, err := NydusManifest(ocispec.Descriptor{}, nil, &subj)
	if err != nil {
		t.Fatal(err)
	}
	var got ocispec.Manifest
	json.Unmarshal(m.Data, &got)
	if got.Subject == nil || got.Subject.Digest != "sha256:src" || got.Subject.Platform != nil {
		t.Errorf("subject %+v: want the source without its platform", got.Subject)
	}
	if m.Desc.Digest != digest.FromBytes(m.Data) {
		t.Error("descriptor digest does not match the manifest bytes")
	}
}
