package rafs

import (
	"errors"
	"strings"
	"testing"
)

// Every feature the data path cannot read is refused and named, with its bits and why, alongside
// the features it can read; features it can read alone pass.
func TestImageUnsupported(t *testing.T) {
	readable := BlobFeatureAligned | BlobFeatureInlinedFSMeta | BlobFeatureChunkInfoV2 | BlobFeatureSeparate |
		BlobFeatureInlinedChunkDigest | BlobFeatureChunkdictGenerated | BlobFeatureSeparatedPrefetch |
		BlobFeatureHasTarHeader | BlobFeatureHasTOC | BlobFeatureCapTarTOC
	tests := []struct {
		name     string
		features uint32
		want     string // "" for readable
		bits     uint32 // reported with the feature
	}{
		{"none", 0, "", 0},
		{"readable", readable, "", 0},
		{"v5 without extended blob table", BlobFeatureV5NoExtBlobTable, "", 0},
		{"zran", readable | BlobFeatureZran, "zran", 0x8},
		{"batch", readable | BlobFeatureBatch, "batch", 0x80},
		{"encrypted", readable | BlobFeatureEncrypted, "encrypted", 0x100},
		{"tarfs", readable | BlobFeatureTarfs, "tarfs", 0x40},
		{"external", readable | BlobFeatureExternal, "external", 0x800},
		{"an incompatible bit no release defines", readable | 0x2000, "unknown features", 0x2000},
		{"several such bits", 0x9000, "unknown features", 0x9000},
		{"zran and batch: zran first", BlobFeatureZran | BlobFeatureBatch, "zran", 0x8},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := &Image{Blobs: []*Blob{{ID: "ok", Features: readable}, {ID: "the-blob", Features: tt.features}}}
			err := img.Unsupported()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var ue *UnsupportedError
			if !errors.As(err, &ue) || !errors.Is(err, ErrUnsupportedFeature) {
				t.Fatalf("error %v, want an *UnsupportedError wrapping ErrUnsupportedFeature", err)
			}
			if ue.Blob != "the-blob" || ue.Feature != tt.want || ue.Bit != tt.bits || ue.Why == "" {
				t.Errorf("got blob %q feature %q bits %#x why %q, want the-blob %q %#x and a reason", ue.Blob, ue.Feature, ue.Bit, ue.Why, tt.want, tt.bits)
			}
			msg := err.Error()
			if want := "blob the-blob uses " + tt.want + " ("; !strings.HasPrefix(msg, want) || strings.Contains(msg, "\n") {
				t.Errorf("message %q is not one line starting with %q", msg, want)
			}
		})
	}
	if err := (&Image{}).Unsupported(); err != nil {
		t.Errorf("image without blobs: %v", err)
	}
}
