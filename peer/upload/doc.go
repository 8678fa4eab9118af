// Package upload serves the DfdaemonUpload gRPC service (d7y.io/api/v2 pkg/apis/dfdaemon/v2) that
// every Dragonfly peer runs on its upload port, over a peer's tasks (the Tasks interface, which the
// piece manager implements), plus grpc.health.v1 (the scheduler health-checks seed peers with it).
//
// Served methods, with semantics from the Rust dfdaemon (github.com/dragonflyoss/client,
// dragonfly-client/src/grpc/dfdaemon_upload.rs):
//
//   - SyncPieces: for each interested piece number, one SyncPiecesResponse (number, offset,
//     length, and where to fetch it: this peer's IP and Vortex TCP/QUIC ports) as soon as the peer
//     holds the piece; pieces still downloading are waited for. The stream ends when every
//     interested piece was sent, or at once after the held ones when the task is done (a number
//     the finished task does not have never comes). Unknown task: NotFound.
//   - DownloadTask: the scheduler's way to make a seed peer download a task (seed mode, preheat).
//     Only seeds serve it (Config.Seed), only to callers the Authorizer accepts (the schedulers'
//     resolved addresses, allowed CIDRs, verified client certificates), and only for requests
//     ValidateDownload accepts (an OCI blob URL in the registries' scheme whose URL-based task id
//     is the request's); others get PermissionDenied or InvalidArgument before any network I/O.
//     The task id is computed from the Download as the Rust peer does (TaskID). The stream carries
//     one DownloadTaskStartedResponse, then one DownloadPieceFinishedResponse per piece, and ends
//     when the task is complete.
//   - StatTask and StatLocalTask: the peer's view of a task as common.v2.Task.
//   - DeleteTask: from callers the Authorizer accepts only.
//
// Errors reach callers as a gRPC code and a fixed message (MsgNotFound, ...); the detail is
// logged locally. LimitListener, GRPCServerOptions, ServerTLS and ClientTLS bound and secure the
// server the daemon runs this service on.
//
// The rest of DfdaemonUpload (cache, persistent and persistent-cache tasks, SyncHost, ...) answers
// Unimplemented.
//
// SyncPieces (the function) is the downloading side's helper: it streams the PieceLocations a
// parent announces.
package upload
