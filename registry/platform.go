package registry

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// HostPlatform is the platform this program runs on, normalised (arm gets its variant from
// /proc/cpuinfo, as containerd's platforms package does).
func HostPlatform() ocispec.Platform {
	p := ocispec.Platform{OS: runtime.GOOS, Architecture: runtime.GOARCH}
	if runtime.GOARCH == "arm" {
		p.Variant = cpuVariant()
	}
	return NormalizePlatform(p)
}

// cpuVariant reads the ARM architecture version from /proc/cpuinfo ("CPU architecture: 7").
func cpuVariant() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(k) != "CPU architecture" {
			continue
		}
		switch v = strings.ToLower(strings.TrimSpace(v)); v {
		case "8", "aarch64":
			return "v8"
		case "7", "6", "5":
			return "v" + v
		}
		return ""
	}
	return ""
}

// NormalizePlatform canonicalises OS, architecture and variant spellings the way containerd's
// platforms.Normalize does: x86_64 -> amd64, aarch64 -> arm64 (variant v8 is implied), armhf -> arm
// v7, armel -> arm v6, i386 -> 386, bare arm -> arm v7.
func NormalizePlatform(p ocispec.Platform) ocispec.Platform {
	p.OS = strings.ToLower(p.OS)
	if p.OS == "macos" {
		p.OS = "darwin"
	}
	arch, variant := strings.ToLower(p.Architecture), strings.ToLower(p.Variant)
	switch arch {
	case "i386":
		arch, variant = "386", ""
	case "x86_64", "x86-64", "amd64":
		arch = "amd64"
		if variant == "v1" {
			variant = ""
		}
	case "aarch64", "arm64":
		arch = "arm64"
		switch variant {
		case "8", "v8", "v8.0":
			variant = ""
		}
	case "armhf":
		arch, variant = "arm", "v7"
	case "armel":
		arch, variant = "arm", "v6"
	case "arm":
		switch variant {
		case "", "7":
			variant = "v7"
		case "5", "6", "8":
			variant = "v" + variant
		}
	}
	p.Architecture, p.Variant = arch, variant
	return p
}

// platformString is os/arch[/variant].
func platformString(p ocispec.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// variantRank says how well a candidate's variant serves the wanted one: 0 is an exact match,
// higher is a worse but compatible match (an older arm or amd64 level runs on a newer CPU), -1 is
// no match. Both variants are normalised (arm always has one; amd64's baseline is "").
func variantRank(arch, want, have string) int {
	if want == have {
		return 0
	}
	var levels []string
	switch arch {
	case "arm":
		levels = []string{"v5", "v6", "v7", "v8"}
	case "amd64":
		levels = []string{"", "v2", "v3", "v4"} // "" is the baseline, v1
	default:
		// Variants we know no order for: an unspecified one on either side is compatible.
		if want == "" || have == "" {
			return 1
		}
		return -1
	}
	wi, hi := indexOf(levels, want), indexOf(levels, have)
	if wi < 0 || hi < 0 || hi > wi {
		return -1
	}
	return wi - hi
}

func indexOf(list []string, s string) int {
	for i, v := range list {
		if v == s {
			return i
		}
	}
	return -1
}

// SelectPlatform picks, from an OCI index or Docker manifest list, the manifest that best serves
// platform p: same OS and architecture, the exact variant or else the closest compatible older one
// (arm v7 runs v6 and v5 images). Ties keep the index's order.
func SelectPlatform(index []byte, p ocispec.Platform) (ocispec.Descriptor, error) {
	if len(index) > MaxManifestSize {
		return ocispec.Descriptor{}, fmt.Errorf("select platform: %w: %d bytes", ErrManifestTooLarge, len(index))
	}
	var idx struct {
		MediaType string               `json:"mediaType"`
		Manifests []ocispec.Descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(index, &idx); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("select platform: parse index: %w", err)
	}
	if idx.Manifests == nil {
		return ocispec.Descriptor{}, fmt.Errorf("select platform: not an index (no \"manifests\")")
	}
	want := NormalizePlatform(p)
	best, bestRank := -1, 0
	var seen []string
	for i, m := range idx.Manifests {
		if m.Platform == nil {
			continue
		}
		have := NormalizePlatform(*m.Platform)
		seen = append(seen, platformString(have))
		if have.OS != want.OS || have.Architecture != want.Architecture {
			continue
		}
		r := variantRank(want.Architecture, want.Variant, have.Variant)
		if r < 0 {
			continue
		}
		if best < 0 || r < bestRank {
			best, bestRank = i, r
		}
	}
	if best < 0 {
		if len(seen) > 20 {
			seen = append(seen[:20], "...")
		}
		return ocispec.Descriptor{}, fmt.Errorf("select platform: %w %s (index has: %s)", ErrPlatformNotFound,
			platformString(want), strings.Join(seen, ", "))
	}
	return idx.Manifests[best], nil
}
