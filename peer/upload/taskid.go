package upload

import (
	"fmt"
	"regexp"
	"strings"

	commonv2 "d7y.io/api/v2/pkg/apis/common/v2"

	schedclient "github.com/dfnydus/dfnydus/scheduler-client"
)

// blobURL matches OCI blob URLs, <scheme>://<registry>/v2/<repository>/blobs/<digest>
// (dragonfly-client-util/src/digest/mod.rs BLOB_URL_REGEX).
var blobURL = regexp.MustCompile(`^(.*)://(.*)/v2/(.*)/blobs/([^?]+)(?:\?.*)?$`)

// TaskID returns the id of the task d downloads, computed as the Rust dfdaemon does for
// DownloadTask (dragonfly-client/src/grpc/dfdaemon_upload.rs download_task and
// dragonfly-client-util/src/id_generator/mod.rs task_id):
//
//   - content_for_calculating_task_id set: sha256 of that content (schedclient.TaskIDByContent);
//   - enable_task_id_based_blob_digest and an OCI blob URL: the hex of the blob digest;
//   - otherwise URL-based: schedclient.TaskIDByURL over the URL without the filtered query
//     parameters, tag, application, the Hugging Face or ModelScope revision, and the piece length
//     when set. (It follows Dragonfly's Go idgen, which sorts the remaining query parameters, as
//     the scheduler does when it computes the id it asks a seed peer for.)
func TaskID(d *commonv2.Download) (string, error) {
	if d == nil || d.GetUrl() == "" {
		return "", fmt.Errorf("upload: task id: download has no url")
	}
	if d.ContentForCalculatingTaskId != nil {
		return schedclient.TaskIDByContent(d.GetContentForCalculatingTaskId()), nil
	}
	if d.GetEnableTaskIdBasedBlobDigest() {
		if m := blobURL.FindStringSubmatch(d.GetUrl()); m != nil {
			return blobDigestHex(m[4])
		}
	}
	return schedclient.TaskIDByURL(d.GetUrl(), d.PieceLength, d.GetTag(), d.GetApplication(), d.GetFilteredQueryParams(), revision(d)), nil
}

// blobDigestHex returns the encoded part of a sha256 or sha512 digest
// (dragonfly-client-util/src/digest/mod.rs Digest::from_str).
func blobDigestHex(digest string) (string, error) {
	algo, encoded, ok := strings.Cut(digest, ":")
	switch {
	case !ok:
		return "", fmt.Errorf("upload: task id: blob digest %q has no algorithm", digest)
	case algo == "sha256" && len(encoded) == 64, algo == "sha512" && len(encoded) == 128:
		return encoded, nil
	}
	return "", fmt.Errorf("upload: task id: blob digest %q is not a sha256 or sha512 digest", digest)
}

// revision is the repository revision that goes into the task id of hub downloads
// (dragonfly-client-util/src/id_generator/mod.rs repository_revision).
func revision(d *commonv2.Download) string {
	if hf := d.GetHuggingFace(); hf != nil {
		return hf.GetRevision()
	}
	if ms := d.GetModelScope(); ms != nil {
		return ms.GetRevision()
	}
	return ""
}
