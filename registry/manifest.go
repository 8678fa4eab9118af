package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.uber.org/zap"

	"github.com/dfnydus/dfnydus/internal/transient"
)

// MaxManifestSize is the largest manifest or index we read or write (the limit registries apply).
const MaxManifestSize = 4 << 20

// Docker's media types, which registries still serve for most images.
const (
	MediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
)

// manifestAccept is what we ask manifests for: OCI and Docker images and indexes.
var manifestAccept = strings.Join([]string{
	ocispec.MediaTypeImageManifest,
	ocispec.MediaTypeImageIndex,
	MediaTypeDockerManifest,
	MediaTypeDockerManifestList,
}, ", ")

// IsIndex reports whether mediaType is an OCI index or Docker manifest list.
func IsIndex(mediaType string) bool {
	return mediaType == ocispec.MediaTypeImageIndex || mediaType == MediaTypeDockerManifestList
}

func manifestPath(ref Ref) string {
	return "/v2/" + ref.Repository + "/manifests/" + ref.reference()
}

func checkRef(ref Ref) error {
	if ref.Registry == "" || ref.Repository == "" {
		return fmt.Errorf("reference %q: registry and repository are required", ref.String())
	}
	if ref.reference() == "" {
		return fmt.Errorf("reference %s: a tag or digest is required", ref.String())
	}
	if ref.Digest != "" {
		if err := digest.Digest(ref.Digest).Validate(); err != nil {
			return fmt.Errorf("reference %s: %w", ref.String(), err)
		}
	}
	return nil
}

// GetManifest fetches the manifest or index ref names (by digest when it has one, else by tag) and
// returns its bytes and descriptor. Content fetched by digest must hash to that digest; content
// fetched by tag must match the registry's Docker-Content-Digest when it sends one.
func (c *Client) GetManifest(ctx context.Context, ref Ref) ([]byte, ocispec.Descriptor, error) {
	if err := checkRef(ref); err != nil {
		return nil, ocispec.Descriptor{}, err
	}
	var (
		resp *http.Response
		data []byte
	)
	// A body cut short by the network is fetched again (the request itself had its retries).
	for attempt := 0; ; attempt++ {
		var err error
		var readFailed bool
		resp, data, readFailed, err = c.fetchManifest(ctx, ref)
		if err == nil {
			break
		}
		if !readFailed || attempt >= c.opts.Retries || ctx.Err() != nil || !retryableError(err) {
			return nil, ocispec.Descriptor{}, fmt.Errorf("get manifest %s: %w", ref, err)
		}
		c.stats.retries.Add(1)
		c.log.Warn("manifest read failed; retrying", zap.String("ref", ref.String()), zap.Error(err))
		if err := c.sleep(ctx, transient.Backoff(attempt, c.opts.RetryBaseDelay, c.opts.RetryMaxDelay)); err != nil {
			return nil, ocispec.Descriptor{}, err
		}
	}
	want := digest.Digest(ref.Digest)
	if want == "" {
		if h, err := digest.Parse(resp.Header.Get("Docker-Content-Digest")); err == nil {
			want = h
		}
	}
	got := digest.FromBytes(data)
	if want != "" {
		if want.Algorithm() != got.Algorithm() {
			got = want.Algorithm().FromBytes(data)
		}
		if got != want {
			return nil, ocispec.Descriptor{}, fmt.Errorf("get manifest %s: %w: content is %s, want %s",
				ref, ErrDigestMismatch, got, want)
		}
	}
	desc := ocispec.Descriptor{
		MediaType: manifestMediaType(resp.Header.Get("Content-Type"), data),
		Digest:    got,
		Size:      int64(len(data)),
	}
	return data, desc, nil
}

// fetchManifest GETs a manifest's bytes (at most MaxManifestSize of them); readFailed says the
// failure came while reading the body.
func (c *Client) fetchManifest(ctx context.Context, ref Ref) (_ *http.Response, _ []byte, readFailed bool, _ error) {
	resp, err := c.do(ctx, &request{
		method: http.MethodGet, host: ref.Registry, path: manifestPath(ref),
		header: http.Header{"Accept": {manifestAccept}},
		scopes: []string{repoScope(ref.Repository, "pull")}, idempotent: true,
	})
	if err != nil {
		return nil, nil, false, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, nil, false, newHTTPError(ref.Registry, resp)
	}
	defer resp.Body.Close()
	if resp.ContentLength > MaxManifestSize {
		return nil, nil, false, fmt.Errorf("%w: %d bytes, limit %d", ErrManifestTooLarge, resp.ContentLength, MaxManifestSize)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxManifestSize+1))
	if err != nil {
		return nil, nil, true, fmt.Errorf("read: %w", err)
	}
	if len(data) > MaxManifestSize {
		return nil, nil, false, fmt.Errorf("%w: more than %d bytes", ErrManifestTooLarge, MaxManifestSize)
	}
	return resp, data, false, nil
}

// manifestMediaType is the response's Content-Type when it is specific, else the document's own
// mediaType field, else a guess from its shape.
func manifestMediaType(contentType string, data []byte) string {
	if mt, _, err := mime.ParseMediaType(contentType); err == nil {
		switch mt {
		case "", "application/json", "application/octet-stream", "text/plain":
		default:
			return mt
		}
	}
	var doc struct {
		MediaType string            `json:"mediaType"`
		Manifests []json.RawMessage `json:"manifests"`
		Config    json.RawMessage   `json:"config"`
	}
	if json.Unmarshal(data, &doc) != nil {
		return ""
	}
	switch {
	case doc.MediaType != "":
		return doc.MediaType
	case doc.Manifests != nil:
		return ocispec.MediaTypeImageIndex
	case doc.Config != nil:
		return ocispec.MediaTypeImageManifest
	}
	return ""
}

// PutManifest uploads a manifest or index under ref's tag, or by ref's digest when it has no tag.
// When ref has a digest, data must hash to it.
func (c *Client) PutManifest(ctx context.Context, ref Ref, mediaType string, data []byte) (ocispec.Descriptor, error) {
	if err := checkRef(ref); err != nil {
		return ocispec.Descriptor{}, err
	}
	if mediaType == "" {
		return ocispec.Descriptor{}, fmt.Errorf("put manifest %s: media type is required", ref)
	}
	if len(data) > MaxManifestSize {
		return ocispec.Descriptor{}, fmt.Errorf("put manifest %s: %w: %d bytes, limit %d", ref,
			ErrManifestTooLarge, len(data), MaxManifestSize)
	}
	got := digest.FromBytes(data)
	if ref.Digest != "" {
		want := digest.Digest(ref.Digest)
		if want.Algorithm() != got.Algorithm() {
			got = want.Algorithm().FromBytes(data)
		}
		if got != want {
			return ocispec.Descriptor{}, fmt.Errorf("put manifest %s: %w: content is %s", ref, ErrDigestMismatch, got)
		}
	}
	target := ref
	if ref.Tag != "" {
		target.Digest = "" // push under the tag; the digest was checked above
	}
	resp, err := c.do(ctx, &request{
		method: http.MethodPut, host: ref.Registry, path: manifestPath(target),
		header: http.Header{"Content-Type": {mediaType}},
		body:   func() io.Reader { return bytes.NewReader(data) }, size: int64(len(data)),
		scopes: []string{repoScope(ref.Repository, "pull,push")}, idempotent: true,
	})
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("put manifest %s: %w", ref, err)
	}
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return ocispec.Descriptor{}, fmt.Errorf("put manifest %s: %w", ref, newHTTPError(ref.Registry, resp))
	}
	drain(resp)
	if h, err := digest.Parse(resp.Header.Get("Docker-Content-Digest")); err == nil && h.Algorithm() == got.Algorithm() && h != got {
		return ocispec.Descriptor{}, fmt.Errorf("put manifest %s: %w: registry stored %s, we sent %s",
			ref, ErrDigestMismatch, h, got)
	}
	c.log.Debug("put manifest", zap.String("ref", ref.String()), zap.String("digest", got.String()))
	return ocispec.Descriptor{MediaType: mediaType, Digest: got, Size: int64(len(data))}, nil
}

// Resolve returns the descriptor of the manifest ref names, with a HEAD request when the registry
// answers it fully (digest and media type), else with a GET.
func (c *Client) Resolve(ctx context.Context, ref Ref) (ocispec.Descriptor, error) {
	if err := checkRef(ref); err != nil {
		return ocispec.Descriptor{}, err
	}
	resp, err := c.do(ctx, &request{
		method: http.MethodHead, host: ref.Registry, path: manifestPath(ref),
		header: http.Header{"Accept": {manifestAccept}},
		scopes: []string{repoScope(ref.Repository, "pull")}, idempotent: true,
	})
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("resolve %s: %w", ref, err)
	}
	drain(resp)
	switch resp.StatusCode {
	case http.StatusOK:
		if desc, ok := headDescriptor(ref, resp); ok {
			return desc, nil
		}
	case http.StatusNotFound:
		return ocispec.Descriptor{}, fmt.Errorf("resolve %s: %w", ref, &HTTPError{Registry: ref.Registry,
			Method: http.MethodHead, Path: resp.Request.URL.Path, StatusCode: resp.StatusCode, Status: resp.Status})
	}
	_, desc, err := c.GetManifest(ctx, ref)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("resolve: %w", err)
	}
	return desc, nil
}

// headDescriptor builds a descriptor from a HEAD response when it has everything a GET would give.
func headDescriptor(ref Ref, resp *http.Response) (ocispec.Descriptor, bool) {
	d, err := digest.Parse(resp.Header.Get("Docker-Content-Digest"))
	if err != nil || (ref.Digest != "" && d.String() != ref.Digest) {
		return ocispec.Descriptor{}, false
	}
	mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || !strings.HasPrefix(mt, "application/vnd.") {
		return ocispec.Descriptor{}, false
	}
	size, err := strconv.ParseInt(resp.Header.Get("Content-Length"), 10, 64)
	if err != nil || size <= 0 || size > MaxManifestSize {
		return ocispec.Descriptor{}, false
	}
	return ocispec.Descriptor{MediaType: mt, Digest: d, Size: size}, true
}
