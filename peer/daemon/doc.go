// Package daemon is the long-running dfnydus peer: one process that owns the chunk store (bbolt
// allows only one), the fetcher, a Prometheus registry and every mount, and answers the control
// API (proto/dfnydus/v1, gRPC on a unix socket) that `dfnydus mount`, `umount`, `stat`, `list` and
// `preheat` talk to. `dfnydus mount` without a daemon runs the same code in process.
//
// P2P plugs in through the Distributor interface: when the daemon mounts an image it attaches the
// image's blobs to the Distributor, and the fetcher then reads them through the source the
// Distributor returns instead of straight back to source.
package daemon
