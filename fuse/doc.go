// Package fuse serves a RAFS image as a read-only FUSE filesystem (go-fuse v2). Metadata comes
// from the in-memory rafs.Image and never touches chunk data; file data comes from a
// rafs.ChunkReader, which is all this package knows of where chunks live (the peer's fetcher and
// store, or rafs/blob.Dir over a local blob directory in tests).
//
// What the mount shows is the image: modes (setuid, setgid, sticky), owners, sizes, link counts,
// nanosecond mtimes, device numbers, symlink targets and xattrs, with hard links sharing one inode
// number. The kernel checks permissions against the image's modes, owners and POSIX ACLs
// (default_permissions with FUSE_POSIX_ACL). Inode numbers are the image's (rafs.Inode.Ino), so
// they are the same on every mount; the root is always 1, and the rare image whose numbers collide
// gets the colliding ones renumbered deterministically. Every operation that would change
// something fails with EROFS.
//
// A read maps [off, off+size) to the chunks covering it (gaps and hole chunks read as zeros),
// fetches the chunks it needs through the ChunkReader, several at once when it spans several, and
// copies the bytes out (a read inside one chunk returns the chunk's bytes without a copy). Fetched
// chunks stay in a small byte-bounded LRU (Options.ChunkCacheBytes) so that the kernel's
// sub-chunk reads fetch a chunk once; a file's chunks leave it when the file's last handle
// closes. Concurrent reads of one chunk share one fetch, which is cancelled when every read
// waiting for it has been interrupted, or at unmount. (The kernel interrupts synchronous requests
// when their caller gets a signal, such as direct I/O; its asynchronous readahead requests carry
// no interrupt, so their fetches end with the fetch itself or at unmount.) A ChunkReader error
// becomes EIO, logged with the file's path and the chunk; an interrupted read returns EINTR.
// Wrong data is never returned: a chunk whose size does not match its record is an error too.
//
// Files are opened with FOPEN_KEEP_CACHE and directories with FOPEN_CACHE_DIR, entries and
// attributes carry long timeouts, and the readahead window is raised to MaxReadAhead: images are
// immutable, so nothing the kernel caches ever needs invalidating.
package fuse
