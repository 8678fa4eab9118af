// Package trace is the start trace of an image: which chunks a workload read first, in the order it
// first read them. A mount records one (Recorder, a rafs.ChunkReader wrapper, so the peer and the
// FUSE filesystem need no change), `dfnydus profile` stores it in the registry as an OCI 1.1
// referrer of the nydus manifest (Push, Find), `build`/`convert --prefetch-trace` bake its paths into
// the bootstrap's prefetch table (PrefetchPaths), and every mount from a registry looks for one and
// prefetches its chunks first (Resolve gives them in trace order). See docs/traces.md.
package trace
