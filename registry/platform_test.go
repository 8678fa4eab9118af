package registry

import (
	"errors"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/containerd/platforms"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestParsePlatform(t *testing.T) {
	tests := []struct {
		in   string
		want ocispec.Platform
	}{
		{"linux/amd64", ocispec.Platform{OS: "linux", Architecture: "amd64"}},
		{"linux/x86_64", ocispec.Platform{OS: "linux", Architecture: "amd64"}},
		{"Linux/AMD64", ocispec.Platform{OS: "linux", Architecture: "amd64"}},
		{"linux/amd64/v3", ocispec.Platform{OS: "linux", Architecture: "amd64", Variant: "v3"}},
		{"linux/aarch64", ocispec.Platform{OS: "linux", Architecture: "arm64"}},
		{"linux/arm64/v8", ocispec.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}},
		{"linux/arm", ocispec.Platform{OS: "linux", Architecture: "arm"}}, // no variant given: Variant stays ""
		{"linux/arm/7", ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}},
		{"linux/armel", ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v6"}},
		{"linux/i386", ocispec.Platform{OS: "linux", Architecture: "386"}},
		{"macos/arm64", ocispec.Platform{OS: "darwin", Architecture: "arm64"}},
		{"linux/riscv64", ocispec.Platform{OS: "linux", Architecture: "riscv64"}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParsePlatform(tt.in)
			noErr(t, err)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParsePlatform(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParsePlatformRejects(t *testing.T) {
	for _, in := range []string{
		"",                  // nothing
		"linux",             // no architecture: the library would take this host's
		"arm64",             // no OS: likewise
		"linux/",            // empty architecture
		"/amd64",            // empty OS
		"linux/arm/v7/x",    // too many parts
		"linux/*",           // wildcards
		"linux/am d64",      // not a platform word
		"linux(10/amd64",    // unclosed OS version
		"linux/amd64/v3/v4", // too many parts
	} {
		t.Run(in, func(t *testing.T) {
			_, err := ParsePlatform(in)
			if err == nil || !strings.Contains(err.Error(), "want os/arch[/variant]") {
				t.Errorf("ParsePlatform(%q) error = %v, want one saying os/arch[/variant]", in, err)
			}
		})
	}
}

func TestHostPlatform(t *testing.T) {
	p := HostPlatform()
	if p.OS != runtime.GOOS || p.Architecture != runtime.GOARCH {
		t.Errorf("HostPlatform() = %+v on %s/%s", p, runtime.GOOS, runtime.GOARCH)
	}
	if _, err := SelectPlatform(testIndex(ocispec.Platform{OS: runtime.GOOS, Architecture: runtime.GOARCH}), p); err != nil {
		t.Errorf("an index entry for %s/%s does not serve HostPlatform() = %+v: %v", runtime.GOOS, runtime.GOARCH, p, err)
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
	i386 := ocispec.Platform{OS: "linux", Architecture: "386"}
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
		{"an entry spelled x86_64", []ocispec.Platform{arm64, {OS: "linux", Architecture: "x86_64"}}, amd64, 1},
		{"arm v7 prefers v7", []ocispec.Platform{armv6, armv7}, armv7, 1},
		{"arm v7 runs v6", []ocispec.Platform{amd64, armv6}, armv7, 1},
		{"arm without a variant is v7", []ocispec.Platform{armv7}, ocispec.Platform{OS: "linux", Architecture: "arm"}, 0},
		{"arm v6 cannot run v7", []ocispec.Platform{armv7}, armv6, -1},
		{"arm64 runs arm", []ocispec.Platform{amd64, armv7}, arm64, 1},
		{"arm64 prefers arm64 to arm", []ocispec.Platform{armv7, arm64}, arm64, 1},
		{"amd64 baseline cannot run v3", []ocispec.Platform{amd64v3}, amd64, -1},
		{"amd64 v3 runs the baseline", []ocispec.Platform{amd64}, amd64v3, 0},
		{"amd64 v3 prefers v3", []ocispec.Platform{amd64, amd64v3}, amd64v3, 1},
		{"amd64 runs 386", []ocispec.Platform{arm64, i386}, amd64, 1},
		{"amd64 prefers amd64 to 386", []ocispec.Platform{i386, amd64}, amd64, 1},
		{"386 cannot run amd64", []ocispec.Platform{amd64}, i386, -1},
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

func TestSelectPlatformSaysWhatTheIndexHas(t *testing.T) {
	_, err := SelectPlatform(testIndex(ocispec.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"},
		ocispec.Platform{OS: "linux", Architecture: "arm"}), ocispec.Platform{OS: "linux", Architecture: "s390x"})
	const want = "no manifest for platform linux/s390x (index has: linux/arm64, linux/arm/v7, unknown/unknown)"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("SelectPlatform error = %v, want one containing %q", err, want)
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
		if m := platforms.Only(want); !m.Match(*d.Platform) {
			t.Fatalf("selected %+v, which does not serve %+v", *d.Platform, want)
		}
	})
}
