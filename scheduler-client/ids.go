package schedclient

import (
	"d7y.io/dragonfly/v2/pkg/idgen"
)

// HostID is Dragonfly's v2 host id: "{ip}-{hostname}", with a "-seed" suffix for seed peers
// (pkg/idgen/host_id.go HostIDV2; the Rust peer computes the same).
func HostID(ip, hostname string, seed bool) string { return idgen.HostIDV2(ip, hostname, seed) }

// PeerID is a new v2 peer id (a random UUID, pkg/idgen/peer_id.go PeerIDV2).
func PeerID() string { return idgen.PeerIDV2() }

// TaskID is the v2 task id of a URL downloaded with the given piece length (0: none given), no tag,
// no application and no filtered query parameters: hex(sha256(url + piece length + "STANDARD"))
// (pkg/idgen/task_id.go TaskIDV2ByURLBased). Every peer and the scheduler's preheat job compute the
// same id for the same inputs, so a blob task started by one peer is found by the others.
func TaskID(url string, pieceLength uint64) string {
	return TaskIDFor(url, pieceLength, "", "", nil)
}

// TaskIDFor is TaskID with a tag, an application and query parameters left out of the id (Go's
// idgen filters them and re-encodes the remaining query sorted by key).
func TaskIDFor(url string, pieceLength uint64, tag, application string, filteredQueryParams []string) string {
	var pl *uint64
	if pieceLength > 0 {
		pl = &pieceLength
	}
	return idgen.TaskIDV2ByURLBased(url, pl, tag, application, filteredQueryParams, "")
}
