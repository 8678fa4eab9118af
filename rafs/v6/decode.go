package v6

import (
	"errors"
	"fmt"
	"math/bits"

	"github.com/dfnydus/dfnydus/rafs"
)

// ErrUnsupported is wrapped by errors for well-formed v6 bootstraps that use a feature this package
// does not model (tarfs mode with 512-byte blocks, encrypted blobs, data stored in the bootstrap).
var ErrUnsupported = errors.New("unsupported rafs v6 feature")

// IsV6 reports whether data looks like a RAFS v6 bootstrap: the EROFS magic at offset 1024 and the
// RAFS_V6 compatible-feature bit.
// Only the first 1036 bytes are looked at, so a short head of a file is enough.
func IsV6(data []byte) bool {
	if len(data) < superOffset+12 {
		return false
	}
	return le.Uint32(data[superOffset:]) == erofsMagic && le.Uint32(data[superOffset+8:])&featureCompatRafsV6 != 0
}

// HasMagic reports whether data has the EROFS magic where a v6 bootstrap has it, which is all a
// bootstrap cut inside its superblock may have left of it.
func HasMagic(data []byte) bool {
	return len(data) >= superOffset+4 && le.Uint32(data[superOffset:]) == erofsMagic
}

// Decode parses a RAFS v6 bootstrap into the model. Every offset and count is checked against the
// length of data before use; malformed input yields an error wrapping rafs.ErrCorrupt.
//
// Inodes (compact or extended), FLAT_PLAIN and FLAT_INLINE directories and symlinks, chunk-based
// regular files, devices, fifos, sockets and inline xattrs are decoded. Several dirents naming the
// same nid (hard links) share one *rafs.Inode. A chunk's record is found in the chunk-info table by
// (blob index, chunk-info index, block address) as nydusd does (rafs/src/metadata/direct_v6.rs),
// and its FileOffset is its slot in the file times the chunk size. Inode.Blocks is the size in
// 512-byte units, as nydusd reports it; Inode.Digest and ProjID are zero (v6 stores neither).
// The root node has an empty name; prefetch entries become the first path (in Walk order) of their inode.
func Decode(data []byte) (*rafs.Image, error) {
	d, err := newDecoder(data)
	if err != nil {
		return nil, err
	}
	root, err := d.decodeTree()
	if err != nil {
		return nil, err
	}
	img := &rafs.Image{
		Version:    6,
		Flags:      d.ext.flags,
		ChunkSize:  d.ext.chunkSize,
		Compressor: d.compressor,
		Digester:   d.digester,
		Blobs:      d.blobs,
		Root:       root,
	}
	if img.Prefetch, err = d.prefetchPaths(root); err != nil {
		return nil, err
	}
	return img, nil
}

// chunkKey locates a chunk-info record the way a chunk address names it.
type chunkKey struct {
	blobIndex, ciIndex, blkAddr uint32
}

type decoder struct {
	data       []byte
	sb         superBlock
	ext        extSuperBlock
	metaBase   uint64 // byte offset of nid 0
	compressor rafs.Compressor
	digester   rafs.Digester
	blobs      []*rafs.Blob
	chunks     map[chunkKey]rafs.Chunk
	prefetch   []uint32 // nids
	inodes     map[uint64]*rafs.Inode
	budget     uint64 // bytes of inode metadata still allowed, see charge
}

func newDecoder(data []byte) (*decoder, error) {
	// A cut download is named as such, not by the first table found missing.
	if err := Truncated(data); err != nil {
		return nil, err
	}
	d := &decoder{data: data, inodes: map[uint64]*rafs.Inode{}, budget: uint64(len(data))}
	if err := d.readSuperBlock(); err != nil {
		return nil, err
	}
	if err := d.readExtSuperBlock(); err != nil {
		return nil, err
	}
	if err := d.readBlobTable(); err != nil {
		return nil, err
	}
	if err := d.readDeviceTable(); err != nil {
		return nil, err
	}
	if err := d.readChunkTable(); err != nil {
		return nil, err
	}
	if err := d.readPrefetchTable(); err != nil {
		return nil, err
	}
	return d, nil
}

// readSuperBlock validates the EROFS superblock as RafsV6SuperBlock::validate does.
func (d *decoder) readSuperBlock() error {
	size := uint64(len(d.data))
	if size < blockSize {
		return rafs.Corruptf("v6 bootstrap of %d bytes is shorter than one %d-byte block", size, blockSize)
	}
	if size%blockSize != 0 {
		return rafs.Corruptf("v6 bootstrap size %d is not a multiple of the %d-byte block size", size, blockSize)
	}
	sb := &d.sb
	sb.unmarshal(d.data[superOffset:])
	switch {
	case sb.magic != erofsMagic:
		return rafs.Corruptf("EROFS magic %#x at offset %d, want %#x", sb.magic, superOffset, uint32(erofsMagic))
	case sb.featureCompat&featureCompatRafsV6 == 0:
		return rafs.Corruptf("EROFS superblock lacks the RAFS_V6 compatible feature (compat %#x)", sb.featureCompat)
	case sb.checksum != 0:
		return rafs.Corruptf("superblock checksum %#x, RAFS v6 requires 0", sb.checksum)
	case sb.blkSzBits == 9:
		return fmt.Errorf("%w: 512-byte blocks (tarfs mode)", ErrUnsupported)
	case sb.blkSzBits != blockBits:
		return rafs.Corruptf("block size bits %d, want %d", sb.blkSzBits, blockBits)
	case sb.extSlots != 0:
		return rafs.Corruptf("superblock has %d extended slots, want 0", sb.extSlots)
	case sb.inos == 0:
		return rafs.Corruptf("superblock inode count is 0")
	case sb.u != 0:
		return rafs.Corruptf("superblock union field %#x, want 0", sb.u)
	case sb.xattrBlkAddr != 0:
		return rafs.Corruptf("superblock has a shared xattr area at block %d; RAFS v6 has none", sb.xattrBlkAddr)
	case sb.featureIncompat != featureIncompatChunkedFile|featureIncompatDeviceTable:
		return rafs.Corruptf("incompatible features %#x, want chunked_file|device_table (%#x)", sb.featureIncompat, featureIncompatChunkedFile|featureIncompatDeviceTable)
	case sb.devtSlotOff != devSlotOffUnits:
		return rafs.Corruptf("device table slot offset %d, want %d", sb.devtSlotOff, devSlotOffUnits)
	}
	if sb.extraDevices > maxBlobs || devTableOffset+uint64(sb.extraDevices)*devSlotSize > size {
		return rafs.Corruptf("superblock names %d extra devices, more than fit (max %d)", sb.extraDevices, maxBlobs)
	}
	d.metaBase = uint64(sb.metaBlkAddr) * blockSize
	if d.metaBase >= size {
		return rafs.Corruptf("meta block address %d is beyond the %d-byte bootstrap", sb.metaBlkAddr, size)
	}
	return nil
}

// readExtSuperBlock validates the RAFS extended superblock as RafsV6SuperBlockExt::validate does.
func (d *decoder) readExtSuperBlock() error {
	ext := &d.ext
	ext.unmarshal(d.data[extSuperOffset:])
	size := uint64(len(d.data))
	if ext.flags&rafs.FlagTarfsMode != 0 {
		return fmt.Errorf("%w: tarfs mode", ErrUnsupported)
	}
	compressBits := ext.flags & (rafs.FlagCompressNone | rafs.FlagCompressLZ4Block | rafs.FlagCompressGzip | rafs.FlagCompressZstd)
	if bits.OnesCount64(compressBits) != 1 {
		return rafs.Corruptf("superblock flags %#x name %d compressors, want 1", ext.flags, bits.OnesCount64(compressBits))
	}
	hashBits := ext.flags & (rafs.FlagHashBlake3 | rafs.FlagHashSHA256)
	if bits.OnesCount64(hashBits) != 1 {
		return rafs.Corruptf("superblock flags %#x name %d digesters, want 1", ext.flags, bits.OnesCount64(hashBits))
	}
	d.compressor, _ = rafs.CompressorFromFlags(ext.flags)
	d.digester, _ = rafs.DigesterFromFlags(ext.flags)
	if !rafs.ValidChunkSize(uint64(ext.chunkSize)) {
		return rafs.Corruptf("chunk size %#x is not a power of two in [4 KiB, 16 MiB]", ext.chunkSize)
	}
	devEnd := devTableOffset + uint64(d.sb.extraDevices)*devSlotSize
	if err := checkTable("blob table", ext.blobTableOffset, uint64(ext.blobTableSize), blobEntrySize, devEnd, size, true); err != nil {
		return err
	}
	if ext.blobTableSize/blobEntrySize > maxBlobs {
		return rafs.Corruptf("blob table holds %d entries, more than %d", ext.blobTableSize/blobEntrySize, maxBlobs)
	}
	if ext.chunkTableSize > 0 {
		if err := checkTable("chunk table", ext.chunkTableOffset, ext.chunkTableSize, chunkRecordSize, devEnd, size, true); err != nil {
			return err
		}
	}
	// Legacy images may carry a prefetch size with a zero offset for empty filesystems.
	if ext.prefetchTableSize > 0 && ext.prefetchTableOffset != 0 {
		if err := checkTable("prefetch table", ext.prefetchTableOffset, uint64(ext.prefetchTableSize), prefetchEntrySz, devEnd, size, false); err != nil {
			return err
		}
	}
	return nil
}

// checkTable validates a table's placement: past the device table, inside the bootstrap, a whole
// number of entries, and (when aligned) on a block boundary.
func checkTable(what string, off, size, unit, min, limit uint64, aligned bool) error {
	switch {
	case off < blockSize || off < min:
		return rafs.Corruptf("%s offset %#x overlaps the superblock or device table", what, off)
	case aligned && off%blockSize != 0:
		return rafs.Corruptf("%s offset %#x is not %d-byte aligned", what, off, blockSize)
	case size%unit != 0:
		return rafs.Corruptf("%s size %d is not a multiple of its %d-byte entries", what, size, unit)
	case off > limit || size > limit-off:
		return rafs.Corruptf("%s [%#x, +%#x) runs past the %d-byte bootstrap", what, off, size, limit)
	}
	return nil
}

// readBlobTable decodes every 256-byte blob entry, validating it as RafsV6Blob::validate does.
func (d *decoder) readBlobTable() error {
	n := int(d.ext.blobTableSize / blobEntrySize)
	for i := 0; i < n; i++ {
		off := d.ext.blobTableOffset + uint64(i)*blobEntrySize
		b, err := decodeBlob(d.data[off:off+blobEntrySize], i)
		if err != nil {
			return err
		}
		d.blobs = append(d.blobs, b)
	}
	return nil
}

func decodeBlob(e []byte, index int) (*rafs.Blob, error) {
	b := &rafs.Blob{
		ID:                   cString(e[:blobIDLen]),
		ChunkSize:            le.Uint32(e[beChunkSize:]),
		ChunkCount:           le.Uint32(e[beChunkCount:]),
		Compressor:           rafs.Compressor(le.Uint32(e[beCompressor:])),
		Digester:             rafs.Digester(le.Uint32(e[beDigester:])),
		Features:             le.Uint32(e[beFeatures:]),
		CompressedSize:       le.Uint64(e[beCompressedSize:]),
		UncompressedSize:     le.Uint64(e[beUncompSize:]),
		TOCSize:              le.Uint32(e[beTOCSize:]),
		MetaCompressor:       rafs.Compressor(le.Uint32(e[beCICompressor:])),
		MetaOffset:           le.Uint64(e[beCIOffset:]),
		MetaCompressedSize:   le.Uint64(e[beCICompSize:]),
		MetaUncompressedSize: le.Uint64(e[beCIUncompSize:]),
		MetaSize:             le.Uint64(e[beMetaSize:]),
	}
	copy(b.TOCDigest[:], e[beTOCDigest:])
	copy(b.MetaDigest[:], e[beMetaDigest:])
	switch got := le.Uint32(e[beBlobIndex:]); {
	case b.ID == "":
		return nil, rafs.Corruptf("blob %d has an empty id", index)
	case got != uint32(index):
		return nil, rafs.Corruptf("blob entry %d says it is blob %d", index, got)
	case !rafs.ValidChunkSize(uint64(b.ChunkSize)):
		return nil, rafs.Corruptf("blob %d chunk size %#x is not a power of two in [4 KiB, 16 MiB]", index, b.ChunkSize)
	case b.ChunkCount > maxChunksPerBlob:
		return nil, rafs.Corruptf("blob %d claims %d chunks, more than %d", index, b.ChunkCount, maxChunksPerBlob)
	case b.Compressor > rafs.CompressZstd || b.MetaCompressor > rafs.CompressZstd:
		return nil, rafs.Corruptf("blob %d has unknown compressor %d / chunk-info compressor %d", index, b.Compressor, b.MetaCompressor)
	case b.Digester > rafs.DigestSHA256:
		return nil, rafs.Corruptf("blob %d has unknown digester %d", index, b.Digester)
	case b.UncompressedSize > maxBlobUncompressed || b.CompressedSize > maxBlobCompressed:
		return nil, rafs.Corruptf("blob %d sizes %d/%d exceed the format limits", index, b.CompressedSize, b.UncompressedSize)
	case b.MetaOffset+b.MetaCompressedSize < b.MetaOffset:
		return nil, rafs.Corruptf("blob %d chunk-info range overflows", index)
	case b.MetaCompressedSize > b.MetaUncompressedSize:
		return nil, rafs.Corruptf("blob %d chunk-info compressed size %d exceeds its uncompressed size %d", index, b.MetaCompressedSize, b.MetaUncompressedSize)
	}
	if algo := le.Uint32(e[beCipherAlgo:]); algo != 0 {
		return nil, fmt.Errorf("%w: blob %d is encrypted (cipher %d)", ErrUnsupported, index, algo)
	}
	return b, nil
}

// readDeviceTable checks that the EROFS device table names exactly the blobs of the blob table, in
// order: chunk addresses use device id = blob index + 1 for both the kernel and nydusd.
func (d *decoder) readDeviceTable() error {
	if int(d.sb.extraDevices) != len(d.blobs) {
		return rafs.Corruptf("device table has %d slots but the blob table %d entries", d.sb.extraDevices, len(d.blobs))
	}
	for i, b := range d.blobs {
		var slot deviceSlot
		off := devTableOffset + i*devSlotSize
		slot.unmarshal(d.data[off : off+devSlotSize])
		if slot.tag != b.ID {
			return rafs.Corruptf("device slot %d names blob %q but blob table entry %d is %q", i, slot.tag, i, b.ID)
		}
	}
	return nil
}

// readChunkTable indexes the chunk-info records by the key chunk addresses use.
func (d *decoder) readChunkTable() error {
	n := d.ext.chunkTableSize / chunkRecordSize
	d.chunks = make(map[chunkKey]rafs.Chunk, n)
	for i := uint64(0); i < n; i++ {
		off := d.ext.chunkTableOffset + i*chunkRecordSize
		c := rafs.UnmarshalChunkRecord(d.data[off : off+chunkRecordSize])
		if c.UncompressedSize > rafs.MaxChunkSize {
			return rafs.Corruptf("chunk record %d uncompressed size %d exceeds %d", i, c.UncompressedSize, rafs.MaxChunkSize)
		}
		if c.UncompressedOffset/blockSize > nullAddr {
			return rafs.Corruptf("chunk record %d uncompressed offset %#x is beyond a 32-bit block address", i, c.UncompressedOffset)
		}
		d.chunks[chunkKey{c.BlobIndex, c.Index, uint32(c.UncompressedOffset / blockSize)}] = c
	}
	return nil
}

func (d *decoder) readPrefetchTable() error {
	if d.ext.prefetchTableSize == 0 || d.ext.prefetchTableOffset == 0 {
		return nil
	}
	n := uint64(d.ext.prefetchTableSize / prefetchEntrySz)
	d.prefetch = make([]uint32, n)
	for i := range d.prefetch {
		d.prefetch[i] = le.Uint32(d.data[d.ext.prefetchTableOffset+uint64(i)*prefetchEntrySz:])
	}
	return nil
}

// prefetchPaths maps the prefetch table's nids to absolute paths (the first path, in walk order,
// of an inode with several links).
func (d *decoder) prefetchPaths(root *rafs.Node) ([]string, error) {
	if len(d.prefetch) == 0 {
		return nil, nil
	}
	want := map[*rafs.Inode]string{}
	for _, nid := range d.prefetch {
		if in, ok := d.inodes[uint64(nid)]; ok {
			want[in] = ""
		}
	}
	stack := []*rafs.Node{root}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if p, ok := want[n.Inode]; ok && p == "" {
			want[n.Inode] = n.Path()
		}
		for i := len(n.Children) - 1; i >= 0; i-- {
			stack = append(stack, n.Children[i])
		}
	}
	out := make([]string, 0, len(d.prefetch))
	for i, nid := range d.prefetch {
		in, ok := d.inodes[uint64(nid)]
		if !ok {
			return nil, rafs.Corruptf("prefetch entry %d names nid %d, which no directory entry reaches", i, nid)
		}
		out = append(out, want[in])
	}
	return out, nil
}
