package schedclient

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"net/url"
	"strconv"
)

// The ids below are Dragonfly's v2 ids, written out here rather than imported from
// d7y.io/dragonfly/v2/pkg/idgen: that package lives in the scheduler's module, and importing it put
// the scheduler's whole dependency graph (databases, web frameworks, job queues) into ours. Every
// rule comes from d7y.io/dragonfly/v2@v2.5.1 pkg/idgen (task_id.go, host_id.go, peer_id.go) and
// the helpers they call (pkg/digest/digest.go SHA256FromStrings, pkg/net/url/url.go
// FilterQueryParams). The ids must be byte-for-byte those of the scheduler and of the Rust peers,
// or a task started by one peer is not found by the others: tools/idgen_test.go checks them
// against the real package.

// taskTypeStandard is commonv2.TaskType_STANDARD.String(), the last input of every v2 task id
// (task_id.go TaskIDV2ByURLBased).
const taskTypeStandard = "STANDARD"

// HostID is Dragonfly's v2 host id: "{ip}-{hostname}", with a "-seed" suffix for seed peers
// (host_id.go HostIDV2; the Rust peer computes the same).
func HostID(ip, hostname string, seed bool) string {
	if seed {
		return ip + "-" + hostname + "-seed"
	}
	return ip + "-" + hostname
}

// PeerID is a new v2 peer id: a random (version 4) UUID in its 36-character text form
// (peer_id.go PeerIDV2, which is github.com/google/uuid's NewString).
func PeerID() string {
	var u [16]byte
	// crypto/rand.Read never fails (it panics rather than return short), so the id is always random.
	_, _ = rand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40 // version 4
	u[8] = u[8]&0x3f | 0x80 // RFC 4122 variant
	var s [36]byte
	hex.Encode(s[0:8], u[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], u[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], u[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], u[8:10])
	s[23] = '-'
	hex.Encode(s[24:], u[10:])
	return string(s[:])
}

// TaskID is the v2 task id of a URL downloaded with the given piece length (0: none given), no tag,
// no application and no filtered query parameters: hex(sha256(url + piece length + "STANDARD"))
// (task_id.go TaskIDV2ByURLBased). Every peer and the scheduler's preheat job compute the
// same id for the same inputs, so a blob task started by one peer is found by the others.
func TaskID(url string, pieceLength uint64) string {
	return TaskIDFor(url, pieceLength, "", "", nil)
}

// TaskIDFor is TaskID with a tag, an application and query parameters left out of the id.
func TaskIDFor(url string, pieceLength uint64, tag, application string, filteredQueryParams []string) string {
	var pl *uint64
	if pieceLength > 0 {
		pl = &pieceLength
	}
	return TaskIDByURL(url, pl, tag, application, filteredQueryParams, "")
}

// TaskIDByURL is the general URL-based v2 task id (task_id.go TaskIDV2ByURLBased): the hex sha256
// of the concatenation, with no separators, of
//
//   - the URL without the query parameters named in filteredQueryParams (see filterQuery),
//   - tag, application and revision (each possibly empty),
//   - the piece length in decimal, only when pieceLength is not nil (a given 0 counts),
//   - "STANDARD".
//
// Nothing separates the fields, so different inputs can share an id ("a"+"b" and "ab"+""): that
// is upstream's format, kept so the ids agree.
func TaskIDByURL(rawURL string, pieceLength *uint64, tag, application string, filteredQueryParams []string, revision string) string {
	h := sha256.New()
	h.Write([]byte(filterQuery(rawURL, filteredQueryParams)))
	h.Write([]byte(tag))
	h.Write([]byte(application))
	h.Write([]byte(revision))
	if pieceLength != nil {
		h.Write(strconv.AppendUint(nil, *pieceLength, 10))
	}
	h.Write([]byte(taskTypeStandard))
	return hex.EncodeToString(h.Sum(nil))
}

// TaskIDByContent is the v2 task id of a download that names the content its id is computed from
// (content_for_calculating_task_id): the hex sha256 of that content (task_id.go TaskIDV2ByContent).
func TaskIDByContent(content string) string {
	sum := sha256.Sum256([]byte(content))
	return hex.EncodeToString(sum[:])
}

// filterQuery is the URL that goes into a task id (pkg/net/url/url.go FilterQueryParams, as
// TaskIDV2ByURLBased calls it):
//
//   - no parameters to filter: the URL exactly as given, even one that does not parse;
//   - otherwise the URL parsed and printed again by net/url, its query keeping the parameters not
//     filtered (names compared exactly, case included; malformed pairs dropped), re-encoded sorted
//     by name; so a URL whose query had only filtered parameters loses its "?";
//   - a URL that does not parse, when there are parameters to filter: the empty string (the id is
//     then that of an empty URL).
func filterQuery(rawURL string, filteredQueryParams []string) string {
	if len(filteredQueryParams) == 0 {
		return rawURL
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return ""
	}
	q := u.Query()
	for _, name := range filteredQueryParams {
		q.Del(name)
	}
	u.RawQuery = q.Encode()
	return u.String()
}
