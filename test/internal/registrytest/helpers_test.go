package registrytest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/dfnydus/dfnydus/registry"
	"github.com/dfnydus/dfnydus/test/internal/registrytest"
)

// newClient makes a client that ignores the machine's docker config and retries quickly.
func newClient(t *testing.T, opts registry.Options) *registry.Client {
	t.Helper()
	if opts.DockerConfig == "" && opts.Username == "" {
		cfg := filepath.Join(t.TempDir(), "config.json")
		noErr(t, os.WriteFile(cfg, []byte("{}"), 0o600))
		opts.DockerConfig = cfg
	}
	if opts.RetryBaseDelay == 0 {
		opts.RetryBaseDelay = 5 * time.Millisecond
		opts.RetryMaxDelay = 50 * time.Millisecond
	}
	c, err := registry.New(opts)
	noErr(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func mustRef(t *testing.T, s string) registry.Ref {
	t.Helper()
	r, err := registry.ParseRef(s)
	noErr(t, err)
	return r
}

// randomBlob returns size pseudo-random bytes (seeded, so failures reproduce) and their descriptor.
func randomBlob(seed uint64, size int) ([]byte, ocispec.Descriptor) {
	b := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromBytes(b), Size: int64(size)}
}

func fetchAll(t *testing.T, c *registry.Client, repo registry.Ref, desc ocispec.Descriptor) []byte {
	t.Helper()
	rc, err := c.FetchBlob(ctxT(t), repo, desc)
	noErr(t, err)
	defer rc.Close()
	data, err := io.ReadAll(rc)
	noErr(t, err)
	return data
}

func pushBytes(t *testing.T, c *registry.Client, repo registry.Ref, data []byte, desc ocispec.Descriptor) registry.PushResult {
	t.Helper()
	res, err := c.PushBlob(ctxT(t), repo, desc, bytes.NewReader(data), nil)
	noErr(t, err)
	return res
}

// image is a pushed single-layer OCI image.
type image struct {
	config, layer, manifest ocispec.Descriptor
	manifestData            []byte
}

// pushImage pushes a config and layer to repo and returns an OCI manifest for them (not yet pushed).
func pushImage(t *testing.T, c *registry.Client, repo registry.Ref, seed uint64, arch string) image {
	t.Helper()
	layer, ld := randomBlob(seed, 4096)
	ld.MediaType = ocispec.MediaTypeImageLayer
	cfg, err := json.Marshal(ocispec.Image{
		Platform: ocispec.Platform{OS: "linux", Architecture: arch},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{ld.Digest}},
	})
	noErr(t, err)
	cd := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(cfg), Size: int64(len(cfg))}
	pushBytes(t, c, repo, layer, ld)
	pushBytes(t, c, repo, cfg, cd)
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: cd, Layers: []ocispec.Descriptor{ld}}
	m.SchemaVersion = 2
	md, err := json.Marshal(m)
	noErr(t, err)
	return image{config: cd, layer: ld, manifestData: md,
		manifest: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(md), Size: int64(len(md))}}
}

// requests returns the proxy's log entries with this method and kind.
func requests(p *registrytest.Proxy, method string, kind registrytest.Kind) []registrytest.Request {
	var out []registrytest.Request
	for _, r := range p.Requests() {
		if r.Method == method && r.Kind == kind {
			out = append(out, r)
		}
	}
	return out
}

// noErr stops the test on an unexpected error.
func noErr(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
}

// equal reports a mismatch of comparable values.
func equal[T comparable](t testing.TB, got, want T, what string) {
	t.Helper()
	if got != want {
		t.Errorf("%s: got %v, want %v", what, got, want)
	}
}

// sameBytes reports a mismatch of byte slices without dumping them.
func sameBytes(t testing.TB, got, want []byte, what string) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Errorf("%s: got %d bytes (%s), want %d bytes (%s)", what, len(got), digest.FromBytes(got), len(want), digest.FromBytes(want))
	}
}

// errIs stops the test unless err wraps target.
func errIs(t testing.TB, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error %v: want one wrapping %v", err, target)
	}
}
