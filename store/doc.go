// Package store is the peer's local chunk store: the uncompressed bytes of verified chunks,
// content-addressed by chunk digest and shared by every image on the machine (a chunk two images
// share is stored once), indexed in bbolt, kept within a size budget by LRU eviction, and safe
// against a crash at any instant.
//
// # Layout
//
//	DIR/index.db                     bbolt: bucket "chunks" (alg byte + digest -> size, last access),
//	                                 bucket "meta" (format version)
//	DIR/data/<hh>/<alg>-<hex digest>  one file per chunk, <hh> = first two hex digits of the digest
//	DIR/tmp/                         chunks being written; emptied by Open
//
// One fan-out level of 256 directories keeps every directory small (about 4,000 entries per million
// chunks, which ext4 and xfs index) while Open's scan visits only 256 directories; a second level
// would add 65,536 directories to create and scan and buy nothing at the chunk counts a budget
// allows. Per-chunk files rather than one big file give eviction that returns space to the file
// system at once, no compaction, and no read of one chunk that can see another's bytes.
//
// # Durability and crash safety
//
// Put writes a temp file in DIR/tmp, fsyncs it (Options.Sync), renames it to its final name and only
// then queues the index entry; removal goes the other way (the index transaction that drops the entry
// commits before the file is unlinked). So a kill -9 at any instant leaves at worst a temp file or a
// file without an index entry, and Open removes both. Put returns once the chunk is in place and
// servable, without waiting for its index transaction: a crash right after a Put may lose that
// chunk (it is fetched again), never index a wrong one. Flush waits for the index. Open also drops
// entries whose file is missing or has the wrong size. The directory is not fsynced after the
// rename: after a power loss a renamed file may be missing (Open drops its entry) but, its data
// having been synced first, never holds other bytes.
//
// # Verification
//
// Put refuses bytes that do not hash to the key. Get serves a chunk only after hashing it in this
// process: on its first Get, or on every Get with Options.VerifyReads. A chunk that no longer hashes to
// its key, or whose file has the wrong size, is removed and reported as a miss so that the caller
// fetches it again; Stats().Repaired counts these.
//
// # Eviction
//
// Entries live in memory in LRU order (about 150 bytes each: a million 1 MiB chunks, a 1 TiB cache,
// cost about 150 MB). Each Get moves its chunk to the front and stamps it with a logical access
// counter; the stamps reach bbolt in batches (every Options.FlushInterval, when many are pending, and
// at Close), so a restart restores the order without one bbolt write per Get. After each Put, and
// when a pin is released, least recently used unpinned chunks are evicted while the chunk bytes exceed
// Options.Budget. Pinned chunks (Pin, and every chunk while a Get reads it) are never evicted, which
// may hold the store over budget until they are released.
//
// Index writes from Puts, evictions, repairs and access flushes are group-committed in the order they
// were made: one goroutine commits whatever is queued in one bbolt transaction, so a burst of Puts
// costs about one fsync of the index and no Put waits for one. The queue is bounded (4096 ops);
// beyond that Puts wait.
package store
