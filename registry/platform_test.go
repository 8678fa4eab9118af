package registry

import (
	"errors"
	"runtime"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestNormalizePlatform(t *testing.T) {
	tests := []struct{ in, want ocispec.Platform }{
		{ocispec.Platform{OS: "Linux", Architecture: "x86_64"}, ocispec.Platform{OS: "linux", Architecture: "amd64"}},
		{ocispec.Platform{OS: "linux", Architecture: "x86-64", Variant: "v1"}, ocispec.Platform{OS: "linux", Architecture: "amd64"}},
		{ocispec.Platform{OS: "linux", Architecture: "amd64", Variant: "v3"}, ocispec.Platform{OS: "linux", Architecture: "amd64", Variant: "v3"}},
		{ocispec.Platform{OS: "linux", Architecture: "aarch64"}, ocispec.Platform{OS: "linux", Architecture: "arm64"}},
		{ocispec.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}, ocispec.Platform{OS: "linux", Architecture: "arm64"}},
		{ocispec.Platform{OS: "linux", Architecture: "arm"}, ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}},
		{ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "6"}, ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v6"}},
		{ocispec.Platform{OS: "linux", Architecture: "armhf"}, ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}},
		{ocispec.Platform{OS: "linux", Architecture: "armel"}, ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v6"}},
		{ocispec.Platform{OS: "linux", Architecture: "i386"}, ocispec.Platform{OS: "linux", Architecture: "386"}},
		{ocispec.Platform{OS: "macos", Architecture: "arm64"}, ocispec.Platform{OS: "darwin", Architecture: "arm64"}},
		{ocispec.Platform{OS: "linux", Architecture: "riscv64"}, ocispec.Platform{OS: "linux", Architecture: "riscv64"}},
	}
	for _, tt := range tests {
		if got := NormalizePlatform(tt.in); got.OS != tt.want.OS || got.Architecture != tt.want.Architecture || got.Variant != tt.want.Variant {
			t.Errorf("NormalizePlatform(%+v) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func TestHostPlatform(t *testing.T) {
	p := HostPlatform()
	if p.OS != runtime.GOOS || p.Architecture != NormalizePlatform(ocispec.Platform{Architecture: runtime.GOARCH}).Architecture {
		t.Errorf("HostPlatform() = %+v on %s/%s", p, runtime.GOOS, runtime.GOARCH)
	}
}

func testIndex(platforms ...ocispec.Platform) []byte {
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex}
	idx.SchemaVersion = 2
	for i, p := range platforms {
		p := p
		idx.Manifests = append(idx.Manifests, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest,
			Digest: digest.FromBytes([]byte{byte(i)}), Size: int64(i + 1), Platform: &p})
	}
	// An attestation entry (buildkit) and an entry without a platform never match.
	idx.Manifests = append(idx.Manifests,
		ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("att"), Size: 1,
			Platform: &ocispec.Platform{OS: "unknown", Architecture: "unknown"}},
		ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("none"), Size: 1})
	return mustJSON(idx)
}

func TestSelectPlatform(t *testing.T) {
	amd64 := ocispec.Platform{OS: "linux", Architecture: "amd64"}
	amd64v3 := ocispec.Platform{OS: "linux", Architecture: "amd64", Variant: "v3"}
	arm64 := ocispec.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}
	armv6 := ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v6"}
	armv7 := ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}
	win := ocispec.Platform{OS: "windows", Architecture: "amd64"}
	tests := []struct {
		name  string
		index []ocispec.Platform
		want  ocispec.Platform
		pick  int // -1: none
	}{
		{"exact", []ocispec.Platform{win, amd64, arm64}, amd64, 1},
		{"arm64 spelled aarch64", []ocispec.Platform{amd64, arm64}, ocispec.Platform{OS: "linux", Architecture: "aarch64"}, 1},
		{"arm v7 prefers v7", []ocispec.Platform{armv6, armv7}, armv7, 1},
		{"arm v7 runs v6", []ocispec.Platform{amd64, armv6}, armv7, 1},
		{"arm v6 cannot run v7", []ocispec.Platform{armv7}, armv6, -1},
		{"amd64 baseline cannot run v3", []ocispec.Platform{amd64v3}, amd64, -1},
		{"amd64 v3 runs the baseline", []ocispec.Platform{amd64}, amd64v3, 0},
		{"amd64 v3 prefers v3", []ocispec.Platform{amd64, amd64v3}, amd64v3, 1},
		{"first of equals", []ocispec.Platform{amd64, amd64}, amd64, 0},
		{"os must match", []ocispec.Platform{win}, amd64, -1},
		{"no entries", nil, amd64, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			idx := testIndex(tt.index...)
			got, err := SelectPlatform(idx, tt.want)
			if tt.pick < 0 {
				if !errors.Is(err, ErrPlatformNotFound) {
					t.Fatalf("SelectPlatform = %+v, %v; want ErrPlatformNotFound", got, err)
				}
				return
			}
			noErr(t, err)
			if want := digest.FromBytes([]byte{byte(tt.pick)}); got.Digest != want {
				t.Errorf("picked %s (%+v), want entry %d", got.Digest, got.Platform, tt.pick)
			}
		})
	}
}

func TestSelectPlatformBadInput(t *testing.T) {
	for _, in := range []string{``, `{`, `[]`, `{"schemaVersion":2,"config":{}}`, `{"manifests":"x"}`} {
		if _, err := SelectPlatform([]byte(in), HostPlatform()); err == nil {
			t.Errorf("SelectPlatform(%q) succeeded", in)
		}
	}
	if _, err := SelectPlatform(make([]byte, MaxManifestSize+1), HostPlatform()); !errors.Is(err, ErrManifestTooLarge) {
		t.Errorf("oversized index: %v", err)
	}
}

func FuzzSelectPlatform(f *testing.F) {
	f.Add(testIndex(ocispec.Platform{OS: "linux", Architecture: "amd64"}), "linux", "amd64", "")
	f.Add(testIndex(ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v6"}), "linux", "arm", "v7")
	f.Add([]byte(`{"manifests":[{"platform":{"os":"linux","architecture":"arm64","variant":"v9"}}]}`), "linux", "arm64", "")
	f.Fuzz(func(t *testing.T, index []byte, os, arch, variant string) {
		want := ocispec.Platform{OS: os, Architecture: arch, Variant: variant}
		d, err := SelectPlatform(index, want)
		if err != nil {
			return
		}
		if d.Platform == nil {
			t.Fatalf("selected an entry without a platform")
		}
		got, w := NormalizePlatform(*d.Platform), NormalizePlatform(want)
		if got.OS != w.OS || got.Architecture != w.Architecture {
			t.Fatalf("selected %+v for %+v", got, w)
		}
	})
}
