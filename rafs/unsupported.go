package rafs

import (
	"errors"
	"fmt"
)

// ErrUnsupportedFeature is wrapped by the errors of Image.Unsupported and Blob.Unsupported.
var ErrUnsupportedFeature = errors.New("blob feature dfnydus cannot read")

// blobFeatureIncompatUnknown are the bits of the incompatible range (the low 16) that no nydus
// release defines: nydusd refuses a blob with any of them as invalid (storage/src/device.rs
// BLOB_FEATURE_INCOMPAT_MASK and BLOB_FEATURE_INCOMPAT_VALUE).
const blobFeatureIncompatUnknown uint32 = 0x0000_ffff &^ 0x0000_0fff

// unreadable lists the blob features (storage/src/device.rs BlobFeatures) whose chunks the data
// path cannot read, in the order they are reported, with what makes them unreadable. Such an
// image decodes, but mounting it would fail every read of those blobs with EIO, and unpacking
// or checking it would fail at its first chunk, so inspect, check, unpack and mount refuse it up
// front. README.md lists them.
var unreadable = []struct {
	bit       uint32
	name, why string
}{
	// storage/src/meta/zran.rs: compress/flate cannot resume from a saved inflate state.
	{BlobFeatureZran, "zran", "its chunks are ranges of the original gzip layer, read from saved inflate state"},
	// storage/src/meta/batch.rs.
	{BlobFeatureBatch, "batch", "small chunks are compressed together in batches"},
	{BlobFeatureEncrypted, "encrypted", "its chunks are AES-XTS encrypted with a key kept outside the image"},
	{BlobFeatureTarfs, "tarfs", "its chunks are ranges of an uncompressed tar layer"},
	{BlobFeatureExternal, "external", "its chunks live in an external storage backend"},
	{blobFeatureIncompatUnknown, "unknown features", "no nydus release defines them"},
}

// UnsupportedError names a blob and the feature of it that dfnydus cannot read.
type UnsupportedError struct {
	Blob    string // blob id
	Feature string // "zran", "batch", "encrypted", "tarfs", "external" or "unknown features"
	Bit     uint32 // the BlobFeature* bits
	Why     string // what makes its chunks unreadable
}

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("blob %s uses %s (%#x), which dfnydus cannot read: %s", e.Blob, e.Feature, e.Bit, e.Why)
}

// Is makes errors.Is(err, ErrUnsupportedFeature) hold.
func (e *UnsupportedError) Is(target error) bool { return target == ErrUnsupportedFeature }

// Unsupported returns an *UnsupportedError for the first feature of b the data path cannot read,
// or nil.
func (b *Blob) Unsupported() error {
	for _, f := range unreadable {
		if bits := b.Features & f.bit; bits != 0 {
			return &UnsupportedError{Blob: b.ID, Feature: f.name, Bit: bits, Why: f.why}
		}
	}
	return nil
}

// Unsupported returns an *UnsupportedError for the first blob (in blob table order) with a
// feature the data path cannot read, or nil when every blob can be read. Call it before reading
// chunks: before mounting, unpacking, checking or downloading blobs.
func (img *Image) Unsupported() error {
	for _, b := range img.Blobs {
		if err := b.Unsupported(); err != nil {
			return err
		}
	}
	return nil
}
