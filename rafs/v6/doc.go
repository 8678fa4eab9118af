// Package v6 reads and writes RAFS v6 bootstraps: the EROFS-compatible metadata format nydus uses
// by default. A v6 bootstrap is a valid EROFS image whose regular files are chunk-based and whose
// extra devices are the nydus data blobs (their uncompressed view), so the Linux EROFS driver can
// mount it directly; nydus adds an extended superblock, a blob table, a prefetch table and a table of
// chunk-info records that locate each chunk inside its (possibly compressed) blob.
//
// Layout, as nydus-image writes it (builder/src/core/v6.rs v6_dump in dragonflyoss/nydus):
//
//	[0, 1024)        zeros
//	1024             EROFS superblock (128 B)
//	1152             RAFS extended superblock (256 B)
//	1408             EROFS device table: one 128-B slot per blob
//	4 KiB aligned    blob table (256 B per blob), then the prefetch table (u32 nids)
//	meta_blkaddr     inodes, xattrs, dirents, symlink targets and chunk addresses
//	4 KiB aligned    chunk-info table (80-B records), padded to 4 KiB
//
// Decode turns such bytes into the shared model (package rafs); Encode lays a model out exactly the
// way nydus-image does, so a bootstrap built by upstream and re-encoded from its model comes out
// byte for byte the same (see Encode for the few documented exceptions).
package v6
