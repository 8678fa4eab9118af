// Package fuse serves a RAFS image as a read-only FUSE filesystem (go-fuse v2). Metadata comes
// from the in-memory rafs.Image and never touches chunk data; file data comes from a
// rafs.ChunkReader, which is all this package knows of where chunks live (the peer's fetcher and
// store, or rafs/blob.Dir over a local blob directory in tests).
//
// What the mount shows is the image: modes (setuid, setgid, sticky), owners, sizes, link counts,
// nanosecond mtimes, device numbers, symlink targets and xattrs, with hard links sharing one inode
// number. Inode numbers are the image's (rafs.Inode.Ino), so they are the same on every mount; the
// root is always 1, and the rare image whose numbers collide gets the colliding ones renumbered
// deterministically. Every operation that would change something fails with EROFS.
//
// A read maps [off, off+size) to the chunks covering it (gaps and hole chunks read as zeros),
// fetches the chunks it needs in parallel through the ChunkReader and copies the bytes out. Fetched
// chunks stay in a small byte-bounded LRU (Options.ChunkCacheBytes) so that the kernel's 128 KiB
// reads of a 1 MiB chunk fetch it once; concurrent reads of one chunk share one fetch, and the
// fetch is cancelled when every read waiting for it has been interrupted (or the server is
// unmounted). A ChunkReader error becomes EIO, logged with the file's path and the chunk; an
// interrupted read returns EINTR. Wrong data is never returned: a chunk whose size does not match
// its record is an error too.
//
// Files are opened with FOPEN_KEEP_CACHE and entries and attributes carry long timeouts: images are
// immutable, so the kernel's page cache and dentry cache never need to be invalidated.
package fuse
