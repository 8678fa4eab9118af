package v6

import "github.com/dfnydus/dfnydus/rafs"

// maxPlausibleSize bounds the size Truncated believes a superblock about: past it the fields are
// more likely damaged than the file cut, and the decoder's own checks say more.
const maxPlausibleSize = 1 << 32

// Truncated returns a *rafs.TruncatedError when data starts like a RAFS v6 bootstrap (the EROFS
// magic at 1024) but ends before what its superblocks place in it, and nil otherwise, including
// for data that is no v6 bootstrap at all. A v6 bootstrap is whole 4 KiB blocks and nydus-image
// writes the chunk-info table last (builder/src/core/v6.rs), so a whole bootstrap with chunks ends
// at its chunk table rounded up to a block; without chunks, its root inode bounds it from below.
// Only tables placed as nydus-image places them are believed (the blob table in the first block
// after the device table, the chunk table block-aligned after the inodes): an offset that points
// elsewhere is damage for the decoder to name, not a cut.
func Truncated(data []byte) error {
	if !HasMagic(data) {
		return nil
	}
	n := uint64(len(data))
	want, reason := uint64(blockSize), "one 4096-byte block"
	grow := func(end uint64, why string) {
		if end = roundUpBlock(end); end > want {
			want, reason = end, why
		}
	}
	var devEnd, metaBase uint64
	if n >= extSuperOffset {
		var sb superBlock
		sb.unmarshal(data[superOffset:])
		if sb.featureCompat&featureCompatRafsV6 == 0 || sb.blkSzBits != blockBits {
			return nil // not RAFS, or another block size: the decoder says which
		}
		devEnd, metaBase = devTableOffset+uint64(sb.extraDevices)*devSlotSize, uint64(sb.metaBlkAddr)*blockSize
		grow(devEnd, "the end of its device table")
		grow(metaBase+uint64(sb.rootNid)*slotSize+compactInodeSize, "the end of its root inode")
	}
	if n >= devTableOffset {
		var ext extSuperBlock
		ext.unmarshal(data[extSuperOffset:])
		if ext.blobTableSize > 0 {
			if ext.blobTableOffset != roundUpBlock(devEnd) {
				return nil
			}
			grow(ext.blobTableOffset+uint64(ext.blobTableSize), "the end of its blob table")
		}
		if ext.prefetchTableSize > 0 && ext.prefetchTableOffset != 0 {
			grow(ext.prefetchTableOffset+uint64(ext.prefetchTableSize), "the end of its prefetch table")
		}
		if ext.chunkTableSize > 0 {
			if ext.chunkTableOffset < metaBase || ext.chunkTableOffset%blockSize != 0 {
				return nil
			}
			grow(ext.chunkTableOffset+ext.chunkTableSize, "the end of its chunk table")
		}
	}
	if want <= n || want > maxPlausibleSize {
		return nil
	}
	return &rafs.TruncatedError{Version: 6, Size: n, Want: want, Reason: reason}
}

// roundUpBlock rounds n up to a whole block, saturating instead of wrapping.
func roundUpBlock(n uint64) uint64 {
	if n > 1<<63 {
		return 1 << 63
	}
	return (n + blockSize - 1) &^ (blockSize - 1)
}
