// Package kernelfs serves a RAFS v6 image through the kernel's EROFS driver: the kernel reads the
// image's metadata from a complete local copy of the bootstrap and its file data from each blob's
// uncompressed view, which this package serves as a regular file on a small read-only FUSE file
// system of its own. A read of the view maps to the chunks it covers, fetched through a
// rafs.ChunkReader (the same verified data path as the FUSE mode) and decoded.
//
// Why FUSE files and not sparse cache files filled under fanotify pre-content events: a fanotify
// group that dies with the daemon lets every later read of an unfilled range return the hole's
// zeros as data. A FUSE connection that dies makes the view's reads fail (ENOTCONN, which EROFS
// reports as EIO), so a killed daemon never turns into wrong bytes.
package kernelfs
