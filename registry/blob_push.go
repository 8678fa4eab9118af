package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.uber.org/zap"

	"github.com/dfnydus/dfnydus/internal/transient"
)

// PushResult says how PushBlob made a blob present.
type PushResult struct {
	Skipped       bool  // the repository already had it
	Mounted       bool  // mounted from another repository of the same registry
	BytesUploaded int64 // request body bytes sent, including any resent after failures
}

var (
	// errSessionGone means the registry no longer knows an upload session.
	errSessionGone = errors.New("upload session gone")
	// errNoProgress means a PATCH was accepted but the session did not grow.
	errNoProgress = errors.New("upload session did not grow")
)

// PushBlob makes blob desc present in repo, reading its bytes from src only when needed:
//  1. HEAD: already there -> Skipped;
//  2. a cross-repository mount from each of mountFrom on the same registry -> Mounted;
//  3. a chunked upload: POST, PATCHes of UploadChunkSize bytes, PUT ?digest=. A failed PATCH asks
//     the session how far it got (GET, Range header) and resumes from there, or starts a new
//     session when the registry has dropped it.
//
// Errors from src are returned wrapped and are never retried.
func (c *Client) PushBlob(ctx context.Context, repo Ref, desc ocispec.Descriptor, src io.ReaderAt, mountFrom []Ref) (PushResult, error) {
	if err := checkRepo(repo); err != nil {
		return PushResult{}, err
	}
	if err := desc.Digest.Validate(); err != nil {
		return PushResult{}, fmt.Errorf("push blob %q: %w", desc.Digest, err)
	}
	if desc.Size < 0 {
		return PushResult{}, fmt.Errorf("push blob %s: size %d is unknown", desc.Digest, desc.Size)
	}
	what := repo.Context() + "@" + desc.Digest.String()
	exists, _, err := c.BlobExists(ctx, repo, desc.Digest)
	if err != nil {
		return PushResult{}, fmt.Errorf("push blob: %w", err)
	}
	if exists {
		return PushResult{Skipped: true}, nil
	}

	var session string // an upload session a refused mount left us
	for _, from := range mountFrom {
		if from.Registry != repo.Registry || from.Repository == repo.Repository || from.Repository == "" {
			continue
		}
		if session != "" {
			c.cancelUpload(ctx, repo, session)
			session = ""
		}
		loc, mounted, err := c.mount(ctx, repo, from, desc.Digest)
		if err != nil {
			if ctx.Err() != nil {
				return PushResult{}, ctx.Err()
			}
			c.log.Debug("cross-repository mount failed", zap.String("blob", what),
				zap.String("from", from.Context()), zap.Error(err))
			continue
		}
		if mounted {
			return PushResult{Mounted: true}, nil
		}
		session = loc
	}

	// Make sure the source can be read before opening (or keeping) an upload session.
	if desc.Size > 0 {
		var probe [1]byte
		if n, err := src.ReadAt(probe[:], 0); n != 1 {
			if err == nil {
				err = io.ErrUnexpectedEOF
			}
			if session != "" {
				c.cancelUpload(ctx, repo, session)
			}
			return PushResult{}, fmt.Errorf("push blob %s: read source: %w", what, err)
		}
	}
	var sent atomic.Int64
	err = c.upload(ctx, repo, desc, src, session, &sent)
	res := PushResult{BytesUploaded: sent.Load()}
	if err != nil {
		return res, fmt.Errorf("push blob %s: %w", what, err)
	}
	c.log.Debug("pushed blob", zap.String("blob", what), zap.Int64("size", desc.Size),
		zap.Int64("sent", res.BytesUploaded))
	return res, nil
}

// mount asks the registry to mount blob d from repository from into repo. It returns mounted, or
// the upload session the registry opened instead.
func (c *Client) mount(ctx context.Context, repo, from Ref, d digest.Digest) (loc string, mounted bool, err error) {
	resp, err := c.do(ctx, &request{
		method: http.MethodPost, host: repo.Registry, path: "/v2/" + repo.Repository + "/blobs/uploads/",
		query:  url.Values{"mount": {d.String()}, "from": {from.Repository}},
		scopes: []string{repoScope(repo.Repository, "pull,push"), repoScope(from.Repository, "pull")},
		// A repeated mount or upload start is harmless.
		idempotent: true,
	})
	if err != nil {
		return "", false, err
	}
	switch resp.StatusCode {
	case http.StatusCreated:
		drain(resp)
		return "", true, nil
	case http.StatusAccepted:
		drain(resp)
		loc, err := location(resp)
		return loc, false, err
	}
	return "", false, newHTTPError(repo.Registry, resp)
}

// startUpload opens an upload session and returns its URL.
func (c *Client) startUpload(ctx context.Context, repo Ref) (string, error) {
	resp, err := c.do(ctx, &request{
		method: http.MethodPost, host: repo.Registry, path: "/v2/" + repo.Repository + "/blobs/uploads/",
		scopes: pushScopes(repo), idempotent: true,
	})
	if err != nil {
		return "", fmt.Errorf("start upload: %w", err)
	}
	if resp.StatusCode != http.StatusAccepted {
		return "", fmt.Errorf("start upload: %w", newHTTPError(repo.Registry, resp))
	}
	drain(resp)
	return location(resp)
}

func pushScopes(repo Ref) []string { return []string{repoScope(repo.Repository, "pull,push")} }

// location is a response's Location, made absolute against the request URL.
func location(resp *http.Response) (string, error) {
	l := resp.Header.Get("Location")
	if l == "" {
		return "", fmt.Errorf("registry response %s to %s %s has no Location", resp.Status, resp.Request.Method, resp.Request.URL.Path)
	}
	u, err := resp.Request.URL.Parse(l)
	if err != nil {
		return "", fmt.Errorf("registry gave a bad Location %q: %w", l, err)
	}
	return u.String(), nil
}

// cancelUpload deletes an upload session we will not use (best effort).
func (c *Client) cancelUpload(ctx context.Context, repo Ref, loc string) {
	resp, err := c.do(ctx, &request{method: http.MethodDelete, host: repo.Registry, url: loc, scopes: pushScopes(repo)})
	if err == nil {
		drain(resp)
	}
}

// upload sends desc's bytes from src through session loc (a new one when loc is "") and commits it.
func (c *Client) upload(ctx context.Context, repo Ref, desc ocispec.Descriptor, src io.ReaderAt, loc string, sent *atomic.Int64) error {
	var err error
	if loc == "" {
		if loc, err = c.startUpload(ctx, repo); err != nil {
			return err
		}
	}
	var off int64
	failures := 0
	for off < desc.Size {
		n := min(c.opts.UploadChunkSize, desc.Size-off)
		newLoc, newOff, err := c.patch(ctx, repo, loc, src, off, n, sent)
		if err == nil && newOff > off {
			loc, off, failures = newLoc, newOff, 0
			continue
		}
		if err == nil {
			// Accepted but not kept: count it as a failure so this cannot loop forever.
			loc = newLoc
			err = fmt.Errorf("registry %s: %w past %d bytes", repo.Registry, errNoProgress, off)
		}
		var se *sourceError
		if errors.As(err, &se) {
			return se
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !resumable(err) {
			return err
		}
		if failures >= c.opts.Retries {
			return fmt.Errorf("giving up after %d retries: %w", failures, err)
		}
		wait := transient.Backoff(failures, c.opts.RetryBaseDelay, c.opts.RetryMaxDelay)
		failures++
		c.stats.retries.Add(1)
		c.log.Warn("blob upload interrupted; asking the registry how far it got", zap.String("repo", repo.Context()),
			zap.String("digest", desc.Digest.String()), zap.Int64("offset", off), zap.Error(err), zap.Duration("wait", wait))
		if err := c.sleep(ctx, wait); err != nil {
			return err
		}
		stLoc, stOff, err := c.uploadStatus(ctx, repo, loc, off)
		switch {
		case errors.Is(err, errSessionGone) || (err == nil && (stOff < 0 || stOff > desc.Size)):
			c.log.Warn("upload session lost; starting over", zap.String("repo", repo.Context()),
				zap.String("digest", desc.Digest.String()), zap.NamedError("reason", err))
			if loc, err = c.startUpload(ctx, repo); err != nil {
				return err
			}
			off = 0
		case err != nil:
			return err
		default:
			loc, off = stLoc, stOff
		}
	}
	return c.commitUpload(ctx, repo, desc, loc)
}

// patch sends src[off, off+n) to the session and returns the session's next URL and offset.
func (c *Client) patch(ctx context.Context, repo Ref, loc string, src io.ReaderAt, off, n int64, sent *atomic.Int64) (string, int64, error) {
	resp, err := c.do(ctx, &request{
		method: http.MethodPatch, host: repo.Registry, url: loc,
		header: http.Header{
			"Content-Type":  {"application/octet-stream"},
			"Content-Range": {fmt.Sprintf("%d-%d", off, off+n-1)},
		},
		body:   func() io.Reader { return io.NewSectionReader(src, off, n) },
		size:   n,
		scopes: pushScopes(repo),
		sent:   sent,
	})
	if err != nil {
		return "", 0, err
	}
	if resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusNoContent {
		return "", 0, newHTTPError(repo.Registry, resp)
	}
	drain(resp)
	next := off + n
	if end, ok := parseUploadRange(resp.Header.Get("Range")); ok {
		switch {
		case end+1 > next:
			return "", 0, fmt.Errorf("registry %s: upload session reports %d bytes after we sent %d", repo.Registry, end+1, next)
		case end+1 < next && !(end == 0 && next == 1):
			c.log.Warn("registry kept less of a chunk than was sent", zap.Int64("sent_to", next), zap.Int64("kept_to", end+1))
			next = end + 1
		}
	}
	newLoc := loc
	if resp.Header.Get("Location") != "" {
		if newLoc, err = location(resp); err != nil {
			return "", 0, err
		}
	}
	return newLoc, next, nil
}

// parseUploadRange parses an upload session's Range header, "0-END" (some registries write
// "bytes=0-END"), returning END.
func parseUploadRange(s string) (int64, bool) {
	s = strings.TrimPrefix(strings.TrimSpace(s), "bytes=")
	a, b, ok := strings.Cut(s, "-")
	if !ok || a != "0" {
		return 0, false
	}
	end, err := strconv.ParseInt(b, 10, 64)
	if err != nil || end < 0 {
		return 0, false
	}
	return end, true
}

// resumable reports whether a failed PATCH is worth asking the session about: network failures,
// transient statuses, and the session/range complaints a resume can fix.
func resumable(err error) bool {
	if errors.Is(err, errNoProgress) {
		return true
	}
	var he *HTTPError
	if errors.As(err, &he) {
		switch he.StatusCode {
		case http.StatusNotFound, http.StatusRequestedRangeNotSatisfiable:
			return true
		case http.StatusBadRequest:
			return he.hasCode("BLOB_UPLOAD_INVALID") || he.hasCode("BLOB_UPLOAD_UNKNOWN") || he.hasCode("RANGE_INVALID")
		}
		return transient.Status(he.StatusCode)
	}
	var ae *AuthError
	if errors.As(err, &ae) {
		return false
	}
	return retryableError(err)
}

// uploadStatus asks a session how many bytes it holds (GET, 204 with "Range: 0-END"). acked is the
// offset the registry last confirmed, which disambiguates distribution's "0-0" for an empty session.
func (c *Client) uploadStatus(ctx context.Context, repo Ref, loc string, acked int64) (string, int64, error) {
	resp, err := c.do(ctx, &request{method: http.MethodGet, host: repo.Registry, url: loc, scopes: pushScopes(repo), idempotent: true})
	if err != nil {
		return "", 0, fmt.Errorf("upload status: %w", err)
	}
	if resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusOK {
		he := newHTTPError(repo.Registry, resp)
		if he.StatusCode >= 400 && he.StatusCode < 500 {
			return "", 0, fmt.Errorf("%w: %w", errSessionGone, he)
		}
		return "", 0, fmt.Errorf("upload status: %w", he)
	}
	drain(resp)
	newLoc := loc
	if resp.Header.Get("Location") != "" {
		if newLoc, err = location(resp); err != nil {
			return "", 0, err
		}
	}
	end, ok := parseUploadRange(resp.Header.Get("Range"))
	switch {
	case !ok:
		return newLoc, 0, nil
	case end == 0 && acked == 0:
		return newLoc, 0, nil
	}
	return newLoc, end + 1, nil
}

// commitUpload finishes the session with PUT ?digest=. When the PUT fails in a way that may hide
// success (a lost response), the blob's presence decides.
func (c *Client) commitUpload(ctx context.Context, repo Ref, desc ocispec.Descriptor, loc string) error {
	resp, err := c.do(ctx, &request{
		method: http.MethodPut, host: repo.Registry, url: loc,
		query: url.Values{"digest": {desc.Digest.String()}},
		body:  func() io.Reader { return strings.NewReader("") }, size: 0,
		scopes: pushScopes(repo), idempotent: true,
	})
	if err == nil && (resp.StatusCode == http.StatusCreated || resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusAccepted) {
		drain(resp)
		return nil
	}
	var failure error
	if err != nil {
		failure = fmt.Errorf("commit upload: %w", err)
	} else {
		he := newHTTPError(repo.Registry, resp)
		if he.hasCode("DIGEST_INVALID") || he.hasCode("SIZE_INVALID") {
			return fmt.Errorf("commit upload: registry says the uploaded bytes do not match %s (%d bytes): %w: %w",
				desc.Digest, desc.Size, ErrDigestMismatch, he)
		}
		failure = fmt.Errorf("commit upload: %w", he)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if ok, _, herr := c.BlobExists(ctx, repo, desc.Digest); herr == nil && ok {
		c.log.Debug("blob present despite a failed commit", zap.String("digest", desc.Digest.String()), zap.Error(failure))
		return nil
	}
	return failure
}
