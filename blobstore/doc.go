// Package blobstore is the peer's one local copy of nydus blob bytes.
//
// Each blob (a content-addressed file named by the 64-hex sha256 of its bytes) is kept as one
// sparse file holding the blob's compressed bytes exactly at their blob offsets: what other peers
// are served as Dragonfly pieces, and what local reads decompress. Next to the files, a bbolt index
// says which byte ranges of each blob are verified. That index is the one truth that the mount and
// the upload side both read.
//
// # Layout
//
//	DIR/index.db          bbolt: meta{format: 2}, blobs{id: size}, ranges{id: {start: end}}
//	DIR/blobs/<hh>/<id>   one sparse file per blob, at the blob's full size (mode 0600)
//
// Directories are 0700. A directory holding another format (the old chunk store's index, its
// data/ directory, an index without a format) is wiped on Open: the store is a cache.
//
// # Verification rule
//
// The store never verifies anything. Callers check chunk digests (or the whole blob's sha256) and
// then call WriteVerified, or Promote for bytes they wrote earlier with WritePending. Pending bytes
// (half of a chunk that straddles two pieces, bytes no chunk covers) are written to the file but
// kept in memory only, with their origin so a bad peer can be blamed; ReadAt, OpenRange, Verified
// and Ranges never report them, the index never names them, and Open punches them away. Only
// ReadAny returns them, for callers assembling a chunk to verify.
//
// # Durability rule
//
// The index names a range only after its bytes are durable; it forgets a range before its bytes
// are punched, and a blob before its file is unlinked. WriteVerified pwrites, marks the range
// verified in memory (readable at once) and queues the index change; one committer goroutine takes
// every queued change, fdatasyncs each touched file once (Options.Sync), and commits them in one
// bbolt transaction. Callers never wait for it; Flush and Close do. So a kill -9 or a power loss
// at any instant leaves an index whose every range holds the bytes that were written. Open then
// drops entries whose file is missing or has the wrong size, deletes files and junk the index does
// not name, and punches every byte not verified.
//
// # Eviction
//
// Verified plus pending bytes count against Options.Budget. Eviction works on 1 MiB segments of a
// blob in least-recently-used order: reads and writes touch segments, and a write that needs room
// evicts first (ErrNoSpace if even evicting every unpinned segment is not enough). Evicted bytes
// leave the in-memory sets at once, the index change commits, then the bytes are punched; until
// then the segment takes no writes, or a crash could leave the index naming overwritten bytes. Segments
// being written, and those under an open OpenRange, are pinned. The LRU lives in memory (about 100
// bytes per segment held); after a restart the order starts fresh.
//
// A ReadAt takes the blob's state under its mutex, preads outside any lock and then checks the
// blob's eviction epoch: if bytes left the blob meanwhile it reads again while the range is still
// verified, or returns ErrMissing, so punched zeros are never returned as data. No lock is held
// across file I/O; writes and punches of overlapping bytes exclude each other with range locks.
//
// # Why sparse per-blob files
//
// The Rust Dragonfly client keeps one content file per task and nydusd's blobcache one cache file
// per blob, with a map of which chunks are ready. Doing the same here means a piece served to a
// peer is a pread at its blob offset (or a sendfile-able stream), a local read needs no lookup
// beyond a range check, the same bytes are never kept twice (per chunk and per piece), and
// eviction or a failed check frees space by punching holes without rewriting anything.
//
// # Costs
//
// Memory: a few dozen bytes per verified or pending fragment (range sets are sorted slices, sized
// by fragmentation, never by bytes) and about 100 bytes per 1 MiB segment in the LRU. Disk: the
// bytes kept, rounded to file-system blocks at range edges (Stats.DiskBytes reports st_blocks);
// needs a file system with FALLOC_FL_PUNCH_HOLE (ext4, xfs, btrfs, tmpfs). Per write: one pwrite
// on the caller's path; per group commit: one fdatasync per touched blob file and one bbolt
// transaction whose size follows the ranges changed, not the ranges held.
package blobstore
