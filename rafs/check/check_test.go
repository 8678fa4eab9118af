package check

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/bootstrap"
)

var fixtureDir = filepath.Join("..", "..", "testdata", "fixtures", "nydus", "v6-zstd-blake3")

// The upstream image passes; the same image whose blob claims zran fails with the feature named
// as the reason its chunks cannot be verified, not with a decode error from reading them.
func TestImageNamesUnreadableFeature(t *testing.T) {
	_, img, err := bootstrap.Load(filepath.Join(fixtureDir, "rafs-v6-2.2.boot"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Image(context.Background(), img, fixtureDir); err != nil {
		t.Fatalf("upstream image: %v", err)
	}
	img.Blobs[0].Features |= rafs.BlobFeatureZran
	_, err = Image(context.Background(), img, fixtureDir)
	if !errors.Is(err, rafs.ErrUnsupportedFeature) || !strings.Contains(err.Error(), "cannot verify its chunks") ||
		!strings.Contains(err.Error(), "uses zran (0x8)") {
		t.Fatalf("error %v, want the zran feature named as why chunks cannot be verified", err)
	}
}
