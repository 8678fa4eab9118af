package convert_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/dfnydus/dfnydus/registry"
	"github.com/dfnydus/dfnydus/test/internal/registrytest"
	"github.com/dfnydus/dfnydus/test/internal/testenv"
)

// convert is killed (SIGKILL) while pushing its second blob; run again, it finishes, and the first
// blob, already complete in the registry, is not uploaded again.
func TestConvertResumesAfterKill(t *testing.T) {
	e := newEnv(t)
	dir := testenv.TempDir(t)
	src := e.pushLayout(t, testenv.WhiteoutImage(t, dir), "img", "app")
	dst := e.ref("app-nydus", "v1")

	// Let the first blob upload through, then answer every later upload start with 503: convert
	// keeps retrying the second blob until it is killed.
	e.proxy.Inject(registrytest.Fault{Match: `^POST /v2/app-nydus/blobs/uploads/`, Skip: 1, Times: -1, Status: 503})
	before := e.proxy.Counts(registrytest.KindBlobUpload).BytesIn
	cmd := exec.Command(testenv.Binary(t), "convert", "--docker-config", e.dockerCfg, "--log-level", "warn",
		"--work-dir", filepath.Join(e.work, "convert-work"), "--retries", "50", src, dst)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for !sawStatus(e.proxy, "POST", 503) {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatal("convert never reached its second blob")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	firstRun := e.proxy.Counts(registrytest.KindBlobUpload).BytesIn - before
	if e.exists(t, dst) {
		t.Fatal("a killed convert left a manifest behind")
	}

	e.proxy.ClearFaults()
	before = e.proxy.Counts(registrytest.KindBlobUpload).BytesIn
	e.mustRun(t, "convert", src, dst)
	secondRun := e.proxy.Counts(registrytest.KindBlobUpload).BytesIn - before

	m, _ := e.manifest(t, dst)
	var total int64
	for _, l := range m.Layers {
		total += l.Size
	}
	total += m.Config.Size
	first := m.Layers[0].Size
	if firstRun < first {
		t.Fatalf("the first run uploaded %d bytes, less than its first blob (%d)", firstRun, first)
	}
	if secondRun > total-first {
		t.Errorf("the second run uploaded %d bytes; with the first blob (%d) done it should need at most %d", secondRun, first, total-first)
	}
	out := filepath.Join(dir, "out")
	e.mustRun(t, "unpack", "--image", dst, "--output", out)
	t.Logf("killed run uploaded %d bytes; resumed run %d of %d total", firstRun, secondRun, total)
}

func sawStatus(p *registrytest.Proxy, method string, status int) bool {
	for _, r := range p.Requests() {
		if r.Method == method && r.Status == status {
			return true
		}
	}
	return false
}

// pushImage pushes a one-layer image by hand (config, layer bytes as given, manifest) with the
// registry client and returns its reference; the layer bytes may be anything, even a broken gzip.
func (e *env) pushImage(t *testing.T, repo, tag string, layer []byte, platform *ocispec.Platform) ocispec.Descriptor {
	t.Helper()
	c := e.client(t)
	ref, err := registry.ParseRef(e.ref(repo, tag))
	if err != nil {
		t.Fatal(err)
	}
	cfg := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["` + digest.FromBytes(layer).String() + `"]}}`)
	if platform != nil {
		cfg = []byte(`{"architecture":"` + platform.Architecture + `","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	}
	cfgDesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(cfg), Size: int64(len(cfg))}
	layerDesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromBytes(layer), Size: int64(len(layer))}
	for _, b := range []struct {
		d    ocispec.Descriptor
		data []byte
	}{{cfgDesc, cfg}, {layerDesc, layer}} {
		if _, err := c.PushBlob(ctx(t), ref, b.d, bytes.NewReader(b.data), nil); err != nil {
			t.Fatal(err)
		}
	}
	m, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: cfgDesc, Layers: []ocispec.Descriptor{layerDesc}})
	desc, err := c.PutManifest(ctx(t), ref, ocispec.MediaTypeImageManifest, m)
	if err != nil {
		t.Fatal(err)
	}
	desc.Platform = platform
	return desc
}

// gzipTar makes a gzip'd tar with the given files.
func gzipTar(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for name, body := range files {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg})
		tw.Write([]byte(body))
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

// Bad input fails with a message that names the problem, and never leaves a target manifest behind.
func TestConvertBadInput(t *testing.T) {
	e := newEnv(t)
	good := gzipTar(t, map[string]string{"etc/hello": strings.Repeat("hello\n", 10000)})
	goodDesc := e.pushImage(t, "good", "v1", good, nil)
	e.pushImage(t, "truncated", "v1", good[:len(good)/2], nil)

	tests := []struct {
		name   string
		args   func() []string
		setup  func()
		stderr string
		target string
	}{
		{name: "missing tag", args: func() []string { return []string{e.ref("good", "nope"), e.ref("out1", "v1")} },
			stderr: "manifest unknown", target: e.ref("out1", "v1")},
		{name: "wrong credentials", args: func() []string {
			return []string{"--creds", "dfnydus:wrong-password", e.ref("good", "v1"), e.ref("out2", "v1")}
		}, stderr: "authentication", target: e.ref("out2", "v1")},
		{name: "layer content does not match its digest", setup: func() {
			e.proxy.Inject(registrytest.Fault{Match: `^GET /v2/good/blobs/` + goodLayerDigest(t, e, goodDesc), Times: -1, Corrupt: true})
		}, args: func() []string { return []string{e.ref("good", "v1"), e.ref("out3", "v1")} },
			stderr: "digest", target: e.ref("out3", "v1")},
		{name: "truncated gzip layer", args: func() []string { return []string{e.ref("truncated", "v1"), e.ref("out4", "v1")} },
			stderr: "unexpected EOF", target: e.ref("out4", "v1")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.proxy.ClearFaults()
			if tc.setup != nil {
				tc.setup()
			}
			defer e.proxy.ClearFaults()
			r := e.run(t, append([]string{"convert", "--retries", "1"}, tc.args()...)...)
			if r.Err == nil {
				t.Fatal("convert succeeded")
			}
			if !strings.Contains(r.Stderr, tc.stderr) || !strings.Contains(r.Stderr, "dfnydus:") {
				t.Errorf("stderr %q does not say %q", r.Stderr, tc.stderr)
			}
			if strings.Contains(r.Stderr, "panic") {
				t.Errorf("crashed: %s", r.Stderr)
			}
			e.proxy.ClearFaults()
			if e.exists(t, tc.target) {
				t.Errorf("a failed convert pushed a manifest to %s", tc.target)
			}
		})
	}
}

func goodLayerDigest(t *testing.T, e *env, desc ocispec.Descriptor) string {
	t.Helper()
	ref, _ := registry.ParseRef(e.ref("good", "v1"))
	data, _, err := e.client(t).GetManifest(ctx(t), ref.WithDigest(desc.Digest))
	if err != nil {
		t.Fatal(err)
	}
	var m ocispec.Manifest
	json.Unmarshal(data, &m)
	return m.Layers[0].Digest.String()
}

// A multi-platform source converts to a nydus index (artifactType on every entry); --platform
// picks one; --image readers resolve the host's platform.
func TestConvertMultiPlatformIndex(t *testing.T) {
	e := newEnv(t)
	var entries []ocispec.Descriptor
	for _, arch := range []string{"amd64", "arm64"} {
		p := &ocispec.Platform{OS: "linux", Architecture: arch}
		entries = append(entries, e.pushImage(t, "multi", arch, gzipTar(t, map[string]string{"arch": arch}), p))
	}
	idx, _ := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: entries})
	ref, _ := registry.ParseRef(e.ref("multi", "latest"))
	if _, err := e.client(t).PutManifest(ctx(t), ref, ocispec.MediaTypeImageIndex, idx); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, flag string
		want       []string
	}{{"all", "", []string{"amd64", "arm64"}}, {"one", "linux/arm64", []string{"arm64"}}} {
		t.Run(tc.name, func(t *testing.T) {
			dst := e.ref("multi-nydus", tc.name)
			args := []string{"convert", e.ref("multi", "latest"), dst}
			if tc.flag != "" {
				args = append(args, "--platform", tc.flag)
			}
			e.mustRun(t, args...)
			dref, _ := registry.ParseRef(dst)
			data, desc, err := e.client(t).GetManifest(ctx(t), dref)
			if err != nil {
				t.Fatal(err)
			}
			var got ocispec.Index
			json.Unmarshal(data, &got)
			if desc.MediaType != ocispec.MediaTypeImageIndex || len(got.Manifests) != len(tc.want) {
				t.Fatalf("target %s with %d entries, want an index of %v", desc.MediaType, len(got.Manifests), tc.want)
			}
			for i, m := range got.Manifests {
				if m.ArtifactType != "application/vnd.nydus.image.manifest.v1+json" || m.Platform == nil || m.Platform.Architecture != tc.want[i] {
					t.Errorf("entry %d: %+v", i, m)
				}
			}
		})
	}
	out := filepath.Join(testenv.TempDir(t), "out")
	e.mustRun(t, "unpack", "--image", e.ref("multi-nydus", "all"), "--output", out)
	if data := testenv.MustExec(t, "cat", filepath.Join(out, "arch")); data != "amd64" {
		t.Errorf("unpack --image of the index gave the %q image, want the host's (amd64)", data)
	}
}

// Bearer tokens against the real registry's token auth: convert and read back.
func TestConvertWithTokenAuth(t *testing.T) {
	testenv.RequireRoot(t)
	reg := registrytest.Start(t, registrytest.Options{Auth: registrytest.AuthToken})
	e := &env{reg: reg, proxy: registrytest.NewProxy(t, reg.Host()), work: testenv.TempDir(t)}
	e.dockerCfg = filepath.Join(e.work, "empty-docker-config.json")
	if err := os.WriteFile(e.dockerCfg, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	creds := reg.Username + ":" + reg.Password
	e.pushImage(t, "tok", "v1", gzipTar(t, map[string]string{"f": "token auth works"}), nil)
	dst := e.ref("tok-nydus", "v1")
	if r := e.run(t, "convert", "--creds", creds, e.ref("tok", "v1"), dst); r.Err != nil {
		t.Fatalf("convert with bearer auth: %v\n%s", r.Err, r.Stderr)
	}
	out := filepath.Join(e.work, "out")
	if r := e.run(t, "unpack", "--creds", creds, "--image", dst, "--output", out); r.Err != nil {
		t.Fatalf("unpack --image with bearer auth: %v\n%s", r.Err, r.Stderr)
	}
	if r := e.run(t, "inspect", "--image", dst); r.Err == nil || !strings.Contains(r.Stderr, "401") && !strings.Contains(r.Stderr, "auth") {
		t.Errorf("anonymous inspect of a token-protected image: err=%v stderr=%q", r.Err, r.Stderr)
	}
}
