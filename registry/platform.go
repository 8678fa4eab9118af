package registry

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/containerd/platforms"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// HostPlatform is the platform this program runs on, as containerd sees it (arm's variant comes
// from /proc/cpuinfo), normalised.
func HostPlatform() ocispec.Platform { return platforms.Normalize(platforms.DefaultSpec()) }

// ParsePlatform parses "os/arch[/variant]" with containerd's rules, so spellings such as x86_64,
// aarch64 or armhf mean what they mean to docker and nydusify. Unlike platforms.Parse it wants both
// OS and architecture: a lone "linux" or "arm64" would be completed from this host, which is not what
// the sender of a request to a daemon on another host meant. A platform given without a variant keeps
// Variant "" (platforms.Normalize fills in arm's v7), so a caller can still tell that none was given.
func ParsePlatform(s string) (ocispec.Platform, error) {
	if n := strings.Count(s, "/"); n < 1 || n > 2 {
		return ocispec.Platform{}, fmt.Errorf("platform %q: want os/arch[/variant]", s)
	}
	p, err := platforms.Parse(s)
	if err != nil {
		return ocispec.Platform{}, fmt.Errorf("platform %q: want os/arch[/variant]: %w", s, err)
	}
	return p, nil
}

// BestPlatform returns the position in manifests of the entry that best serves a host of platform
// want, or -1 when none can. containerd's platforms.Only decides both which entries can run there
// (the same OS and architecture, or one the host also runs: an older arm variant or amd64 level, 386
// on amd64, arm on arm64) and which of two serves it better; ties keep the index's order. Entries
// without a platform never match.
func BestPlatform(manifests []ocispec.Descriptor, want ocispec.Platform) int {
	m := platforms.Only(want)
	best := -1
	for i, d := range manifests {
		if d.Platform == nil || !m.Match(*d.Platform) {
			continue
		}
		if best < 0 || m.Less(*d.Platform, *manifests[best].Platform) {
			best = i
		}
	}
	return best
}

// SelectPlatform picks, from an OCI index or Docker manifest list, the manifest that best serves
// platform p (see BestPlatform). Its error lists the platforms the index has.
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
	if i := BestPlatform(idx.Manifests, p); i >= 0 {
		return idx.Manifests[i], nil
	}
	return ocispec.Descriptor{}, fmt.Errorf("select platform: %w", NoPlatformError(idx.Manifests, p))
}

// NoPlatformError says that manifests has nothing for want, and what it has instead.
func NoPlatformError(manifests []ocispec.Descriptor, want ocispec.Platform) error {
	var seen []string
	for _, m := range manifests {
		if m.Platform != nil {
			seen = append(seen, platforms.Format(platforms.Normalize(*m.Platform)))
		}
	}
	if len(seen) > 20 {
		seen = append(seen[:20], "...")
	}
	return fmt.Errorf("%w %s (index has: %s)", ErrPlatformNotFound, platforms.Format(platforms.Normalize(want)),
		strings.Join(seen, ", "))
}
