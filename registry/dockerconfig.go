package registry

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap"
)

// Credential is what we authenticate to one registry with.
type Credential struct {
	Username, Password string
	// IdentityToken is an OAuth2 refresh token (docker login with an identity provider); when set it
	// is exchanged at the token endpoint instead of Username/Password.
	IdentityToken string
}

func (c Credential) empty() bool {
	return c.Username == "" && c.Password == "" && c.IdentityToken == ""
}

// dockerHubServer is the key docker uses for Docker Hub in config.json and credential helpers.
const dockerHubServer = "https://index.docker.io/v1/"

// maxDockerConfig bounds config.json; real ones are a few KiB.
const maxDockerConfig = 4 << 20

// dockerConfig is the part of ~/.docker/config.json that carries credentials.
type dockerConfig struct {
	Auths       map[string]dockerAuth `json:"auths"`
	CredHelpers map[string]string     `json:"credHelpers"`
	CredsStore  string                `json:"credsStore"`
}

type dockerAuth struct {
	Auth          string `json:"auth"` // base64("user:password")
	Username      string `json:"username"`
	Password      string `json:"password"`
	IdentityToken string `json:"identitytoken"`
}

// credentials finds the Credential for a registry host.
type credentials struct {
	explicit *Credential
	// explicitHost, when set, is the only registry host explicit goes to.
	explicitHost string
	path         string
	cfg          *dockerConfig // nil: no config file
	log          *zap.Logger
}

// defaultDockerConfigPath is $DOCKER_CONFIG/config.json, else ~/.docker/config.json.
func defaultDockerConfigPath() string {
	if d := os.Getenv("DOCKER_CONFIG"); d != "" {
		return filepath.Join(d, "config.json")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	return filepath.Join(home, ".docker", "config.json")
}

// loadCredentials reads the docker config named by opts (a missing default file is fine; a missing
// explicit one is an error).
func loadCredentials(opts Options) (*credentials, error) {
	c := &credentials{log: opts.Logger}
	if opts.Username != "" {
		c.explicit = &Credential{Username: opts.Username, Password: opts.Password}
		c.explicitHost = opts.CredentialHost
		return c, nil
	}
	if opts.Password != "" {
		return nil, fmt.Errorf("registry options: a password was given without a username")
	}
	path, explicit := opts.DockerConfig, opts.DockerConfig != ""
	if !explicit {
		path = defaultDockerConfigPath()
		if path == "" {
			return c, nil
		}
	} else if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		path = filepath.Join(path, "config.json")
	}
	c.path = path
	f, err := os.Open(path)
	if err != nil {
		if !explicit && errors.Is(err, os.ErrNotExist) {
			return c, nil
		}
		return nil, fmt.Errorf("docker config: %w", err)
	}
	defer f.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(io.LimitReader(f, maxDockerConfig+1)); err != nil {
		return nil, fmt.Errorf("docker config %s: %w", path, err)
	}
	if buf.Len() > maxDockerConfig {
		return nil, fmt.Errorf("docker config %s: larger than %d bytes", path, maxDockerConfig)
	}
	var cfg dockerConfig
	if err := json.Unmarshal(buf.Bytes(), &cfg); err != nil {
		return nil, fmt.Errorf("docker config %s: %w", path, err)
	}
	c.cfg = &cfg
	return c, nil
}

// lookup returns the credential for host (empty when there is none).
func (c *credentials) lookup(ctx context.Context, host string) (Credential, error) {
	if c.explicit != nil {
		if c.explicitHost != "" && !strings.EqualFold(c.explicitHost, host) {
			// Credentials given for one registry never go to another one a URL happens to name.
			return Credential{}, nil
		}
		return *c.explicit, nil
	}
	if c.cfg == nil {
		return Credential{}, nil
	}
	keys := serverKeys(host)
	for _, k := range keys {
		if helper, ok := c.cfg.CredHelpers[k]; ok && helper != "" {
			return c.fromHelper(ctx, helper, helperServer(host))
		}
	}
	// Exact spellings first, then any key naming the host (in a stable order).
	var candidates []string
	for _, k := range keys {
		if _, ok := c.cfg.Auths[k]; ok {
			candidates = append(candidates, k)
		}
	}
	var others []string
	for k := range c.cfg.Auths {
		if matchesServer(k, host) {
			others = append(others, k)
		}
	}
	sort.Strings(others)
	candidates = append(candidates, others...)
	for _, key := range candidates {
		a := c.cfg.Auths[key]
		cred, err := a.credential()
		if err != nil {
			return Credential{}, fmt.Errorf("docker config %s: auths[%q]: %w", c.path, key, err)
		}
		if !cred.empty() {
			return cred, nil
		}
	}
	if c.cfg.CredsStore != "" {
		return c.fromHelper(ctx, c.cfg.CredsStore, helperServer(host))
	}
	return Credential{}, nil
}

func (a dockerAuth) credential() (Credential, error) {
	cred := Credential{Username: a.Username, Password: a.Password, IdentityToken: a.IdentityToken}
	if a.Auth != "" {
		raw, err := base64.StdEncoding.DecodeString(a.Auth)
		if err != nil {
			return Credential{}, fmt.Errorf("auth is not base64: %w", err)
		}
		user, pass, ok := strings.Cut(string(raw), ":")
		if !ok {
			return Credential{}, fmt.Errorf("auth is not base64(user:password)")
		}
		cred.Username, cred.Password = user, pass
	}
	return cred, nil
}

// serverKeys are the config keys that may name host (Docker Hub has several spellings).
func serverKeys(host string) []string {
	if host == DockerHub {
		return []string{dockerHubServer, "index.docker.io", "docker.io", DockerHub, "https://" + DockerHub}
	}
	return []string{host, "https://" + host, "http://" + host}
}

// helperServer is the server URL a credential helper is asked about.
func helperServer(host string) string {
	if host == DockerHub {
		return dockerHubServer
	}
	return host
}

// matchesServer reports whether an auths key ("https://host/v1/", "host", ...) names host.
func matchesServer(key, host string) bool {
	k := strings.TrimPrefix(strings.TrimPrefix(key, "https://"), "http://")
	if i := strings.IndexByte(k, '/'); i >= 0 {
		k = k[:i]
	}
	k = strings.ToLower(k)
	if host == DockerHub {
		return k == "index.docker.io" || k == "docker.io" || k == DockerHub
	}
	return k == host
}

// helperTimeout bounds one credential helper run.
const helperTimeout = 30 * time.Second

// fromHelper runs docker-credential-<helper> get. A helper that is not installed, or that has no
// credentials for server, means anonymous access.
func (c *credentials) fromHelper(ctx context.Context, helper, server string) (Credential, error) {
	prog := "docker-credential-" + helper
	path, err := exec.LookPath(prog)
	if err != nil {
		c.log.Warn("credential helper not installed; continuing without credentials",
			zap.String("helper", prog), zap.String("server", server))
		return Credential{}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, helperTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, "get")
	cmd.Stdin = strings.NewReader(server)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stdout.String() + " " + stderr.String())
		if strings.Contains(strings.ToLower(msg), "credentials not found") {
			return Credential{}, nil
		}
		return Credential{}, fmt.Errorf("credential helper %s for %s: %w: %s", prog, server, err, printable([]byte(msg), 200))
	}
	var out struct {
		Username string `json:"Username"`
		Secret   string `json:"Secret"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		return Credential{}, fmt.Errorf("credential helper %s for %s: bad output: %w", prog, server, err)
	}
	if out.Username == "<token>" {
		return Credential{IdentityToken: out.Secret}, nil
	}
	return Credential{Username: out.Username, Password: out.Secret}, nil
}
