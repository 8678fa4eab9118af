package registry

import (
	"fmt"
	"net/http"
	"reflect"
	"testing"
)

func TestParseChallenges(t *testing.T) {
	tests := []struct {
		name    string
		headers []string
		want    []challenge
	}{
		{"docker hub bearer",
			[]string{`Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull"`},
			[]challenge{{"bearer", map[string]string{"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
				"scope": "repository:library/busybox:pull"}}}},
		{"basic", []string{`Basic realm="Registry Realm"`},
			[]challenge{{"basic", map[string]string{"realm": "Registry Realm"}}}},
		{"case, spaces, token values", []string{`BEARER  Realm = https://a/t , Service=svc`},
			[]challenge{{"bearer", map[string]string{"realm": "https://a/t", "service": "svc"}}}},
		{"two challenges in one header", []string{`Basic realm="r", Bearer realm="https://a/t",service="s"`},
			[]challenge{{"basic", map[string]string{"realm": "r"}}, {"bearer", map[string]string{"realm": "https://a/t", "service": "s"}}}},
		{"two headers", []string{`Basic realm="r"`, `Bearer realm="x"`},
			[]challenge{{"basic", map[string]string{"realm": "r"}}, {"bearer", map[string]string{"realm": "x"}}}},
		{"escapes and commas in quotes", []string{`Bearer realm="a\"b,c",scope="repository:a:pull repository:b:pull"`},
			[]challenge{{"bearer", map[string]string{"realm": `a"b,c`, "scope": "repository:a:pull repository:b:pull"}}}},
		{"error param", []string{`Bearer realm="r",error="insufficient_scope"`},
			[]challenge{{"bearer", map[string]string{"realm": "r", "error": "insufficient_scope"}}}},
		{"no params", []string{`Negotiate`}, []challenge{{"negotiate", map[string]string{}}}},
		{"unterminated quote", []string{`Bearer realm="abc`}, []challenge{{"bearer", map[string]string{"realm": "abc"}}}},
		{"empty", []string{``}, nil},
		{"junk", []string{`=,=`}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			for _, v := range tt.headers {
				h.Add("WWW-Authenticate", v)
			}
			got := parseChallenges(h)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("parseChallenges(%q) = %#v, want %#v", tt.headers, got, tt.want)
			}
		})
	}
}

func TestParseChallengesIsBounded(t *testing.T) {
	h := http.Header{}
	for i := 0; i < 100; i++ {
		h.Add("WWW-Authenticate", fmt.Sprintf(`Basic realm="%d", Bearer realm="%d"`, i, i))
	}
	if n := len(parseChallenges(h)); n != maxChallenges {
		t.Errorf("parsed %d challenges, want the cap %d", n, maxChallenges)
	}
}

func FuzzParseChallenges(f *testing.F) {
	for _, s := range []string{`Bearer realm="https://auth.docker.io/token",service="registry.docker.io"`,
		`Basic realm="r", Bearer realm="x"`, `a="\`, `x y=z,,w`, `Bearer realm="a\"b"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h := http.Header{}
		h.Add("WWW-Authenticate", s)
		for _, c := range parseChallenges(h) {
			if c.Scheme == "" || c.Params == nil {
				t.Fatalf("parseChallenges(%q): empty challenge %#v", s, c)
			}
		}
	})
}
