package registry

import (
	_ "crypto/sha256" // digest.Algorithm.Available for sha256
	_ "crypto/sha512" // ... and for sha384/sha512
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
)

// DockerHub is the registry host that docker.io names resolve to.
const DockerHub = "registry-1.docker.io"

// maxNameLength bounds registry/repository together, as docker's reference package does.
const maxNameLength = 255

var (
	// A repository path component: lowercase alphanumerics joined by '.', '_', '__' or runs of '-'
	// (distribution/reference/regexp.go).
	componentRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*$`)
	tagRE       = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
	hostLabelRE = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$`)
)

// Ref names an image (or, with Tag and Digest empty, a repository) in a registry.
type Ref struct {
	Registry   string // host[:port], e.g. "registry-1.docker.io", "localhost:5000"
	Repository string // e.g. "library/busybox"
	Tag        string // "" when the reference is by digest only
	Digest     string // "" or "algorithm:hex"
}

// ParseRef parses a docker-style image reference. Names without a registry go to Docker Hub
// (registry-1.docker.io), where single-component names get the "library/" prefix; docker.io and
// index.docker.io mean Docker Hub too. A reference with neither tag nor digest gets tag "latest".
//
//	busybox                       -> registry-1.docker.io/library/busybox:latest
//	localhost:5000/a/b:t          -> localhost:5000 a/b tag t
//	ghcr.io/o/r@sha256:<64 hex>   -> by digest
func ParseRef(s string) (Ref, error) {
	if s == "" {
		return Ref{}, fmt.Errorf("parse reference: empty")
	}
	if strings.ContainsAny(s, " \t\r\n") {
		return Ref{}, fmt.Errorf("parse reference %q: contains whitespace", s)
	}
	var r Ref
	name := s
	if i := strings.IndexByte(name, '@'); i >= 0 {
		d, err := digest.Parse(name[i+1:])
		if err != nil {
			return Ref{}, fmt.Errorf("parse reference %q: bad digest: %w", s, err)
		}
		r.Digest = d.String()
		name = name[:i]
	}
	if i := strings.LastIndexByte(name, ':'); i > strings.LastIndexByte(name, '/') {
		r.Tag = name[i+1:]
		name = name[:i]
		if !tagRE.MatchString(r.Tag) {
			return Ref{}, fmt.Errorf("parse reference %q: invalid tag %q", s, r.Tag)
		}
	}
	host, path := splitDomain(name)
	if host == "" {
		host = DockerHub
	}
	host, err := normalizeHost(host)
	if err != nil {
		return Ref{}, fmt.Errorf("parse reference %q: %w", s, err)
	}
	if host == DockerHub && !strings.Contains(path, "/") {
		path = "library/" + path
	}
	if err := validateRepository(path); err != nil {
		return Ref{}, fmt.Errorf("parse reference %q: %w", s, err)
	}
	if len(host)+1+len(path) > maxNameLength {
		return Ref{}, fmt.Errorf("parse reference %q: name longer than %d characters", s, maxNameLength)
	}
	r.Registry, r.Repository = host, path
	if r.Tag == "" && r.Digest == "" {
		r.Tag = "latest"
	}
	return r, nil
}

// splitDomain splits "host/path" the way docker does: the first component is a host when it has a
// '.' or ':', is "localhost", or has uppercase letters (which a repository never has).
func splitDomain(name string) (host, path string) {
	i := strings.IndexByte(name, '/')
	if i < 0 {
		return "", name
	}
	first := name[:i]
	if strings.ContainsAny(first, ".:") || first == "localhost" || strings.ToLower(first) != first {
		return first, name[i+1:]
	}
	return "", name
}

// normalizeHost validates host[:port] and maps Docker Hub's aliases to DockerHub.
func normalizeHost(h string) (string, error) {
	hostname, port := h, ""
	if strings.HasPrefix(h, "[") {
		end := strings.IndexByte(h, ']')
		if end < 0 {
			return "", fmt.Errorf("invalid registry host %q", h)
		}
		if ip := net.ParseIP(h[1:end]); ip == nil || ip.To4() != nil {
			return "", fmt.Errorf("invalid IPv6 registry host %q", h)
		}
		hostname, port = h[:end+1], strings.TrimPrefix(h[end+1:], ":")
		if port == "" && len(h) > end+1 {
			return "", fmt.Errorf("invalid registry host %q", h)
		}
	} else if i := strings.IndexByte(h, ':'); i >= 0 {
		hostname, port = h[:i], h[i+1:]
		if port == "" {
			return "", fmt.Errorf("invalid registry host %q: empty port", h)
		}
	}
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 || strings.HasPrefix(port, "+") {
			return "", fmt.Errorf("invalid registry host %q: bad port", h)
		}
	}
	if !strings.HasPrefix(hostname, "[") {
		if hostname == "" {
			return "", fmt.Errorf("invalid registry host %q", h)
		}
		for _, label := range strings.Split(hostname, ".") {
			if !hostLabelRE.MatchString(label) {
				return "", fmt.Errorf("invalid registry host %q", h)
			}
		}
	}
	// Case is kept (a host without '.' or ':' is only a host because of its uppercase letters), but
	// Docker Hub's aliases match in any case.
	switch strings.ToLower(h) {
	case "docker.io", "index.docker.io", "registry-1.docker.io":
		return DockerHub, nil
	}
	return h, nil
}

func validateRepository(path string) error {
	if path == "" {
		return fmt.Errorf("empty repository name")
	}
	if strings.ToLower(path) != path {
		return fmt.Errorf("repository name %q must be lowercase", path)
	}
	for _, c := range strings.Split(path, "/") {
		if !componentRE.MatchString(c) {
			return fmt.Errorf("invalid repository name %q: bad component %q", path, c)
		}
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
