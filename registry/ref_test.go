package registry

import (
	"fmt"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

const testDigest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestParseRef(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Ref
	}{
		{"a short name is an official Docker Hub image at latest", "busybox", Ref{DockerHub, "library/busybox", "latest", ""}},
		{"a short name keeps its tag", "busybox:1.36", Ref{DockerHub, "library/busybox", "1.36", ""}},
		{"docker.io is Docker Hub", "docker.io/busybox", Ref{DockerHub, "library/busybox", "latest", ""}},
		{"index.docker.io is Docker Hub", "index.docker.io/library/busybox:musl", Ref{DockerHub, "library/busybox", "musl", ""}},
		{"registry-1.docker.io is Docker Hub", "registry-1.docker.io/user/app", Ref{DockerHub, "user/app", "latest", ""}},
		{"registry-1.docker.io gets library/ too", "registry-1.docker.io/busybox", Ref{DockerHub, "library/busybox", "latest", ""}},
		{"Docker Hub aliases match in any case", "Docker.IO/owner/repo", Ref{DockerHub, "owner/repo", "latest", ""}},
		{"a two-component name without a host is on Docker Hub", "user/app:v1", Ref{DockerHub, "user/app", "v1", ""}},
		{"localhost is a host", "localhost/app", Ref{"localhost", "app", "latest", ""}},
		{"a host with a port", "localhost:5000/a/b:t", Ref{"localhost:5000", "a/b", "t", ""}},
		{"an IPv4 host with a port", "127.0.0.1:5000/a/b/c", Ref{"127.0.0.1:5000", "a/b/c", "latest", ""}},
		{"an IPv6 host with a port", "[::1]:5000/a:t", Ref{"[::1]:5000", "a", "t", ""}},
		{"the highest port", "example.com:65535/a", Ref{"example.com:65535", "a", "latest", ""}},
		{"a host keeps its case", "GHCR.io/owner/repo", Ref{"GHCR.io", "owner/repo", "latest", ""}},
		{"an uppercase first component is a host", "0A0/x", Ref{"0A0", "x", "latest", ""}},
		{"by digest only: no tag", "ghcr.io/o/r@" + testDigest, Ref{"ghcr.io", "o/r", "", testDigest}},
		{"tag and digest are both kept", "ghcr.io/o/r:v2@" + testDigest, Ref{"ghcr.io", "o/r", "v2", testDigest}},
		{"a short name by digest", "busybox@" + testDigest, Ref{DockerHub, "library/busybox", "", testDigest}},
		{"separators in components and tags", "example.com/a_b/c__d/e-f/g.h--i:T_a.g-1", Ref{"example.com", "a_b/c__d/e-f/g.h--i", "T_a.g-1", ""}},
		{"a lone host:port is a Docker Hub name with a tag, as with docker", "localhost:5000", Ref{DockerHub, "library/localhost", "5000", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRef(tt.in)
			noErr(t, err)
			if got != tt.want {
				t.Fatalf("ParseRef(%q) = %#v, want %#v", tt.in, got, tt.want)
			}
			again, err := ParseRef(got.String())
			noErr(t, err)
			if again != got {
				t.Errorf("ParseRef(%q.String() = %q) = %#v", tt.in, got.String(), again)
			}
		})
	}
}

func TestParseRefRejects(t *testing.T) {
	const format = "invalid reference format (want [host[:port]/]repository[:tag][@digest])"
	tests := []struct{ name, in, why string }{
		{"empty", "", "empty"},
		{"uppercase short name", "Busybox", "must be lowercase"},
		{"uppercase repository", "example.com/App", "must be lowercase"},
		{"empty path component", "example.com/a//b", format},
		{"component starts with a separator", "example.com/-a", format},
		{"component ends with a separator", "example.com/a-", format},
		{"empty tag", "example.com/a:", format},
		{"tag starts with '-'", "example.com/a:-x", format},
		{"tag longer than 128", "example.com/a:" + strings.Repeat("t", 129), format},
		{"digest too short", "example.com/a@sha256:abc", format},
		{"digest of an unknown algorithm", "example.com/a@md5:0123456789abcdef0123456789abcdef", "unsupported digest algorithm"},
		{"digest with a wrong length", "example.com/a@sha256:0123456789abcdef0123456789abcdef", "invalid checksum digest length"},
		{"whitespace", "ex ample.com/a", format},
		{"port 0", "example.com:0/a", "port 0 is not in 1-65535"},
		{"port above 65535", "example.com:99999/a", "port 99999 is not in 1-65535"},
		{"empty port", "example.com:/a", format},
		{"host label starts with '-'", "-bad.com/a", format},
		{"IPv4 in brackets", "[1.2.3.4]:80/a", format},
		{"unclosed IPv6 bracket", "[::1/a", format},
		{"a 64-hex name, which docker reserves for image IDs", strings.Repeat("0", 64), "cannot specify 64-byte hexadecimal strings"},
		{"repository longer than 255", "example.com/" + strings.Repeat("a", 256), "not be more than 255 characters"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseRef(tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.why) {
				t.Fatalf("ParseRef(%q) error = %v, want one mentioning %q", tt.in, err, tt.why)
			}
			if tt.in != "" && !strings.Contains(err.Error(), fmt.Sprintf("%q", tt.in)) {
				t.Errorf("ParseRef(%q) error = %v, want one naming the input", tt.in, err)
			}
		})
	}
}

func TestRefHelpers(t *testing.T) {
	r := Ref{Registry: "localhost:5000", Repository: "a/b", Tag: "t"}
	if got := r.Context(); got != "localhost:5000/a/b" {
		t.Errorf("Context = %q", got)
	}
	d := r.WithDigest(digest.Digest(testDigest))
	if d.Tag != "t" || d.Digest != testDigest || d.reference() != testDigest {
		t.Errorf("WithDigest = %#v", d)
	}
	if r.Digest != "" {
		t.Errorf("WithDigest changed the receiver")
	}
	if got := d.String(); got != "localhost:5000/a/b:t@"+testDigest {
		t.Errorf("String = %q", got)
	}
}

func TestIsLoopback(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost": true, "LOCALHOST:5000": true, "127.0.0.1": true, "127.1.2.3:80": true, "[::1]:5000": true,
		"::1": true, "10.0.0.1:5000": false, "example.com": false, "localhost.example.com": false, "[::2]": false,
	} {
		if got := isLoopback(host); got != want {
			t.Errorf("isLoopback(%q) = %v, want %v", host, got, want)
		}
	}
}

func FuzzParseRef(f *testing.F) {
	for _, s := range []string{"busybox", "localhost:5000/a/b:t", "ghcr.io/o/r@" + testDigest, "[::1]:5000/a:t",
		"a:b@c", "docker.io/x", "::::", "[", "example.com:1/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRef(s)
		if err != nil {
			return
		}
		if r.Registry == "" || r.Repository == "" || (r.Tag == "" && r.Digest == "") {
			t.Fatalf("ParseRef(%q) = %#v: incomplete", s, r)
		}
		again, err := ParseRef(r.String())
		if err != nil || again != r {
			t.Fatalf("ParseRef(%q) = %#v, but its String %q parses to %#v, %v", s, r, r.String(), again, err)
		}
	})
}
