package registry

import (
	_ "crypto/sha256" // digest.Algorithm.Available for sha256
	_ "crypto/sha512" // ... and for sha384/sha512
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
)

// DockerHub is the registry host that docker.io names resolve to.
const DockerHub = "registry-1.docker.io"

// Ref names an image (or, with Tag and Digest empty, a repository) in a registry.
type Ref struct {
	Registry   string // host[:port], e.g. "registry-1.docker.io", "localhost:5000"
	Repository string // e.g. "library/busybox"
	Tag        string // "" when the reference is by digest only
	Digest     string // "" or "algorithm:hex"
}

// ParseRef parses a docker-style image reference with docker's own rules
// (github.com/distribution/reference), so a name means here what it means to docker pull. Names
// without a registry go to Docker Hub, where single-component names get the "library/" prefix;
// docker.io, index.docker.io and registry-1.docker.io (in any case) all mean Docker Hub, whose
// registry API is served at DockerHub. A reference with neither tag nor digest gets tag "latest";
// one with both keeps the tag for display, but requests use the digest.
//
//	busybox                       -> registry-1.docker.io/library/busybox:latest
//	localhost:5000/a/b:t          -> localhost:5000 a/b tag t
//	ghcr.io/o/r@sha256:<64 hex>   -> by digest
func ParseRef(s string) (Ref, error) {
	if s == "" {
		return Ref{}, errors.New("parse image reference: empty")
	}
	named, err := reference.ParseNormalizedNamed(dockerHubAlias(s))
	if err != nil {
		if errors.Is(err, reference.ErrReferenceInvalidFormat) {
			return Ref{}, fmt.Errorf("parse image reference %q: %w (want [host[:port]/]repository[:tag][@digest])", s, err)
		}
		return Ref{}, fmt.Errorf("parse image reference %q: %w", s, err)
	}
	host := reference.Domain(named)
	if err := checkPort(host); err != nil {
		return Ref{}, fmt.Errorf("parse image reference %q: %w", s, err)
	}
	if host == "docker.io" {
		host = DockerHub
	}
	r := Ref{Registry: host, Repository: reference.Path(named)}
	if d, ok := named.(reference.Digested); ok {
		r.Digest = d.Digest().String()
	}
	if t, ok := reference.TagNameOnly(named).(reference.Tagged); ok {
		r.Tag = t.Tag() // "latest" when s has neither tag nor digest
	}
	return r, nil
}

// dockerHubAlias rewrites a leading Docker Hub alias the library does not know (registry-1.docker.io,
// or any alias in other than lowercase) to docker.io, so that it gets the same "library/" prefix and
// the same host as every other way of naming Docker Hub.
func dockerHubAlias(s string) string {
	first, rest, ok := strings.Cut(s, "/")
	if !ok {
		return s
	}
	switch strings.ToLower(first) {
	case "docker.io", "index.docker.io", DockerHub:
		return "docker.io/" + rest
	}
	return s
}

// checkPort refuses a registry port outside 1-65535: the reference grammar accepts any run of digits,
// and the dial error such a port would get later does not say which part of the name is wrong.
func checkPort(host string) error {
	h, port, err := net.SplitHostPort(host)
	if err != nil {
		return nil // no port
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("registry %q: port %s is not in 1-65535", h, port)
	}
	return nil
}

// String is the full reference, registry/repository[:tag][@digest]; ParseRef(r.String()) == r.
func (r Ref) String() string {
	s := r.Context()
	if r.Tag != "" {
		s += ":" + r.Tag
	}
	if r.Digest != "" {
		s += "@" + r.Digest
	}
	return s
}

// Context is the repository's name without tag or digest: registry/repository.
func (r Ref) Context() string { return r.Registry + "/" + r.Repository }

// WithDigest returns r pointing at digest d; the tag is kept for display, but the digest is what
// requests use.
func (r Ref) WithDigest(d digest.Digest) Ref {
	r.Digest = d.String()
	return r
}

// reference is the manifest reference used in URLs: the digest when there is one, else the tag.
func (r Ref) reference() string {
	if r.Digest != "" {
		return r.Digest
	}
	return r.Tag
}

// isLoopback reports whether host[:port] names this machine: localhost, 127.0.0.0/8 or ::1.
func isLoopback(host string) bool {
	h := host
	if ip := net.ParseIP(h); ip != nil {
		return ip.IsLoopback()
	}
	if strings.HasPrefix(h, "[") {
		if end := strings.IndexByte(h, ']'); end > 0 {
			h = h[1:end]
		}
	} else if i := strings.LastIndexByte(h, ':'); i >= 0 {
		h = h[:i]
	}
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}
