// Package v5 reads and writes RAFS v5 bootstraps, the original nydus metadata format, to and from
// the shared model in package rafs.
//
// Layout (all integers little-endian, every part 8-byte aligned), as written by nydus-image
// (dragonflyoss/nydus rafs/src/metadata/layout/v5.rs, builder/src/core/v5.rs):
//
//	superblock (8192 B) | inode table (u32 per inode) | prefetch table (u32 inode numbers) |
//	blob table (readahead offset, size, id; '\0'-separated) | extended blob table (64 B each) |
//	inode records in inode-number order
//
// An inode record is a 128-byte header followed by its name, its symlink target, its xattr table
// and, for regular files, its 80-byte chunk records. Inode numbers are handed out the way the
// builder does (builder/src/core/bootstrap.rs build_rafs): the root is 1 and each directory's
// children get consecutive numbers, sorted by name, before the builder descends into its
// subdirectories in name order; a directory's i_child_index is the first of those numbers.
//
// Records are written in inode-number order, as the nydus-image that built the upstream test
// images did (newer builders write them in depth-first order; readers only follow the inode
// table). With that, Encode(Decode(b)) reproduces those images byte for byte but for
// s_inodes_count, which Encode computes as newer builders do: every distinct inode, root included.
// Encode never sets the per-inode HARDLINK flag (only nydus-image's tar and stargz paths do;
// readers recognise hard links by a repeated i_ino).
//
// Every inode carries a Merkle digest (builder/src/core/node.rs, rafsv5_validate_inode in
// layout/v5.rs): a regular file hashes the concatenation of its chunk digests, a symlink its target,
// a directory the concatenation of its children's digests in name order, anything else the empty
// string. Decode keeps the stored digests; Verify recomputes them.
package v5
