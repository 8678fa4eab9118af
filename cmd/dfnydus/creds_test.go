package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseCreds(t *testing.T) {
	for _, tc := range []struct {
		in, user, pass string
		ok             bool
	}{
		{"alice:s3cret", "alice", "s3cret", true},
		{"alice:pa:ss", "alice", "pa:ss", true},
		{"alice:", "alice", "", true},
		{"alice", "", "", false},
		{":pass", "", "", false},
	} {
		u, p, err := parseCreds(tc.in)
		if (err == nil) != tc.ok || u != tc.user || p != tc.pass {
			t.Errorf("parseCreds(%q) = %q, %q, %v", tc.in, u, p, err)
		}
	}
}

func writeCreds(t *testing.T, body string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "creds")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // exact, whatever the umask
		t.Fatal(err)
	}
	return p
}

func TestCredsFile(t *testing.T) {
	t.Setenv(credsEnv, "env:ignored")
	for _, tc := range []struct {
		name, body string
		mode       os.FileMode
		user, pass string
		err        string
	}{
		{"0600, first line only", "bob:hunter2\r\nsecond line\n", 0o600, "bob", "hunter2", ""},
		{"0400 without newline", "bob:x", 0o400, "bob", "x", ""},
		{"group readable", "bob:x\n", 0o640, "", "", "group or others can read"},
		{"world readable", "bob:x\n", 0o604, "", "", "group or others can read"},
		{"empty", "", 0o600, "", "", "empty"},
		{"no colon", "bob\n", 0o600, "", "", "USER:PASSWORD"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := credsFlags{file: writeCreds(t, tc.body, tc.mode)}
			u, p, err := f.get(nil)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || u != tc.user || p != tc.pass {
				t.Fatalf("got %q, %q, %v", u, p, err)
			}
		})
	}
}

func TestCredsSources(t *testing.T) {
	t.Setenv(credsEnv, "")
	if u, p, err := (&credsFlags{}).get(nil); err != nil || u != "" || p != "" {
		t.Errorf("no credentials: %q, %q, %v", u, p, err)
	}
	t.Setenv(credsEnv, "eve:fromenv")
	if u, p, err := (&credsFlags{}).get(nil); err != nil || u != "eve" || p != "fromenv" {
		t.Errorf("$%s: %q, %q, %v", credsEnv, u, p, err)
	}
	f := &credsFlags{stdin: true, in: strings.NewReader("sam:piped\nrest")}
	if u, p, err := f.get(nil); err != nil || u != "sam" || p != "piped" {
		t.Errorf("--creds-stdin: %q, %q, %v", u, p, err)
	}
	// A second call (client and request options both ask) must not read stdin again.
	if u, p, err := f.get(nil); err != nil || u != "sam" || p != "piped" {
		t.Errorf("--creds-stdin again: %q, %q, %v", u, p, err)
	}
	if u, p, err := (&credsFlags{inline: "ann:inline"}).get(nil); err != nil || u != "ann" || p != "inline" {
		t.Errorf("--creds: %q, %q, %v", u, p, err)
	}
	if _, _, err := (&credsFlags{inline: "a:b", stdin: true}).get(nil); err == nil {
		t.Error("--creds with --creds-stdin accepted")
	}
}
