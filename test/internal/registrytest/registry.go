// Package registrytest runs the real registry (distribution's docker-registry binary) for tests,
// optionally behind Basic (htpasswd) or Bearer token authentication, and a fault-injecting proxy to
// put in front of it. It is imported only by tests.
//
// This directory also holds the integration tests of package registry against the real registry
// (Go's internal rule keeps packages outside test/ from importing this one).
package registrytest

import (
	"context"
	"fmt"
	"github.com/dfnydus/dfnydus/test/internal/testenv"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Binary is the registry program (Debian/Ubuntu package docker-registry, distribution 2.8).
const Binary = "docker-registry"

// AuthMode selects how the registry authenticates clients.
type AuthMode int

const (
	// AuthNone lets anyone push and pull.
	AuthNone AuthMode = iota
	// AuthBasic is htpasswd Basic auth with Username/Password.
	AuthBasic
	// AuthToken is Bearer token auth: the registry sends clients to an in-test token server, which
	// issues signed JWTs to Username/Password (anonymous requests get tokens granting nothing).
	AuthToken
)

func (m AuthMode) String() string {
	switch m {
	case AuthBasic:
		return "basic"
	case AuthToken:
		return "token"
	}
	return "none"
}

// Options configure Start.
type Options struct {
	Auth AuthMode
	// Username and Password for AuthBasic/AuthToken; defaults "dfnydus" and a fixed test password.
	Username, Password string
	// TokenTTL is the lifetime of issued tokens (AuthToken); default 5 minutes. The registry accepts
	// tokens up to 60 seconds past expiry.
	TokenTTL time.Duration
}

// Registry is a running docker-registry.
type Registry struct {
	Username, Password string // the accepted credentials ("" with AuthNone)

	host   string
	root   string
	tokens *TokenServer
	logs   *testenv.LogBuffer
}

// Host is "127.0.0.1:PORT".
func (r *Registry) Host() string { return r.host }

// URL is "http://127.0.0.1:PORT".
func (r *Registry) URL() string { return "http://" + r.host }

// Ref is "127.0.0.1:PORT/repo:tag" (or "...repo" when tag is "").
func (r *Registry) Ref(repo, tag string) string { return makeRef(r.host, repo, tag) }

// RootDir is the registry's storage directory.
func (r *Registry) RootDir() string { return r.root }

// Logs is what the registry has printed so far.
func (r *Registry) Logs() string { return r.logs.String() }

// TokenServer is the token server of an AuthToken registry, nil otherwise.
func (r *Registry) TokenServer() *TokenServer { return r.tokens }

func makeRef(host, repo, tag string) string {
	if tag == "" {
		return host + "/" + repo
	}
	return host + "/" + repo + ":" + tag
}

// Start runs docker-registry on a free loopback port with storage in t.TempDir(), waits until /v2/
// answers and stops it when the test ends. It skips the test when the binary is not installed.
func Start(t testing.TB, opts Options) *Registry {
	t.Helper()
	bin, err := exec.LookPath(Binary)
	if err != nil {
		t.Skipf("registrytest: %s not installed (apt-get install docker-registry): %v", Binary, err)
	}
	if opts.Auth != AuthNone {
		if opts.Username == "" {
			opts.Username = "dfnydus"
		}
		if opts.Password == "" {
			opts.Password = "t3st-pa55word"
		}
	}
	dir := t.TempDir()
	r := &Registry{root: filepath.Join(dir, "storage"), logs: &testenv.LogBuffer{}}
	if opts.Auth != AuthNone {
		r.Username, r.Password = opts.Username, opts.Password
	}
	authCfg := ""
	switch opts.Auth {
	case AuthBasic:
		htpasswd := filepath.Join(dir, "htpasswd")
		if err := WriteHtpasswd(htpasswd, map[string]string{opts.Username: opts.Password}); err != nil {
			t.Fatalf("registrytest: %v", err)
		}
		authCfg = fmt.Sprintf("auth:\n  htpasswd:\n    realm: registrytest\n    path: %s\n", htpasswd)
	case AuthToken:
		ts := NewTokenServer(t, opts.Username, opts.Password, opts.TokenTTL)
		bundle := filepath.Join(dir, "token-root.pem")
		if err := os.WriteFile(bundle, ts.CertPEM(), 0o600); err != nil {
			t.Fatalf("registrytest: %v", err)
		}
		authCfg = fmt.Sprintf("auth:\n  token:\n    realm: %s\n    service: %s\n    issuer: %s\n    rootcertbundle: %s\n",
			ts.Realm(), ts.Service, ts.Issuer, bundle)
		r.tokens = ts
	}

	// The port is found by listening and closing, so another process may grab it before the
	// registry binds; try a few times.
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		host, err := freeLoopbackAddr()
		if err != nil {
			t.Fatalf("registrytest: %v", err)
		}
		cfg := filepath.Join(dir, "config.yml")
		if err := os.WriteFile(cfg, []byte(testenv.RegistryConfig(r.root, host, authCfg)), 0o600); err != nil {
			t.Fatalf("registrytest: %v", err)
		}
		if lastErr = r.run(t, bin, cfg, host); lastErr == nil {
			return r
		}
	}
	t.Fatalf("registrytest: %v\nlogs:\n%s", lastErr, r.logs.String())
	return nil
}

// run starts the registry and waits for it; on failure the process is gone.
func (r *Registry) run(t testing.TB, bin, cfg, host string) error {
	cmd := exec.Command(bin, "serve", cfg)
	cmd.Stdout, cmd.Stderr = r.logs, r.logs
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		_ = cmd.Process.Kill()
		<-exited
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("%s exited before serving: %v", bin, err)
		case <-ctx.Done():
			stop()
			return fmt.Errorf("%s did not answer on %s within 30s", bin, host)
		case <-time.After(50 * time.Millisecond):
		}
		resp, err := client.Get("http://" + host + "/v2/")
		if err != nil {
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
			break
		}
	}
	r.host = host
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("registry %s logs:\n%s", host, r.logs.String())
		}
	})
	return nil
}

// freeLoopbackAddr returns a 127.0.0.1 address whose port was free a moment ago.
func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr, nil
}
