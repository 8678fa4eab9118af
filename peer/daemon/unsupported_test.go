package daemon

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/bootstrap"
	"github.com/dfnydus/dfnydus/rafs/inspect"
)

// withBlobFeature rewrites the v6 bootstrap of img so that its first blob table entry carries
// feature too (rafs/src/metadata/layout/v6.rs RafsV6Blob: features at byte 84 of the 256-byte
// entry; the table's offset is the u64 at byte 8 of the extended superblock at 1152).
func withBlobFeature(t *testing.T, img testImage, feature uint32) {
	t.Helper()
	data, err := os.ReadFile(img.bootstrap)
	if err != nil {
		t.Fatal(err)
	}
	off := binary.LittleEndian.Uint64(data[1152+8:]) + 84
	binary.LittleEndian.PutUint32(data[off:], binary.LittleEndian.Uint32(data[off:])|feature)
	if err := os.WriteFile(img.bootstrap, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// A local mount of an image whose blob uses zran is refused with the blob and the feature
// named, before anything is mounted; the bootstrap itself still loads (refusing is the caller's).
func TestMountRefusesZranBlob(t *testing.T) {
	img := buildTestImage(t, 7)
	withBlobFeature(t, img, rafs.BlobFeatureZran)

	_, model, err := bootstrap.Load(img.bootstrap)
	if err != nil {
		t.Fatalf("the patched bootstrap no longer loads: %v", err)
	}
	if model.Blobs[0].Features&rafs.BlobFeatureZran == 0 {
		t.Fatal("the patch did not reach the blob table")
	}
	if _, err := inspect.Entries(model); err != nil {
		t.Errorf("inspect: %v", err)
	}

	d := newTestDaemon(t, testConfig(t), Options{})
	mp := newMountpoint(t)
	_, err = d.Mount(context.Background(), img.request(mp))
	if !errors.Is(err, rafs.ErrUnsupportedFeature) {
		t.Fatalf("mount error %v, want one wrapping %v", err, rafs.ErrUnsupportedFeature)
	}
	want := "blob " + img.blobIDs[0] + " uses zran (0x8), which dfnydus cannot read"
	if !strings.Contains(err.Error(), want) {
		t.Errorf("mount error %q does not say %q", err, want)
	}
	assertNothingLeft(t, d, mp)
}
