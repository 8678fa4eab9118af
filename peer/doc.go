// Package peer is the dfnydus daemon side: it serves mounted images' chunk reads from the local
// store, fetches missing chunks back to source (registry, S3, local directory) with one fetch per
// chunk in flight, verifies every chunk before it is stored or returned, and prefetches the rest of
// each image in the background without getting in the way of on-demand reads.
//
// With a Dragonfly scheduler configured, the source the fetcher reads through is peer/p2p's: chunk
// reads become pieces of Dragonfly tasks, and verified pieces are served to other peers
// (peer/upload, peer/vortex).
package peer
