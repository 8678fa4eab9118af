package registry

import (
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

const testDigest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestParseRef(t *testing.T) {
	tests := []struct {
		in   string
		want Ref
	}{
		{"busybox", Ref{DockerHub, "library/busybox", "latest", ""}},
		{"busybox:1.36", Ref{DockerHub, "library/busybox", "1.36", ""}},
		{"docker.io/busybox", Ref{DockerHub, "library/busybox", "latest", ""}},
		{"index.docker.io/library/busybox:musl", Ref{DockerHub, "library/busybox", "musl", ""}},
		{"registry-1.docker.io/user/app", Ref{DockerHub, "user/app", "latest", ""}},
		{"user/app:v1", Ref{DockerHub, "user/app", "v1", ""}},
		{"localhost/app", Ref{"localhost", "app", "latest", ""}},
		{"localhost:5000/a/b:t", Ref{"localhost:5000", "a/b", "t", ""}},
		{"127.0.0.1:5000/a/b/c", Ref{"127.0.0.1:5000", "a/b/c", "latest", ""}},
		{"[::1]:5000/a:t", Ref{"[::1]:5000", "a", "t", ""}},
		{"GHCR.io/owner/repo", Ref{"GHCR.io", "owner/repo", "latest", ""}},
		{"Docker.IO/owner/repo", Ref{DockerHub, "owner/repo", "latest", ""}},
		{"0A0/x", Ref{"0A0", "x", "latest", ""}}, // a host only because of its uppercase letter
		{"ghcr.io/o/r@" + testDigest, Ref{"ghcr.io", "o/r", "", testDigest}},
		{"ghcr.io/o/r:v2@" + testDigest, Ref{"ghcr.io", "o/r", "v2", testDigest}},
		{"busybox@" + testDigest, Ref{DockerHub, "library/busybox", "", testDigest}},
		{"example.com/a_b/c__d/e-f/g.h--i:T_a.g-1", Ref{"example.com", "a_b/c__d/e-f/g.h--i", "T_a.g-1", ""}},
		// As with docker, a lone "host:port" is a Docker Hub name with a tag.
		{"localhost:5000", Ref{DockerHub, "library/localhost", "5000", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
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
	tests := []struct{ in, why string }{
		{"", "empty"},
		{"Busybox", "must be lowercase"},
		{"example.com/App", "must be lowercase"},
		{"example.com/a//b", "bad component"},
		{"example.com/-a", "bad component"},
		{"example.com/a-", "bad component"},
		{"example.com/a:", "invalid tag"},
		{"example.com/a:-x", "invalid tag"},
		{"example.com/a:" + strings.Repeat("t", 129), "invalid tag"},
		{"example.com/a@sha256:abc", "bad digest"},
		{"example.com/a@md5:0123456789abcdef0123456789abcdef", "bad digest"},
		{"ex ample.com/a", "whitespace"},
		{"example.com:0/a", "bad port"},
		{"example.com:99999/a", "bad port"},
		{"example.com:/a", "empty port"},
		{"-bad.com/a", "invalid registry host"},
		{"[1.2.3.4]:80/a", "IPv6"},
		{"[::1/a", "invalid registry host"},
		{"example.com/" + strings.Repeat("a", 250), "longer than"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			_, err := ParseRef(tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.why) {
				t.Fatalf("ParseRef(%q) error = %v, want one mentioning %q", tt.in, err, tt.why)
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
