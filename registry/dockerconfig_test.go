package registry

import (
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeHelper installs docker-credential-NAME in a PATH directory: a shell script answering "get"
// with script's output for the server URL it reads.
func fakeHelper(t *testing.T, name, script string) {
	t.Helper()
	dir := t.TempDir()
	body := "#!/bin/sh\n[ \"$1\" = get ] || exit 3\nread server\n" + script + "\n"
	if err := os.WriteFile(filepath.Join(dir, "docker-credential-"+name), []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestDockerConfigCredentials(t *testing.T) {
	fakeHelper(t, "fake", `case "$server" in
  https://index.docker.io/v1/) echo '{"ServerURL":"'$server'","Username":"hubuser","Secret":"hubpass"}' ;;
  helper.example.com) echo '{"ServerURL":"'$server'","Username":"<token>","Secret":"refresh-me"}' ;;
  broken.example.com) echo 'boom' >&2; exit 1 ;;
  *) echo 'credentials not found in native keychain'; exit 1 ;;
esac`)
	cfg := `{
  "auths": {
    "https://index.docker.io/v1/": {},
    "inline.example.com": {"auth": "` + b64("inline:secret:with:colons") + `"},
    "https://split.example.com/v2/": {"username": "split", "password": "pw"},
    "token.example.com": {"identitytoken": "idtok"},
    "localhost:5000": {"auth": "` + b64("local:pw") + `"}
  },
  "credHelpers": {"helper.example.com": "fake", "broken.example.com": "fake", "missing.example.com": "not-installed"},
  "credsStore": "fake"
}`
	tests := []struct {
		host    string
		want    Credential
		wantErr string
	}{
		{DockerHub, Credential{Username: "hubuser", Password: "hubpass"}, ""}, // empty auths entry: the store has it
		{"inline.example.com", Credential{Username: "inline", Password: "secret:with:colons"}, ""},
		{"split.example.com", Credential{Username: "split", Password: "pw"}, ""},
		{"token.example.com", Credential{IdentityToken: "idtok"}, ""},
		{"localhost:5000", Credential{Username: "local", Password: "pw"}, ""},
		{"helper.example.com", Credential{IdentityToken: "refresh-me"}, ""},
		{"missing.example.com", Credential{}, ""},   // helper not installed: anonymous
		{"elsewhere.example.com", Credential{}, ""}, // the store has nothing
		{"broken.example.com", Credential{}, "boom"},
	}
	c, err := loadCredentials(Options{DockerConfig: writeConfig(t, cfg)}.withDefaults())
	noErr(t, err)
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			got, err := c.lookup(context.Background(), tt.host)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("lookup(%s) = %+v, %v; want error with %q", tt.host, got, err, tt.wantErr)
				}
				return
			}
			noErr(t, err)
			if got != tt.want {
				t.Errorf("lookup(%s) = %+v, want %+v", tt.host, got, tt.want)
			}
		})
	}
}

func TestCredentialSources(t *testing.T) {
	cfg := writeConfig(t, `{"auths":{"r.example.com":{"auth":"`+b64("cfg:pw")+`"}}}`)

	// Explicit credentials win over the config.
	c, err := loadCredentials(Options{DockerConfig: cfg, Username: "me", Password: "mine"}.withDefaults())
	noErr(t, err)
	got, _ := c.lookup(context.Background(), "r.example.com")
	if got != (Credential{Username: "me", Password: "mine"}) {
		t.Errorf("explicit credentials: got %+v", got)
	}

	// The config may be named by its directory; DOCKER_CONFIG names the default directory.
	c, err = loadCredentials(Options{DockerConfig: filepath.Dir(cfg)}.withDefaults())
	noErr(t, err)
	if got, _ := c.lookup(context.Background(), "r.example.com"); got.Username != "cfg" {
		t.Errorf("config by directory: got %+v", got)
	}
	t.Setenv("DOCKER_CONFIG", filepath.Dir(cfg))
	c, err = loadCredentials(Options{}.withDefaults())
	noErr(t, err)
	if got, _ := c.lookup(context.Background(), "r.example.com"); got.Username != "cfg" {
		t.Errorf("config from DOCKER_CONFIG: got %+v", got)
	}

	// A missing default config means anonymous; a missing named one is an error.
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	c, err = loadCredentials(Options{}.withDefaults())
	noErr(t, err)
	if got, _ := c.lookup(context.Background(), "r.example.com"); !got.empty() {
		t.Errorf("no config: got %+v", got)
	}
	bad := []struct {
		opts Options
		want string
	}{
		{Options{DockerConfig: filepath.Join(t.TempDir(), "nope.json")}, "no such file"},
		{Options{DockerConfig: writeConfig(t, `{"auths":`)}, "docker config"},
		{Options{DockerConfig: writeConfig(t, `{"auths":{"x.io":{"auth":"!!"}}}`)}, ""}, // fails at lookup
		{Options{Password: "orphan"}, "without a username"},
	}
	for _, b := range bad {
		c, err := loadCredentials(b.opts.withDefaults())
		if b.want == "" {
			noErr(t, err)
			if _, err := c.lookup(context.Background(), "x.io"); err == nil || !strings.Contains(err.Error(), "base64") {
				t.Errorf("bad auth field: %v", err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("loadCredentials(%+v) = %v, want error with %q", b.opts, err, b.want)
		}
	}
}
