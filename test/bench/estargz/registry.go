package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.uber.org/zap"
)

const (
	// maxManifestSize bounds the manifests this tool reads (the distribution registry's own
	// limit is 4 MiB).
	maxManifestSize = 4 << 20
	// maxErrorBody bounds how much of an error response is quoted in an error.
	maxErrorBody = 512

	mediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	mediaTypeDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
)

// registryClient speaks the distribution API (the subset needed to push and read a single-layer
// image) to a registry over plain HTTP, without authentication.
type registryClient struct {
	base   *url.URL // http://HOST[:PORT]
	client *http.Client
	log    *zap.Logger
}

func newRegistryClient(host string, client *http.Client, log *zap.Logger) (*registryClient, error) {
	base, err := url.Parse("http://" + host)
	if err != nil || base.Host != host || base.Path != "" {
		return nil, fmt.Errorf("%w: registry address %q is not HOST[:PORT]", errUsage, host)
	}
	return &registryClient{base: base, client: client, log: log}, nil
}

func (c *registryClient) endpoint(format string, args ...any) *url.URL {
	return c.base.ResolveReference(&url.URL{Path: fmt.Sprintf(format, args...)})
}

// blobExists reports whether repo already has the blob dgst.
func (c *registryClient) blobExists(ctx context.Context, repo string, dgst digest.Digest) (bool, error) {
	u := c.endpoint("/v2/%s/blobs/%s", repo, dgst)
	resp, err := c.do(ctx, http.MethodHead, u, nil, -1, nil)
	if err != nil {
		return false, err
	}
	defer drainClose(resp.Body)
	switch resp.StatusCode {
	case http.StatusOK:
		return true, nil
	case http.StatusNotFound:
		return false, nil
	default:
		return false, statusError(resp)
	}
}

// pushBlob uploads size bytes of body as blob dgst to repo with a monolithic upload (POST then
// PUT ?digest=), unless the registry already has it.
func (c *registryClient) pushBlob(ctx context.Context, repo string, dgst digest.Digest, size int64, body io.Reader) error {
	exists, err := c.blobExists(ctx, repo, dgst)
	if err != nil {
		return fmt.Errorf("check blob %s: %w", dgst, err)
	}
	if exists {
		c.log.Debug("blob already present", zap.String("repo", repo), zap.Stringer("digest", dgst))
		return nil
	}
	resp, err := c.do(ctx, http.MethodPost, c.endpoint("/v2/%s/blobs/uploads/", repo), nil, 0, nil)
	if err != nil {
		return fmt.Errorf("start upload of blob %s: %w", dgst, err)
	}
	if err := expectStatus(resp, http.StatusAccepted); err != nil {
		return fmt.Errorf("start upload of blob %s: %w", dgst, err)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || resp.Header.Get("Location") == "" {
		return fmt.Errorf("start upload of blob %s: %w: bad Location %q", dgst, errRegistry, resp.Header.Get("Location"))
	}
	u := c.base.ResolveReference(loc)
	q := u.Query()
	q.Set("digest", dgst.String())
	u.RawQuery = q.Encode()
	hdr := http.Header{"Content-Type": {"application/octet-stream"}}
	resp, err = c.do(ctx, http.MethodPut, u, body, size, hdr)
	if err != nil {
		return fmt.Errorf("upload blob %s: %w", dgst, err)
	}
	if err := expectStatus(resp, http.StatusCreated); err != nil {
		return fmt.Errorf("upload blob %s: %w", dgst, err)
	}
	c.log.Debug("pushed blob", zap.String("repo", repo), zap.Stringer("digest", dgst), zap.Int64("size", size))
	return nil
}

// putManifest stores manifest under repo:tag.
func (c *registryClient) putManifest(ctx context.Context, repo, tag, mediaType string, manifest []byte) error {
	u := c.endpoint("/v2/%s/manifests/%s", repo, tag)
	hdr := http.Header{"Content-Type": {mediaType}}
	resp, err := c.do(ctx, http.MethodPut, u, bytes.NewReader(manifest), int64(len(manifest)), hdr)
	if err != nil {
		return fmt.Errorf("put manifest %s:%s: %w", repo, tag, err)
	}
	if err := expectStatus(resp, http.StatusCreated); err != nil {
		return fmt.Errorf("put manifest %s:%s: %w", repo, tag, err)
	}
	return nil
}

// getManifest fetches the manifest of repo:tag and its media type.
func (c *registryClient) getManifest(ctx context.Context, repo, tag string) ([]byte, string, error) {
	u := c.endpoint("/v2/%s/manifests/%s", repo, tag)
	hdr := http.Header{"Accept": {strings.Join([]string{
		ocispec.MediaTypeImageManifest, mediaTypeDockerManifest, ocispec.MediaTypeImageIndex, mediaTypeDockerList,
	}, ", ")}}
	resp, err := c.do(ctx, http.MethodGet, u, nil, -1, hdr)
	if err != nil {
		return nil, "", fmt.Errorf("get manifest %s:%s: %w", repo, tag, err)
	}
	defer drainClose(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, "", fmt.Errorf("get manifest %s:%s: %w", repo, tag, statusError(resp))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxManifestSize+1))
	if err != nil {
		return nil, "", fmt.Errorf("read manifest %s:%s: %w", repo, tag, err)
	}
	if len(body) > maxManifestSize {
		return nil, "", fmt.Errorf("manifest %s:%s: %w (over %d bytes)", repo, tag, errTooLarge, maxManifestSize)
	}
	return body, resp.Header.Get("Content-Type"), nil
}

// do sends one request; size is the body's length (-1 when there is no body).
func (c *registryClient) do(ctx context.Context, method string, u *url.URL, body io.Reader, size int64, hdr http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("build %s %s: %w", method, u.Redacted(), err)
	}
	if size >= 0 {
		req.ContentLength = size
		if size == 0 {
			req.Body = http.NoBody
		}
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, u.Redacted(), err)
	}
	return resp, nil
}

// expectStatus closes resp's body and fails unless its status is want.
func expectStatus(resp *http.Response, want int) error {
	defer drainClose(resp.Body)
	if resp.StatusCode != want {
		return statusError(resp)
	}
	return nil
}

// statusError describes an unexpected response, quoting the start of its body.
func statusError(resp *http.Response) error {
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	return fmt.Errorf("%w: %s %s: %s: %s", errRegistry, resp.Request.Method, resp.Request.URL.Redacted(),
		resp.Status, bytes.TrimSpace(msg))
}

// drainClose reads a bounded rest of body so the connection can be reused, then closes it.
func drainClose(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, 64<<10))
	_ = body.Close()
}
