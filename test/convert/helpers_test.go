// Package convert_test checks `dfnydus convert` and the --image readers against the real registry
// (apt docker-registry on loopback), images made with umoci and pushed with skopeo.
package convert_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/dfnydus/dfnydus/registry"
	"github.com/dfnydus/dfnydus/test/internal/registrytest"
	"github.com/dfnydus/dfnydus/test/internal/testenv"
)

// env is one registry (with basic auth), a counting proxy in front of it, and a docker config with
// its credentials, as a user would have after `docker login`.
type env struct {
	reg       *registrytest.Registry
	proxy     *registrytest.Proxy
	dockerCfg string
	work      string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	testenv.RequireRoot(t)
	reg := registrytest.Start(t, registrytest.Options{Auth: registrytest.AuthBasic})
	e := &env{reg: reg, proxy: registrytest.NewProxy(t, reg.Host()), work: testenv.TempDir(t)}
	e.dockerCfg = filepath.Join(e.work, "docker-config.json")
	auth := base64.StdEncoding.EncodeToString([]byte(reg.Username + ":" + reg.Password))
	cfg := `{"auths":{"` + e.proxy.Host() + `":{"auth":"` + auth + `"},"` + reg.Host() + `":{"auth":"` + auth + `"}}}`
	if err := os.WriteFile(e.dockerCfg, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

// ref names repo:tag behind the proxy, so every request is counted.
func (e *env) ref(repo, tag string) string { return e.proxy.Ref(repo, tag) }

// pushLayout copies an OCI layout's tag to repo:tag with skopeo.
func (e *env) pushLayout(t *testing.T, layout, tag, repo string) string {
	t.Helper()
	skopeo := testenv.RequireTool(t, "skopeo")
	ref := e.ref(repo, tag)
	testenv.MustExec(t, skopeo, "copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", e.reg.Username+":"+e.reg.Password,
		"oci:"+layout+":"+tag, "docker://"+ref)
	return ref
}

// run runs dfnydus with the env's credentials and work dir.
func (e *env) run(t *testing.T, args ...string) testenv.Result {
	t.Helper()
	full := append([]string{args[0], "--docker-config", e.dockerCfg, "--log-level", "warn"}, args[1:]...)
	if args[0] == "convert" {
		full = append(full, "--work-dir", filepath.Join(e.work, "convert-work"))
	}
	return testenv.Run(t, full...)
}

func (e *env) mustRun(t *testing.T, args ...string) string {
	t.Helper()
	r := e.run(t, args...)
	if r.Err != nil {
		t.Fatalf("dfnydus %s: %v\nstderr:\n%s", strings.Join(args, " "), r.Err, r.Stderr)
	}
	return r.Stdout
}

// client is a registry client with the env's credentials.
func (e *env) client(t *testing.T) *registry.Client {
	t.Helper()
	c, err := registry.New(registry.Options{Username: e.reg.Username, Password: e.reg.Password, Retries: 1})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return c
}

// manifest fetches and decodes repo:tag.
func (e *env) manifest(t *testing.T, ref string) (ocispec.Manifest, ocispec.Descriptor) {
	t.Helper()
	r, err := registry.ParseRef(ref)
	if err != nil {
		t.Fatal(err)
	}
	data, desc, err := e.client(t).GetManifest(ctx(t), r)
	if err != nil {
		t.Fatalf("get manifest %s: %v", ref, err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return m, desc
}

// exists reports whether ref resolves.
func (e *env) exists(t *testing.T, ref string) bool {
	t.Helper()
	r, err := registry.ParseRef(ref)
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.client(t).Resolve(ctx(t), r)
	return err == nil
}
