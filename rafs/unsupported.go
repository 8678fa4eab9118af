package rafs

import (
	"errors"
	"fmt"
)

// ErrUnsupportedFeature is wrapped by the errors of Image.Unsupported and Blob.Unsupported.
var ErrUnsupportedFeature = errors.New("blob feature dfnydus cannot read")

// unreadable lists the blob features (storage/src/device.rs BlobFeatures) whose chunks the data
// path cannot read, in the order they are reported. Such an image decodes and can be inspected,
// but a mount of it would fail every read of those blobs with EIO, so mounts refuse it up front.
var unreadable = []struct {
	bit  uint32
	name string
}{
	// Chunks are ranges of the original gzip layer, decoded from saved inflate contexts
	// (storage/src/meta/zran.rs), which compress/flate cannot resume from.
	{BlobFeatureZran, "zran"},
	// Several small chunks are compressed as one batch (storage/src/meta/batch.rs).
	{BlobFeatureBatch, "batch"},
	// Chunks are AES-XTS encrypted with a key held outside the image.
	{BlobFeatureEncrypted, "encrypted"},
	// Chunks are ranges of an uncompressed tar layer, addressed by the tar's own layout.
	{BlobFeatureTarfs, "tarfs"},
}

// UnsupportedError names a blob and the feature of it that dfnydus cannot read.
type UnsupportedError struct {
	Blob    string // blob id
	Feature string // "zran", "batch", "encrypted" or "tarfs"
	Bit     uint32 // the BlobFeature* bit
}

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("blob %s uses %s (%#x), which dfnydus cannot read", e.Blob, e.Feature, e.Bit)
}

// Is makes errors.Is(err, ErrUnsupportedFeature) hold.
func (e *UnsupportedError) Is(target error) bool { return target == ErrUnsupportedFeature }

// Unsupported returns an *UnsupportedError for the first feature of b the data path cannot read,
// or nil.
func (b *Blob) Unsupported() error {
	for _, f := range unreadable {
		if b.Features&f.bit != 0 {
			return &UnsupportedError{Blob: b.ID, Feature: f.name, Bit: f.bit}
		}
	}
	return nil
}

// Unsupported returns an *UnsupportedError for the first blob (in blob table order) with a
// feature the data path cannot read, or nil when every blob can be read. Call it before mounting.
func (img *Image) Unsupported() error {
	for _, b := range img.Blobs {
		if err := b.Unsupported(); err != nil {
			return err
		}
	}
	return nil
}
