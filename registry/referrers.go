package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ErrReferrersUnsupported is returned by Referrers when the registry has no referrers API.
var ErrReferrersUnsupported = errors.New("registry has no referrers API")

// Referrers lists the manifests in repo whose subject is subject, through the OCI distribution-spec
// 1.1 referrers API (GET /v2/<name>/referrers/<digest>), keeping those of artifactType when it is
// set (the registry may filter; we filter again since it need not). A registry with the API never
// answers 404 (distribution-spec, "Listing Referrers"), so 404 means no API:
// ErrReferrersUnsupported, and the caller falls back to the referrers tag schema.
func (c *Client) Referrers(ctx context.Context, repo Ref, subject digest.Digest, artifactType string) ([]ocispec.Descriptor, error) {
	if err := checkRepo(repo); err != nil {
		return nil, err
	}
	if err := subject.Validate(); err != nil {
		return nil, fmt.Errorf("referrers of %q: %w", subject, err)
	}
	var q url.Values
	if artifactType != "" {
		q = url.Values{"artifactType": {artifactType}}
	}
	resp, err := c.do(ctx, &request{
		method: http.MethodGet, host: repo.Registry, path: "/v2/" + repo.Repository + "/referrers/" + subject.String(),
		query: q, header: http.Header{"Accept": {ocispec.MediaTypeImageIndex}},
		scopes: []string{repoScope(repo.Repository, "pull")}, idempotent: true,
	})
	if err != nil {
		return nil, fmt.Errorf("referrers of %s in %s: %w", subject, repo.Context(), err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		drain(resp)
		return nil, fmt.Errorf("referrers of %s in %s: %w", subject, repo.Context(), ErrReferrersUnsupported)
	default:
		return nil, fmt.Errorf("referrers of %s in %s: %w", subject, repo.Context(), newHTTPError(repo.Registry, resp))
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxManifestSize+1))
	if err != nil {
		return nil, fmt.Errorf("referrers of %s in %s: read: %w", subject, repo.Context(), err)
	}
	if len(data) > MaxManifestSize {
		return nil, fmt.Errorf("referrers of %s in %s: %w", subject, repo.Context(), ErrManifestTooLarge)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(data, &idx); err != nil {
		return nil, fmt.Errorf("referrers of %s in %s: index: %w", subject, repo.Context(), err)
	}
	return FilterReferrers(idx.Manifests, artifactType), nil
}

// FilterReferrers keeps the descriptors of artifactType ("" keeps all).
func FilterReferrers(ds []ocispec.Descriptor, artifactType string) []ocispec.Descriptor {
	var out []ocispec.Descriptor
	for _, d := range ds {
		if artifactType == "" || d.ArtifactType == artifactType {
			out = append(out, d)
		}
	}
	return out
}

// ReferrersTag is the tag of the referrers tag schema, the fallback for registries without the
// referrers API (distribution-spec 1.1, "Referrers Tag Schema"): <alg>-<ref>, the subject digest
// with ':' replaced by '-' (and the result truncated to a tag's 128 characters).
func ReferrersTag(subject digest.Digest) string {
	t := subject.Algorithm().String() + "-" + subject.Encoded()
	if len(t) > 128 {
		t = t[:128]
	}
	return t
}
