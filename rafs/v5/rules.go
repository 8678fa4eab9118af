package v5

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/dfnydus/dfnydus/rafs"
)

// The rules in this file are shared by Decode and Encode, so that whatever Decode accepts Encode
// can write back, and whatever Encode writes Decode accepts.

// xattrPrefixes are the only xattr names nydus stores (RAFS_XATTR_PREFIXES in
// rafs/src/metadata/layout/mod.rs).
var xattrPrefixes = []string{"user.", "security.", "trusted.", "system.posix_acl_access", "system.posix_acl_default"}

// checkName checks a directory entry name (not the root's).
func checkName(name string) error {
	switch {
	case name == "":
		return errors.New("empty name")
	case len(name) > maxNameLen:
		return fmt.Errorf("name of %d bytes exceeds %d", len(name), maxNameLen)
	case name == "." || name == "..":
		return fmt.Errorf("name %q is reserved", name)
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("name %q contains '/' or NUL", name)
	}
	return nil
}

// checkSymlink checks a symlink target: 1 to 65535 bytes (i_symlink_size is a u16), no NUL.
func checkSymlink(target string) error {
	switch {
	case target == "":
		return errors.New("empty symlink target")
	case len(target) > maxSymlinkLen:
		return fmt.Errorf("symlink target of %d bytes exceeds %d", len(target), maxSymlinkLen)
	case strings.IndexByte(target, 0) >= 0:
		return fmt.Errorf("symlink target %q contains NUL", target)
	}
	return nil
}

// checkMode checks that mode is one of the seven file types with nothing above the permission bits.
func checkMode(mode uint32) error {
	if mode&^modeMask != 0 {
		return fmt.Errorf("mode %#o has bits beyond S_IFMT", mode)
	}
	switch mode & rafs.SIFMT {
	case rafs.SIFREG, rafs.SIFDIR, rafs.SIFLNK, rafs.SIFCHR, rafs.SIFBLK, rafs.SIFIFO, rafs.SIFSOCK:
		return nil
	}
	return fmt.Errorf("mode %#o has no valid file type", mode)
}

// checkXattr checks one extended attribute against the builder's limits (RafsXAttrs::add).
func checkXattr(name string, value []byte) error {
	if len(name) > maxXattrNameLen {
		return fmt.Errorf("xattr name of %d bytes exceeds %d", len(name), maxXattrNameLen)
	}
	if strings.IndexByte(name, 0) >= 0 {
		return fmt.Errorf("xattr name %q contains NUL", name)
	}
	if len(value) > maxXattrValueLen {
		return fmt.Errorf("xattr %s value of %d bytes exceeds %d", name, len(value), maxXattrValueLen)
	}
	for _, p := range xattrPrefixes {
		if strings.HasPrefix(name, p) {
			return nil
		}
	}
	return fmt.Errorf("xattr name %q has none of the prefixes %s", name, strings.Join(xattrPrefixes, ", "))
}

// checkXattrsSorted checks that xattrs are sorted by name with no name twice.
func checkXattrsSorted(xs []rafs.Xattr) error {
	for i := 1; i < len(xs); i++ {
		if xs[i-1].Name >= xs[i].Name {
			if xs[i-1].Name == xs[i].Name {
				return fmt.Errorf("xattr %s appears twice", xs[i].Name)
			}
			return fmt.Errorf("xattrs %s and %s are not sorted by name", xs[i-1].Name, xs[i].Name)
		}
	}
	return nil
}

// xattrTableSize is the content size of an inode's xattr table: per pair a u32 size, the name, a
// NUL and the value (RafsXAttrs::size).
func xattrTableSize(xs []rafs.Xattr) uint64 {
	var n uint64
	for _, x := range xs {
		n += 4 + uint64(len(x.Name)) + 1 + uint64(len(x.Value))
	}
	return n
}

// checkChunks checks a regular file's chunk list: each chunk names a blob of the image, holds 1 to
// chunkSize bytes, claims no more compressed bytes than its compressor can produce for that (so a
// hostile record cannot make one read allocate gigabytes) inside the blob, lies inside the file, and
// the chunks are in file-offset order without overlap.
// v5 has one compressor for the whole image (the superblock's), passed as comp.
func checkChunks(chunks []rafs.Chunk, fileSize uint64, chunkSize uint32, comp rafs.Compressor, blobs []*rafs.Blob) error {
	var end uint64
	for i := range chunks {
		c := &chunks[i]
		switch {
		case int64(c.BlobIndex) >= int64(len(blobs)):
			return fmt.Errorf("chunk %d names blob %d of %d", i, c.BlobIndex, len(blobs))
		case c.Flags&^knownChunkFlags != 0:
			return fmt.Errorf("chunk %d has unknown flags %#x", i, c.Flags)
		case c.UncompressedSize == 0 || c.UncompressedSize > chunkSize:
			return fmt.Errorf("chunk %d holds %d bytes, want 1..%d", i, c.UncompressedSize, chunkSize)
		case c.CompressedSize == 0:
			return fmt.Errorf("chunk %d has compressed size 0", i)
		case c.UncompressedOffset > ^uint64(0)-uint64(c.UncompressedSize):
			return fmt.Errorf("chunk %d blob offsets overflow", i)
		case i > 0 && c.FileOffset < end:
			return fmt.Errorf("chunk %d at file offset %d overlaps or precedes the chunk before it (ends at %d)", i, c.FileOffset, end)
		case c.FileOffset > fileSize || uint64(c.UncompressedSize) > fileSize-c.FileOffset:
			return fmt.Errorf("chunk %d covers [%d, %d), beyond the file size %d", i, c.FileOffset, c.FileOffset+uint64(c.UncompressedSize), fileSize)
		}
		b := *blobs[c.BlobIndex]
		b.Compressor = comp
		if err := rafs.CheckChunkBounds(c, &b, chunkSize); err != nil {
			return fmt.Errorf("chunk %d (blob %d, chunk index %d): %w", i, c.BlobIndex, c.Index, err)
		}
		end = c.FileOffset + uint64(c.UncompressedSize)
	}
	return nil
}

// denseChunks reports whether chunks are exactly the layout nydusd assumes for a file without
// HAS_HOLE: chunk i starts at i*chunkSize and every chunk but the last is full, covering the file.
// Any other layout needs HAS_HOLE so that readers scan the chunk list (calculate_bio_chunk_index in
// rafs/src/metadata/layout/v5.rs).
func denseChunks(chunks []rafs.Chunk, fileSize uint64, chunkSize uint32) bool {
	cs := uint64(chunkSize)
	want := fileSize / cs
	if fileSize%cs != 0 {
		want++
	}
	if uint64(len(chunks)) != want {
		return false
	}
	for i := range chunks {
		off := uint64(i) * cs
		want := min(cs, fileSize-off)
		if chunks[i].FileOffset != off || uint64(chunks[i].UncompressedSize) != want {
			return false
		}
	}
	return true
}

// sameFile reports whether two records of one hard-linked file describe the same file: type,
// size, chunks, digest and xattrs. nydus-image's tar path fills a hard link's record from its own
// tar header except for those (builder/src/tarball.rs), so permissions, owner, times and link
// count may legitimately differ; the model keeps the first link's.
func sameFile(a, b *rafs.Inode) bool {
	if a.Mode&rafs.SIFMT != b.Mode&rafs.SIFMT || a.Size != b.Size || a.Digest != b.Digest ||
		a.HasHole != b.HasHole || len(a.Xattrs) != len(b.Xattrs) || len(a.Chunks) != len(b.Chunks) {
		return false
	}
	for i := range a.Xattrs {
		if a.Xattrs[i].Name != b.Xattrs[i].Name || !bytes.Equal(a.Xattrs[i].Value, b.Xattrs[i].Value) {
			return false
		}
	}
	for i := range a.Chunks {
		if a.Chunks[i] != b.Chunks[i] {
			return false
		}
	}
	return true
}
