package registrytest_test

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/dfnydus/dfnydus/registry"
	"github.com/dfnydus/dfnydus/test/internal/registrytest"
)

func writeDockerConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.json")
	noErr(t, os.WriteFile(path, []byte(body), 0o600))
	return path
}

// authenticatedRoundTrip pushes an image and a mounted blob and reads them back with c.
func authenticatedRoundTrip(t *testing.T, c *registry.Client, reg *registrytest.Registry) {
	t.Helper()
	ref := mustRef(t, reg.Ref("auth/app", "v1"))
	img := pushImage(t, c, ref, 50, "amd64")
	_, err := c.PutManifest(ctxT(t), ref, img.manifest.MediaType, img.manifestData)
	noErr(t, err)
	data, _, err := c.GetManifest(ctxT(t), ref)
	noErr(t, err)
	sameBytes(t, data, img.manifestData, "manifest")

	other := mustRef(t, reg.Ref("auth/other", ""))
	layer, _ := randomBlob(50, 4096)
	res, err := c.PushBlob(ctxT(t), other, img.layer, bytes.NewReader(layer), []registry.Ref{ref})
	noErr(t, err)
	equal(t, res, registry.PushResult{Mounted: true}, "cross-repository mount")
	sameBytes(t, fetchAll(t, c, other, img.layer), layer, "mounted layer")
}

func TestBasicAuth(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{Auth: registrytest.AuthBasic})

	t.Run("explicit credentials", func(t *testing.T) {
		c := newClient(t, registry.Options{Username: reg.Username, Password: reg.Password})
		authenticatedRoundTrip(t, c, reg)
	})
	t.Run("docker config auths", func(t *testing.T) {
		auth := base64.StdEncoding.EncodeToString([]byte(reg.Username + ":" + reg.Password))
		cfg := writeDockerConfig(t, fmt.Sprintf(`{"auths":{"http://%s":{"auth":%q}}}`, reg.Host(), auth))
		c := newClient(t, registry.Options{DockerConfig: cfg})
		_, _, err := c.GetManifest(ctxT(t), mustRef(t, reg.Ref("auth/app", "v1")))
		noErr(t, err)
	})
	t.Run("wrong password", func(t *testing.T) {
		c := newClient(t, registry.Options{Username: reg.Username, Password: "not-" + reg.Password})
		_, _, err := c.GetManifest(ctxT(t), mustRef(t, reg.Ref("auth/app", "v1")))
		errIs(t, err, registry.ErrUnauthorized)
		want := fmt.Sprintf("registry %s: authentication failed for user %s: 401 Unauthorized", reg.Host(), reg.Username)
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q: want it to contain %q", err, want)
		}
		if strings.Contains(err.Error(), reg.Password) {
			t.Errorf("error %q shows the password", err)
		}
	})
	t.Run("no credentials", func(t *testing.T) {
		c := newClient(t, registry.Options{})
		data, desc := randomBlob(51, 100)
		_, err := c.PushBlob(ctxT(t), mustRef(t, reg.Ref("auth/anon", "")), desc, bytes.NewReader(data), nil)
		errIs(t, err, registry.ErrUnauthorized)
		if !strings.Contains(err.Error(), "authentication required") {
			t.Errorf("error %q: want 'authentication required'", err)
		}
	})
}

func TestBearerTokenAuth(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{Auth: registrytest.AuthToken})

	t.Run("credentials", func(t *testing.T) {
		c := newClient(t, registry.Options{Username: reg.Username, Password: reg.Password})
		before := len(reg.TokenServer().Requests())
		authenticatedRoundTrip(t, c, reg)
		reqs := reg.TokenServer().Requests()[before:]
		ops := c.Stats().Requests
		if len(reqs) == 0 || int64(len(reqs)) > ops/3 {
			t.Errorf("%d token requests for %d registry requests: tokens are not cached per scope", len(reqs), ops)
		}
		sawMountScope := false
		for _, r := range reqs {
			equal(t, r.User, reg.Username, "token request user")
			equal(t, r.Status, 200, "token request status")
			if strings.Join(r.Scopes, " ") == "repository:auth/app:pull repository:auth/other:pull,push" {
				sawMountScope = true
			}
		}
		if !sawMountScope {
			t.Errorf("no token request asked for both repositories of the mount: %+v", reqs)
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		c := newClient(t, registry.Options{Username: reg.Username, Password: "wrong"})
		_, _, err := c.GetManifest(ctxT(t), mustRef(t, reg.Ref("auth/app", "v1")))
		errIs(t, err, registry.ErrUnauthorized)
		want := regexp.MustCompile(`^.*registry ` + regexp.QuoteMeta(reg.Host()) + `: authentication failed for user ` + reg.Username + `: 401 Unauthorized: UNAUTHORIZED`)
		if !want.MatchString(err.Error()) {
			t.Errorf("error %q: want %s", err, want)
		}
	})
	t.Run("anonymous", func(t *testing.T) {
		c := newClient(t, registry.Options{})
		_, _, err := c.GetManifest(ctxT(t), mustRef(t, reg.Ref("auth/app", "v1")))
		errIs(t, err, registry.ErrUnauthorized)
		if !strings.Contains(err.Error(), "authentication required") {
			t.Errorf("error %q: want 'authentication required'", err)
		}
	})
}

// TestConcurrentPushesShareTokens: one client pushing many blobs at once through token auth, as
// convert does; tokens are fetched once per scope, not once per request.
func TestConcurrentPushesShareTokens(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{Auth: registrytest.AuthToken})
	c := newClient(t, registry.Options{Username: reg.Username, Password: reg.Password, UploadChunkSize: 64 << 10})
	repo := mustRef(t, reg.Ref("parallel/push", ""))
	const n = 8
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		data, desc := randomBlob(uint64(100+i), 200_000+i)
		go func() {
			_, err := c.PushBlob(ctxT(t), repo, desc, bytes.NewReader(data), nil)
			errs <- err
		}()
	}
	for i := 0; i < n; i++ {
		noErr(t, <-errs)
	}
	for i := 0; i < n; i++ {
		data, desc := randomBlob(uint64(100+i), 200_000+i)
		sameBytes(t, fetchAll(t, c, repo, desc), data, fmt.Sprintf("blob %d", i))
	}
	if reqs := reg.TokenServer().Requests(); len(reqs) > 4 {
		t.Errorf("%d token requests for %d concurrent pushes, want one per scope: %+v", len(reqs), n, reqs)
	}
}
