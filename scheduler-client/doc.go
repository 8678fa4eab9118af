// Package schedclient is dfnydus's client of the Dragonfly scheduler (scheduler.v2 of
// d7y.io/api/v2 v2.2.32, served by d7y.io/dragonfly/v2 v2.5.1).
//
// A Client announces this peer's host (AnnounceHost with full statistics from /proc, then every
// AnnounceInterval) to the first scheduler in Config.Addrs that answers, and moves to the next
// when that one breaks. Each task a peer downloads is one Session: a long-lived AnnouncePeer
// stream that registers the peer, reports started / pieces / outcome, and delivers the
// scheduler's answers (parents, back-to-source, empty) as Events. A broken stream is re-opened,
// with the same peer id, on the first scheduler that answers within Config.ReconnectTimeout, and
// the session replays what it reported; callers see one continuous session until every scheduler
// is gone (EventError: go back to source).
//
// Ids are Dragonfly's (pkg/idgen): HostID, PeerID, TaskID.
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
