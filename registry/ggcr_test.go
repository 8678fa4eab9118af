package registry

import (
	"bytes"
	"io"
	"log"
	"net/http/httptest"
	"strings"
	"testing"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestAgainstGGCRRegistry runs a push/pull cycle against go-containerregistry's in-memory registry,
// an implementation independent of ours and of distribution, which checks each PATCH's
// Content-Range against what it holds and has no cross-repository mount.
func TestAgainstGGCRRegistry(t *testing.T) {
	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	c, _ := testClient(t, Options{UploadChunkSize: 1000})
	repo, err := ParseRef(host + "/ggcr/app:v1")
	noErr(t, err)

	layer := pattern(4321, 13)
	ld := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromBytes(layer), Size: int64(len(layer))}
	src, _ := ParseRef(host + "/ggcr/src")
	res, err := c.PushBlob(testCtx(t), repo, ld, bytes.NewReader(layer), []Ref{src})
	noErr(t, err)
	if res != (PushResult{BytesUploaded: ld.Size}) {
		t.Errorf("push result %+v", res)
	}
	res, err = c.PushBlob(testCtx(t), repo, ld, bytes.NewReader(layer), nil)
	noErr(t, err)
	if !res.Skipped {
		t.Errorf("second push %+v, want skipped", res)
	}

	cfg := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	cd := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(cfg), Size: int64(len(cfg))}
	_, err = c.PushBlob(testCtx(t), repo, cd, bytes.NewReader(cfg), nil)
	noErr(t, err)
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: cd, Layers: []ocispec.Descriptor{ld}}
	m.SchemaVersion = 2
	md := mustJSON(m)
	pushed, err := c.PutManifest(testCtx(t), repo, ocispec.MediaTypeImageManifest, md)
	noErr(t, err)

	got, desc, err := c.GetManifest(testCtx(t), repo)
	noErr(t, err)
	if !bytes.Equal(got, md) || desc.Digest != pushed.Digest || desc.MediaType != ocispec.MediaTypeImageManifest {
		t.Errorf("manifest round trip: %+v", desc)
	}
	resolved, err := c.Resolve(testCtx(t), repo.WithDigest(pushed.Digest))
	noErr(t, err)
	if resolved.Digest != pushed.Digest || resolved.Size != pushed.Size {
		t.Errorf("resolved %+v, want %+v", resolved, pushed)
	}

	rc, err := c.FetchBlob(testCtx(t), repo, ld)
	noErr(t, err)
	b, err := readAllClose(rc)
	noErr(t, err)
	if !bytes.Equal(b, layer) {
		t.Error("layer round trip differs")
	}
	rc, err = c.FetchBlobRange(testCtx(t), repo, ld.Digest, 1000, 2000)
	noErr(t, err)
	b, err = readAllClose(rc)
	noErr(t, err)
	if !bytes.Equal(b, layer[1000:3000]) {
		t.Error("range differs")
	}
}
