// Package schedclient is dfnydus's client of the Dragonfly scheduler (scheduler.v2 of
// d7y.io/api/v2 v2.2.32, served by d7y.io/dragonfly/v2 v2.5.1).
//
// A Client announces this peer's host (AnnounceHost with full statistics from /proc, then every
// AnnounceInterval) to the first scheduler in Config.Addrs that answers, and moves to the next
// when that one breaks. Each task a peer downloads is one Session: a long-lived AnnouncePeer
// stream that registers the peer, reports started / pieces / outcome, and delivers the
// scheduler's answers (parents, back-to-source, empty) as Events. A broken stream is re-opened on
// the first scheduler that answers, with the same peer id, and the session replays what it
// reported, so callers see one continuous session until every scheduler is gone (EventError: go
// back to source).
//
// Ids are Dragonfly's (pkg/idgen): HostID, PeerID, TaskID.
package schedclient
