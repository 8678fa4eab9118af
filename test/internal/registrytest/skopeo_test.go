package registrytest_test

// skopeo (containers/image) is an independent client: what we push it must read, what it pushes we
// must read, and it must accept the token server's tokens just as the registry does.

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/dfnydus/dfnydus/registry"
	"github.com/dfnydus/dfnydus/test/internal/registrytest"
)

func skopeo(t *testing.T, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("skopeo")
	if err != nil {
		t.Skipf("skopeo not installed: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"--insecure-policy"}, args...)...)
	// Keep skopeo away from the machine's credentials.
	cmd.Env = append(os.Environ(), "REGISTRY_AUTH_FILE="+filepath.Join(t.TempDir(), "auth.json"))
	out, err := cmd.Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("skopeo %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return string(out)
}

func TestSkopeoReadsWhatWePush(t *testing.T) {
	for _, mode := range []registrytest.AuthMode{registrytest.AuthNone, registrytest.AuthToken} {
		t.Run(mode.String(), func(t *testing.T) {
			reg := registrytest.Start(t, registrytest.Options{Auth: mode})
			c := newClient(t, registry.Options{Username: reg.Username, Password: reg.Password})
			ref := mustRef(t, reg.Ref("interop/ours", "v1"))
			img := pushImage(t, c, ref, 60, "amd64")
			_, err := c.PutManifest(ctxT(t), ref, img.manifest.MediaType, img.manifestData)
			noErr(t, err)

			args := []string{"inspect", "--tls-verify=false", "docker://" + reg.Ref("interop/ours", "v1")}
			if reg.Username != "" {
				args = append(args[:1], append([]string{"--creds", reg.Username + ":" + reg.Password}, args[1:]...)...)
			}
			var info struct {
				Digest string
				Layers []string
			}
			noErr(t, json.Unmarshal([]byte(skopeo(t, args...)), &info))
			equal(t, info.Digest, img.manifest.Digest.String(), "digest skopeo sees")
			equal(t, strings.Join(info.Layers, ","), img.layer.Digest.String(), "layers skopeo sees")

			// A full copy makes skopeo fetch and verify every blob; --preserve-digests keeps it from
			// recompressing our (uncompressed) layer.
			dir := filepath.Join(t.TempDir(), "layout")
			copyArgs := []string{"copy", "--preserve-digests", "--src-tls-verify=false"}
			if reg.Username != "" {
				copyArgs = append(copyArgs, "--src-creds", reg.Username+":"+reg.Password)
			}
			skopeo(t, append(copyArgs, "docker://"+reg.Ref("interop/ours", "v1"), "oci:"+dir+":v1")...)
			for _, d := range []ocispec.Descriptor{img.manifest, img.config, img.layer} {
				data, err := os.ReadFile(filepath.Join(dir, "blobs", "sha256", d.Digest.Encoded()))
				noErr(t, err)
				equal(t, digest.FromBytes(data), d.Digest, "blob skopeo copied")
			}
		})
	}
}

func TestWeReadWhatSkopeoPushes(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{Auth: registrytest.AuthBasic})
	dir := writeOCILayout(t)
	skopeo(t, "copy", "--dest-tls-verify=false", "--dest-creds", reg.Username+":"+reg.Password,
		"oci:"+dir+":v1", "docker://"+reg.Ref("interop/theirs", "v1"))

	c := newClient(t, registry.Options{Username: reg.Username, Password: reg.Password})
	ref := mustRef(t, reg.Ref("interop/theirs", "v1"))
	data, desc, err := c.GetManifest(ctxT(t), ref)
	noErr(t, err)
	var m ocispec.Manifest
	noErr(t, json.Unmarshal(data, &m))
	for _, b := range append([]ocispec.Descriptor{m.Config}, m.Layers...) {
		rc, err := c.FetchBlob(ctxT(t), ref, b)
		noErr(t, err)
		_, err = io.Copy(io.Discard, rc)
		rc.Close()
		noErr(t, err)
	}
	res, err := c.Resolve(ctxT(t), ref)
	noErr(t, err)
	equal(t, res.Digest, desc.Digest, "resolved digest")
}

// writeOCILayout writes a one-layer image as an OCI image layout directory tagged v1.
func writeOCILayout(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	blobs := filepath.Join(dir, "blobs", "sha256")
	noErr(t, os.MkdirAll(blobs, 0o755))
	put := func(mediaType string, data []byte) ocispec.Descriptor {
		d := digest.FromBytes(data)
		noErr(t, os.WriteFile(filepath.Join(blobs, d.Encoded()), data, 0o644))
		return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(data))}
	}
	layerData, _ := randomBlob(70, 5000)
	layer := put(ocispec.MediaTypeImageLayer, layerData)
	cfg, _ := json.Marshal(ocispec.Image{Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"},
		RootFS: ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{layer.Digest}}})
	config := put(ocispec.MediaTypeImageConfig, cfg)
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: config, Layers: []ocispec.Descriptor{layer}}
	m.SchemaVersion = 2
	md, _ := json.Marshal(m)
	man := put(ocispec.MediaTypeImageManifest, md)
	man.Annotations = map[string]string{ocispec.AnnotationRefName: "v1"}
	idx := ocispec.Index{Manifests: []ocispec.Descriptor{man}}
	idx.SchemaVersion = 2
	id, _ := json.Marshal(idx)
	noErr(t, os.WriteFile(filepath.Join(dir, "index.json"), id, 0o644))
	noErr(t, os.WriteFile(filepath.Join(dir, ocispec.ImageLayoutFile), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644))
	return dir
}
