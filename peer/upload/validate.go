package upload

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"regexp"
	"strings"

	commonv2 "d7y.io/api/v2/pkg/apis/common/v2"

	schedclient "github.com/dfnydus/dfnydus/scheduler-client"
)

// URLPolicy says which URLs a DownloadTask may name: what this peer would fetch on a remote
// caller's behalf.
type URLPolicy struct {
	// PlainHTTP: registries are reached over http:// (the daemon's registry.plainHTTP); otherwise
	// only https:// URLs are accepted. A caller never picks the scheme.
	PlainHTTP bool
	// Hosts, when non-empty, are the only registry hosts (host[:port], case-insensitive) accepted.
	Hosts []string
}

// ErrInvalidDownload: a Download a remote caller may not ask for (ValidateDownload wraps it).
var ErrInvalidDownload = errors.New("upload: invalid download request")

// Piece lengths a caller may ask for: the scheduler's minimum, and a bound on what one piece may
// cost to hold and serve.
const (
	minPieceLength = 4 << 20
	maxPieceLength = 1 << 30
)

// repoName is the repository name grammar of the OCI distribution spec (spec.md, "Pulling
// blobs": <name> is [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*).
const repoName = `[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*`

// blobPath is /v2/<name>/blobs/sha256:<64 hex>, the only path a seed download may name.
var blobPath = regexp.MustCompile(`^/v2/(` + repoName + `)/blobs/(sha256:[a-f0-9]{64})$`)

// ValidateDownload checks, before any network I/O, that d is a download this peer may do for a
// remote caller, and returns the blob digest ("sha256:<hex>") its URL names:
//
//   - the URL is an OCI blob URL scheme://host/v2/<name>/blobs/sha256:<hex>, with no user info,
//     query, fragment or percent-encoding, and the scheme the policy says registries use;
//   - taskID is the URL-based id of d (schedclient.TaskIDByURL of its URL, piece length, tag,
//     application and filtered query parameters): whoever names a task id names the bytes behind
//     it, so a request whose id would come from anything else (content_for_calculating_task_id,
//     the blob-digest mode, a hub revision, another task type) is refused. Otherwise a caller
//     could make this peer store one blob under the id of another (task-id hijack).
//
// The error wraps ErrInvalidDownload and says what failed, for the local log only.
func ValidateDownload(d *commonv2.Download, taskID string, policy URLPolicy) (blobDigest string, err error) {
	bad := func(format string, args ...any) (string, error) {
		return "", fmt.Errorf("%w: %s", ErrInvalidDownload, fmt.Sprintf(format, args...))
	}
	if d == nil || d.GetUrl() == "" {
		return bad("no url")
	}
	switch {
	case d.ContentForCalculatingTaskId != nil:
		return bad("content_for_calculating_task_id is set")
	case d.GetEnableTaskIdBasedBlobDigest():
		return bad("enable_task_id_based_blob_digest is set")
	case d.GetType() != commonv2.TaskType_STANDARD:
		return bad("task type %s", d.GetType())
	case d.GetHuggingFace() != nil || d.GetModelScope() != nil:
		return bad("hub downloads are not served")
	case d.PieceLength != nil && (d.GetPieceLength() < minPieceLength || d.GetPieceLength() > maxPieceLength):
		return bad("piece length %d outside [%d, %d]", d.GetPieceLength(), minPieceLength, maxPieceLength)
	}
	u, err := url.Parse(d.GetUrl())
	if err != nil {
		return bad("url: %v", err)
	}
	want := "https"
	if policy.PlainHTTP {
		want = "http"
	}
	switch {
	case u.Scheme != want:
		return bad("scheme %q, registries are reached over %s", u.Scheme, want)
	case u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.RawFragment != "" || u.Opaque != "":
		return bad("url has user info, a query or a fragment")
	case u.RawPath != "" || strings.Contains(d.GetUrl(), "%"):
		return bad("url is percent-encoded")
	case u.Host == "" || u.Hostname() == "":
		return bad("url has no host")
	}
	if err := checkHost(u, policy); err != nil {
		return bad("%v", err)
	}
	m := blobPath.FindStringSubmatch(u.Path)
	if m == nil {
		return bad("path %q is not /v2/<name>/blobs/sha256:<hex>", u.Path)
	}
	if urlID := schedclient.TaskIDByURL(d.GetUrl(), d.PieceLength, d.GetTag(), d.GetApplication(), d.GetFilteredQueryParams(), ""); taskID != urlID {
		return bad("task id %s is not the URL-based id %s of its url", taskID, urlID)
	}
	return m[2], nil
}

// checkHost applies the policy's host list, and refuses addresses that are never a registry but
// often a target: link-local (cloud metadata services), unspecified and multicast.
func checkHost(u *url.URL, policy URLPolicy) error {
	if len(policy.Hosts) > 0 {
		ok := false
		for _, h := range policy.Hosts {
			ok = ok || strings.EqualFold(h, u.Host)
		}
		if !ok {
			return fmt.Errorf("host %q is not a configured registry", u.Host)
		}
	}
	if a, err := netip.ParseAddr(u.Hostname()); err == nil {
		a = a.Unmap()
		if a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || a.IsUnspecified() || a.IsMulticast() || a.IsInterfaceLocalMulticast() {
			return fmt.Errorf("host %s is not a registry address", a)
		}
	}
	return nil
}
