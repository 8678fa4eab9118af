package blob

// Blob feature bits as nydus stores them in the blob.meta header and the v6 blob table
// (BlobFeatures in storage/src/device.rs). Note the tar/ToC bits live in the top nibble.
const (
	FeatureAligned             uint32 = 0x0000_0001 // uncompressed chunk offsets are 4 KiB aligned
	FeatureInlinedFSMeta       uint32 = 0x0000_0002 // the bootstrap is inlined (image.boot)
	FeatureChunkInfoV2         uint32 = 0x0000_0004 // blob.meta holds 24-byte v2 chunk infos
	FeatureZran                uint32 = 0x0000_0008 // chunks index an unmodified gzip layer
	FeatureSeparate            uint32 = 0x0000_0010 // chunk data and blob.meta are in different blobs
	FeatureInlinedChunkDigest  uint32 = 0x0000_0020 // blob.digest is present
	FeatureTarfs               uint32 = 0x0000_0040
	FeatureBatch               uint32 = 0x0000_0080
	FeatureEncrypted           uint32 = 0x0000_0100
	FeatureChunkdictGenerated  uint32 = 0x0000_0200
	FeatureSeparatedPrefetch   uint32 = 0x0000_0400
	FeatureExternal            uint32 = 0x0000_0800
	FeatureHasTarHeader        uint32 = 0x1000_0000 // sections are followed by tar headers
	FeatureHasTOC              uint32 = 0x2000_0000 // the blob ends with a ToC
	FeatureCapTarTOC           uint32 = 0x4000_0000 // built by nydus-image 2.2 or newer
	FeatureV5NoExtBlobTableInt uint32 = 0x8000_0000 // internal to nydus: v5 image without extended blob table
)

// Section names (storage/src/meta/toc.rs TOC_ENTRY_*).
const (
	NameBlobData   = "image.blob"
	NameBootstrap  = "image.boot"
	NameMeta       = "blob.meta"
	NameMetaHeader = "blob.meta.header"
	NameDigest     = "blob.digest"
	NameTOC        = "rafs.blob.toc"
)

// Limits (storage/src/lib.rs, rafs/src/metadata/layout/v6.rs, builder/src/core/context.rs).
const (
	// MaxChunks is the most chunks one blob holds: v6 chunk addresses carry a 24-bit index and
	// nydus-image refuses to allocate index 0xff_ffff.
	MaxChunks = 0xff_ffff
	// MaxFileSize bounds the blob file (BLOB_MAX_SIZE_COMPRESSED); v1 chunk infos hold 40-bit
	// compressed offsets.
	MaxFileSize = 1 << 40
	// MaxUncompressedSize bounds the uncompressed view (BLOB_MAX_SIZE_UNCOMPRESSED).
	MaxUncompressedSize = 1 << 44
)
