package rafs

import (
	"errors"
	"testing"
)

// Every feature the data path cannot read is refused and named, with its bit, alongside the
// features it can read; features it can read alone pass.
func TestImageUnsupported(t *testing.T) {
	readable := BlobFeatureAligned | BlobFeatureInlinedFSMeta | BlobFeatureChunkInfoV2 | BlobFeatureSeparate |
		BlobFeatureInlinedChunkDigest | BlobFeatureChunkdictGenerated | BlobFeatureHasTarHeader |
		BlobFeatureHasTOC | BlobFeatureCapTarTOC
	tests := []struct {
		name     string
		features uint32
		want     string // "" for readable
	}{
		{"none", 0, ""},
		{"readable", readable, ""},
		{"v5 without extended blob table", BlobFeatureV5NoExtBlobTable, ""},
		{"zran", readable | BlobFeatureZran, "zran"},
		{"batch", readable | BlobFeatureBatch, "batch"},
		{"encrypted", readable | BlobFeatureEncrypted, "encrypted"},
		{"tarfs", readable | BlobFeatureTarfs, "tarfs"},
		{"zran and batch: zran first", BlobFeatureZran | BlobFeatureBatch, "zran"},
	}
	bits := map[string]uint32{"zran": 0x8, "batch": 0x80, "encrypted": 0x100, "tarfs": 0x40}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := &Image{Blobs: []*Blob{{ID: "ok"}, {ID: "the-blob", Features: tt.features}}}
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
			if ue.Blob != "the-blob" || ue.Feature != tt.want || ue.Bit != bits[tt.want] {
				t.Errorf("got blob %q feature %q bit %#x, want the-blob %q %#x", ue.Blob, ue.Feature, ue.Bit, tt.want, bits[tt.want])
			}
			if want := "blob the-blob uses " + tt.want; err.Error()[:len(want)] != want {
				t.Errorf("message %q does not start with %q", err, want)
			}
		})
	}
	if err := (&Image{}).Unsupported(); err != nil {
		t.Errorf("image without blobs: %v", err)
	}
}
