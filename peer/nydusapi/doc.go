// Package nydusapi is dfnydus's nydusd-compatible front: what containerd's nydus-snapshotter
// (v0.16.1) expects of the nydusd it launches for every nydus image.
//
//   - config.go: the v1 JSON daemon configuration the snapshotter writes (config/daemonconfig
//     upstream), parsed into a MountConfig: which backend to read blobs from, where to cache, how to
//     prefetch. Unsupported backends are rejected with an error naming them.
//   - server.go: the HTTP API on the unix socket given by --apisock (pkg/daemon/client.go upstream):
//     daemon info and state (INIT, READY, RUNNING), mounts and unmounts in shared mode, metrics,
//     configuration (auth) updates, errors as {"code","message"}. Idle connections are never timed
//     out: the snapshotter keeps one open and reads its hang-up as the daemon's death.
//   - mounter.go: the Mounter interface the server mounts through. local.go: LocalMounter mounts in
//     this process with the store, the fetcher and the FUSE file system, as `dfnydus mount` does.
//     daemon.go: DaemonMounter asks a running `dfnydus daemon` (peer/daemon's control API) to mount,
//     so the mounts share its store and P2P and outlive a killed nydusd (its successor adopts them).
//
// The wire formats carry over from upstream; where a rule comes from is cited next to it.
package nydusapi
