package main

import (
	"fmt"
	"strings"

	"github.com/containerd/containerd/v2/pkg/reference"
)

// imageRef is a tagged image reference on a registry reached by plain HTTP: HOST[:PORT]/NAME:TAG.
type imageRef struct {
	host string // HOST[:PORT]
	repo string // NAME, may contain slashes
	tag  string
}

// parseRef parses HOST[:PORT]/NAME:TAG. Digest references are rejected: the store addresses
// layers of a tagged image.
func parseRef(s string) (imageRef, error) {
	spec, err := reference.Parse(s)
	if err != nil {
		return imageRef{}, fmt.Errorf("%w %q: %w", errBadRef, s, err)
	}
	host := spec.Hostname()
	repo := strings.TrimPrefix(spec.Locator, host+"/")
	switch {
	case repo == spec.Locator || repo == "":
		return imageRef{}, fmt.Errorf("%w %q: want HOST[:PORT]/NAME:TAG", errBadRef, s)
	case spec.Object == "":
		return imageRef{}, fmt.Errorf("%w %q: no tag", errBadRef, s)
	case strings.Contains(spec.Object, "@"):
		return imageRef{}, fmt.Errorf("%w %q: digest references are not supported", errBadRef, s)
	}
	if err := validRepo(repo); err != nil {
		return imageRef{}, fmt.Errorf("%w %q: %w", errBadRef, s, err)
	}
	if err := validTag(spec.Object); err != nil {
		return imageRef{}, fmt.Errorf("%w %q: %w", errBadRef, s, err)
	}
	return imageRef{host: host, repo: repo, tag: spec.Object}, nil
}

// String is the canonical form HOST/NAME:TAG, the name the store's mountpoint is keyed by.
func (r imageRef) String() string {
	return r.host + "/" + r.repo + ":" + r.tag
}

// validRepo checks a repository name against the distribution grammar's alphabet
// (lowercase alphanumerics separated by '.', '_', '-' or '/').
func validRepo(repo string) error {
	if repo == "" {
		return fmt.Errorf("empty repository name")
	}
	for _, part := range strings.Split(repo, "/") {
		if part == "" {
			return fmt.Errorf("empty path component in %q", repo)
		}
		for _, c := range part {
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
				return fmt.Errorf("invalid character %q in repository %q", c, repo)
			}
		}
	}
	return nil
}

// validTag checks a tag against the distribution grammar: [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}.
func validTag(tag string) error {
	if tag == "" || len(tag) > 128 {
		return fmt.Errorf("tag %q must be 1-128 characters", tag)
	}
	for i, c := range tag {
		ok := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' ||
			i > 0 && (c == '.' || c == '-')
		if !ok {
			return fmt.Errorf("invalid character %q in tag %q", c, tag)
		}
	}
	return nil
}
