package convert_test

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/dfnydus/dfnydus/oci"
	"github.com/dfnydus/dfnydus/rafs/bootstrap"
	"github.com/dfnydus/dfnydus/rafs/inspect"
	"github.com/dfnydus/dfnydus/registry"
	"github.com/dfnydus/dfnydus/test/internal/testenv"
)

// A multi-layer image with whiteouts and opaque directories, built with umoci and pushed with
// skopeo to a registry with basic auth, converts; `unpack --image` of the result equals `umoci
// unpack` of the source; the manifest is a nydus manifest in every detail nydus tools read.
func TestConvertMatchesUmociAndIsANydusImage(t *testing.T) {
	e := newEnv(t)
	dir := testenv.TempDir(t)
	layout := testenv.WhiteoutImage(t, dir)
	src := e.pushLayout(t, layout, "img", "app")
	dst := e.ref("app-nydus", "v1")
	e.mustRun(t, "convert", src, dst)

	// Content and metadata: the oracle is umoci's own unpack of the source layout.
	testenv.MustExec(t, "umoci", "unpack", "--image", layout+":img", filepath.Join(dir, "oracle"))
	out := filepath.Join(dir, "out")
	e.mustRun(t, "unpack", "--image", dst, "--output", out)
	testenv.AssertSameTree(t, testenv.Snapshot(t, filepath.Join(dir, "oracle", "rootfs")), testenv.Snapshot(t, out))
	e.mustRun(t, "check", "--image", dst)

	// The manifest: nydus blob layers whose digests are the blob ids, the bootstrap layer last with
	// its annotations, config diff ids matching the layers.
	m, _ := e.manifest(t, dst)
	if len(m.Layers) < 2 {
		t.Fatalf("%d layers", len(m.Layers))
	}
	boot := m.Layers[len(m.Layers)-1]
	if boot.MediaType != "application/vnd.oci.image.layer.v1.tar+gzip" || boot.Annotations[oci.AnnotationNydusBootstrap] != "true" ||
		boot.Annotations[oci.AnnotationFSVersion] != "6" {
		t.Errorf("bootstrap layer %+v", boot)
	}
	c := e.client(t)
	repo, _ := registry.ParseRef(dst)
	rc, err := c.FetchBlob(ctx(t), repo, boot)
	if err != nil {
		t.Fatal(err)
	}
	layer := readAll(t, rc)
	bootBytes, err := oci.ExtractBootstrap(layer)
	if err != nil {
		t.Fatal(err)
	}
	img, err := bootstrap.Decode(bootBytes)
	if err != nil {
		t.Fatal(err)
	}
	if len(img.Blobs) != len(m.Layers)-1 {
		t.Fatalf("bootstrap has %d blobs, manifest %d blob layers", len(img.Blobs), len(m.Layers)-1)
	}
	for i, b := range img.Blobs {
		l := m.Layers[i]
		if l.MediaType != oci.MediaTypeNydusBlob || l.Annotations[oci.AnnotationNydusBlob] != "true" {
			t.Errorf("layer %d: %s %v, want a nydus blob layer", i, l.MediaType, l.Annotations)
		}
		if l.Digest != digest.NewDigestFromEncoded(digest.SHA256, b.ID) {
			t.Errorf("layer %d digest %s != blob id %s", i, l.Digest, b.ID)
		}
	}
	var cfg struct {
		RootFS struct {
			DiffIDs []digest.Digest `json:"diff_ids"`
		} `json:"rootfs"`
	}
	rc, err = c.FetchBlob(ctx(t), repo, m.Config)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(readAll(t, rc), &cfg); err != nil {
		t.Fatal(err)
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) || cfg.RootFS.DiffIDs[0] != m.Layers[0].Digest {
		t.Errorf("config diff ids %v do not follow the layers", cfg.RootFS.DiffIDs)
	}

	// What `inspect --image` reads is exactly the bootstrap inside the layer.
	p := filepath.Join(dir, "image.boot")
	if err := os.WriteFile(p, bootBytes, 0o644); err != nil {
		t.Fatal(err)
	}
	if a, b := e.mustRun(t, "inspect", "--json", "--image", dst), e.mustRun(t, "inspect", "--json", "--bootstrap", p); a != b {
		t.Error("inspect --image differs from inspect of the bootstrap layer's image.boot")
	}
	var entries []inspect.Entry
	if err := json.Unmarshal([]byte(e.mustRun(t, "inspect", "--json", "--image", dst)), &entries); err != nil || len(entries) < 10 {
		t.Errorf("inspect --image: %d entries, %v", len(entries), err)
	}
}

// --with-referrer points the nydus manifest back at its source; --fs-version 5 is recorded.
func TestConvertReferrerAndFSVersion(t *testing.T) {
	e := newEnv(t)
	dir := testenv.TempDir(t)
	src := e.pushLayout(t, testenv.WhiteoutImage(t, dir), "img", "app")
	dst := e.ref("app-nydus", "v5")
	e.mustRun(t, "convert", "--with-referrer", "--fs-version", "5", src, dst)
	_, srcDesc := e.manifest(t, src)
	m, _ := e.manifest(t, dst)
	if m.Subject == nil || m.Subject.Digest != srcDesc.Digest {
		t.Errorf("subject %+v, want the source manifest %s", m.Subject, srcDesc.Digest)
	}
	if v := m.Layers[len(m.Layers)-1].Annotations[oci.AnnotationFSVersion]; v != "5" {
		t.Errorf("fs-version annotation %q", v)
	}
	e.mustRun(t, "check", "--image", dst)
}

func readAll(t *testing.T, rc io.ReadCloser) []byte {
	t.Helper()
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
