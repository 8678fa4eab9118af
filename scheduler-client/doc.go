// Package schedclient is dfnydus's client of the Dragonfly scheduler (scheduler.v2 of
// d7y.io/api/v2 v2.2.32, served by d7y.io/dragonfly/v2 v2.5.1).
//
// # Which scheduler
//
// Config.Addrs lists the cluster's schedulers. A Client announces this peer's host (AnnounceHost
// with full statistics from /proc, then every AnnounceInterval) to every one of them, each in its
// own loop: a scheduler that does not answer is retried with backoff and holds up no other. Each
// task a peer downloads goes to one scheduler, picked like the Rust dfdaemon picks it
// (dragonfly-client/src/grpc/scheduler.rs, crate hashring 0.3.6): a consistent-hash ring with one
// node per scheduler address, SipHash-2-4 (keys 0) of the Rust SocketAddr, looked up with the
// first 5 characters of the task id (ring.go has the details and test vectors from the real
// crates). A dfnydus peer and a Rust peer therefore meet on the same scheduler for a task. While
// that scheduler does not answer, the task goes to the next one clockwise on the ring, where the
// Rust peers also go once their health checks drop it; when it accepts the host again, sessions
// move back. StatTask and StatPeer ask the task's scheduler; ListHosts, StatImage and PreheatImage
// ask any reachable one.
//
// # Sessions and outages
//
// Each task is one Session: a long-lived AnnouncePeer stream that registers the peer, reports
// started / pieces / outcome, and delivers the scheduler's answers (parents, back-to-source,
// empty) as Events. Register returns at once and connects in the background; it fails only for an
// invalid spec or a closed client. Whenever the session has no stream (no scheduler answers, or
// the stream broke) it sends EventDisconnected (EventError when a live scheduler refused it) and
// keeps registering again, with the same peer id, forever until Close: exponential backoff from
// Config.ReconnectBackoff (200 ms) to Config.MaxReconnectBackoff (30 s), jittered, cut short when
// a scheduler accepts the host again. Before registering on a scheduler that failed it announces
// the host there (a restarted scheduler forgot it and answers NotFound). After registering it
// replays Started, every finished piece and the outcome, then sends EventReconnected (for a peer
// registered before); the scheduler's answer follows as usual. Callers read from the source while
// disconnected. A session whose outcome the scheduler acknowledged has no stream left to notice an
// outage; instead every scheduler holding the host is asked every Config.HealthInterval (10 s)
// whether it still lists the host (ListHosts): one that is gone, or restarted and forgot it, is
// announced to again, and finished sessions register again there, replaying pieces and outcome,
// so finished peers are parents again after a restart. Events is closed only by Close. Close
// stops the stream and deletes the peer from
// its scheduler (DeletePeer, best effort, 2 s at most): the last unmount of an image releases its
// tasks. Client.Close closes every session, deletes the host from every scheduler that accepted it
// and closes the connections.
//
// # The report queue
//
// The report methods (Started, PieceFinished, PieceFailed, Reschedule, Finished, Failed) never
// wait for the network or for a lock held across a send: they record the change in the session's
// state and queue the report; the session's goroutine, which owns the stream, sends the queue in
// order. A finished piece already queued is coalesced. The queue holds at most
// Config.ReportQueueLimit reports (1024) besides Started and the outcome; when it is full the
// oldest queued finished piece is dropped from it (the state keeps it and the next register
// replays it), or else the oldest PieceFailed / Reschedule (advice about the current parents). A
// re-register empties the queue: the replay carries the state, and the advice is not replayed
// because the scheduler answers afresh. Finished and Failed only queue the outcome; Session.Sync
// waits until the queue is sent and the scheduler acknowledged the outcome by closing the stream.
//
// Ids are Dragonfly's v2 ids (HostID, PeerID, TaskID, TaskIDByURL, TaskIDByContent), written out in
// ids.go after d7y.io/dragonfly/v2 pkg/idgen rather than imported, which keeps the scheduler's
// module out of ours.
//
// # What the v2.5.1 scheduler does with a session
//
// The first register of a task sets its content length and piece count (the finish messages carry
// no sizes). A new task, with no seed peer available, is answered back-to-source; a later peer of
// another host gets up to 3 parents among peers that are BackToSource, Succeeded, or have parents
// themselves (never a peer still waiting in ReceivedNormal). Every register of a normal host waits
// 30 ms x 2^(registers of that host in flight), capped at 1 s, halved plus jitter
// (service_v2.go handleRegisterPeerRequest): open sessions once per task and keep them. Only
// back-to-source pieces are listed by StatTask/StatPeer. A reschedule blocks the given parents and
// answers back-to-source after scheduler.retryBackToSourceLimit rounds without a candidate.
//
// # What PreheatImage needs (found against the real scheduler)
//
//   - Redis and jobs: database.redis.addrs and job.enable. Without them the scheduler accepts the
//     request and then crashes (nil job service); PreheatImage is therefore never retried.
//   - scope set on the wire (single_seed_peer, all_seed_peers or all_peers; empty fails validation).
//   - a manifest URL http(s)://REGISTRY/v2/REPO/manifests/REF whose address is not loopback or
//     link-local (its HTTP client refuses them: "ip 127.0.0.1 is invalid").
//   - a super-seed host (type 1) announced to that scheduler and answering grpc.health.v1 on
//     ip:port; seeds are health-checked every 30 s (a constant), so a new seed is picked up to
//     30 s after it announces.
//
// The scheduler then calls the seed's DfdaemonUpload.DownloadTask once per blob the manifest
// references (config and layers) with Download{url: REGISTRY/v2/REPO/blobs/DIGEST, type STANDARD,
// piece_length unset unless the request sets it, priority from the request (LEVEL0 by default),
// filtered_query_params: the 32 default ones, request_header: Accept (the last layer's media type)
// and Authorization (empty without registry auth), remote_ip: the scheduler, timeout 1h}. The task
// id is not sent: the seed computes TaskIDFor(url, piece length, tag, application, filtered query
// params), which for a blob URL without query is TaskID(url, 0). Peers that register blob tasks
// with a piece length get a different id unless PreheatImage carries the same piece_length.
package schedclient
