// Package blob writes and reads nydus data blobs: the files that hold an image's chunk data and
// that nydusd fetches by blob id (the hex sha256 of the file, which is also the OCI layer digest).
//
// Two layouts exist. Blobs made by nydus-image before 2.2, and RAFS v5 blobs made by any version,
// are raw: compressed chunks back to back and nothing else. Blobs for RAFS v6 made by nydus-image
// 2.2 and newer ("--features blob-toc", optionally "--blob-inline-meta") add self-describing
// sections after the chunk data, each followed (not preceded) by a 512-byte GNU tar header:
//
//	image.blob  | tar hdr   chunk data
//	blob.meta   | tar hdr   chunk-info array (maybe compressed) + 4096-byte blob.meta header
//	blob.digest | tar hdr   one 32-byte chunk digest per chunk, uncompressed
//	image.boot  | tar hdr   optional inlined bootstrap, zstd-compressed when that shrinks it
//	ToC         | tar hdr   128-byte entries naming every section above ("rafs.blob.toc")
//
// A reader therefore starts from the end of the file. The facts come from dragonflyoss/nydus:
// storage/src/meta/{mod,toc,chunk_info_v1,chunk_info_v2}.rs, storage/src/device.rs,
// builder/src/core/{blob,context,node}.rs and builder/src/lib.rs; each rule below cites its file.
package blob
