package registry

import (
	"context"
	"fmt"
	"hash"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.uber.org/zap"

	"github.com/dfnydus/dfnydus/internal/transient"
)

func blobPath(repo Ref, d digest.Digest) string {
	return "/v2/" + repo.Repository + "/blobs/" + d.String()
}

func checkRepo(repo Ref) error {
	if repo.Registry == "" || repo.Repository == "" {
		return fmt.Errorf("repository %q: registry and repository are required", repo.Context())
	}
	return nil
}

// BlobExists asks (HEAD) whether repo has blob d, and its size when it does.
func (c *Client) BlobExists(ctx context.Context, repo Ref, d digest.Digest) (bool, int64, error) {
	if err := checkRepo(repo); err != nil {
		return false, 0, err
	}
	if err := d.Validate(); err != nil {
		return false, 0, fmt.Errorf("blob exists %q: %w", d, err)
	}
	resp, err := c.do(ctx, &request{
		method: http.MethodHead, host: repo.Registry, path: blobPath(repo, d),
		scopes: []string{repoScope(repo.Repository, "pull")}, idempotent: true,
	})
	if err != nil {
		return false, 0, fmt.Errorf("blob exists %s@%s: %w", repo.Context(), d, err)
	}
	drain(resp)
	switch resp.StatusCode {
	case http.StatusOK:
		return true, resp.ContentLength, nil
	case http.StatusNotFound:
		return false, 0, nil
	}
	return false, 0, fmt.Errorf("blob exists %s@%s: %w", repo.Context(), d, &HTTPError{Registry: repo.Registry,
		Method: http.MethodHead, Path: resp.Request.URL.Path, StatusCode: resp.StatusCode, Status: resp.Status})
}

// FetchBlob streams the blob desc names. The reader checks what it delivers against desc: more bytes
// than desc.Size fail at once, and at the end a short blob or a wrong digest makes Read return an
// error wrapping ErrDigestMismatch instead of io.EOF. (desc.Size < 0 skips the size check.)
// Interrupted transfers are resumed with Range requests, up to the Client's retry budget.
func (c *Client) FetchBlob(ctx context.Context, repo Ref, desc ocispec.Descriptor) (io.ReadCloser, error) {
	if err := checkRepo(repo); err != nil {
		return nil, err
	}
	if err := desc.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("fetch blob %q: %w", desc.Digest, err)
	}
	br := &blobReader{c: c, ctx: ctx, repo: repo, dgst: desc.Digest, end: -1, wantSize: desc.Size}
	if err := br.open(); err != nil {
		return nil, err
	}
	return &verifyReader{r: br, desc: desc, hash: desc.Digest.Algorithm().Hash(), what: repo.Context() + "@" + desc.Digest.String()}, nil
}

// FetchBlobRange streams bytes [off, off+n) of blob d with a Range request; a registry that answers
// with the whole blob (200) is read from off. Fewer than n bytes is an error, never a short success.
// The bytes are not verified (a range cannot be hashed against the blob's digest).
func (c *Client) FetchBlobRange(ctx context.Context, repo Ref, d digest.Digest, off, n int64) (io.ReadCloser, error) {
	if err := checkRepo(repo); err != nil {
		return nil, err
	}
	if err := d.Validate(); err != nil {
		return nil, fmt.Errorf("fetch blob range %q: %w", d, err)
	}
	if off < 0 || n < 0 || off > (1<<62)-n {
		return nil, fmt.Errorf("fetch blob range %s: bad range offset %d length %d", d, off, n)
	}
	if n == 0 {
		return io.NopCloser(strings.NewReader("")), nil
	}
	br := &blobReader{c: c, ctx: ctx, repo: repo, dgst: d, off: off, end: off + n, wantSize: -1}
	if err := br.open(); err != nil {
		return nil, err
	}
	return br, nil
}

// blobReader reads blob bytes from off up to end (or to the blob's end when end < 0), reopening
// the transfer at the current offset when it breaks.
type blobReader struct {
	c        *Client
	ctx      context.Context
	repo     Ref
	dgst     digest.Digest
	off, end int64
	wantSize int64 // the descriptor's size, checked against Content-Length; -1 unknown

	body     io.ReadCloser
	full     bool  // body is a 200 response: the whole blob, so its end is the blob's end
	total    int64 // the blob's size when a response told us; -1 unknown
	failures int   // consecutive failures without progress
	err      error // sticky
}

func (b *blobReader) what() string { return b.repo.Context() + "@" + b.dgst.String() }

// open requests the bytes from b.off on and positions the body there.
func (b *blobReader) open() error {
	hdr := http.Header{}
	switch {
	case b.end >= 0:
		hdr.Set("Range", fmt.Sprintf("bytes=%d-%d", b.off, b.end-1))
	case b.off > 0:
		hdr.Set("Range", fmt.Sprintf("bytes=%d-", b.off))
	}
	resp, err := b.c.do(b.ctx, &request{
		method: http.MethodGet, host: b.repo.Registry, path: blobPath(b.repo, b.dgst), header: hdr,
		scopes: []string{repoScope(b.repo.Repository, "pull")}, idempotent: true,
	})
	if err != nil {
		return fmt.Errorf("fetch blob %s: %w", b.what(), err)
	}
	b.total = -1
	switch resp.StatusCode {
	case http.StatusOK:
		b.total = resp.ContentLength
		if b.wantSize >= 0 && resp.ContentLength >= 0 && resp.ContentLength != b.wantSize {
			resp.Body.Close()
			return fmt.Errorf("fetch blob %s: %w: registry sends %d bytes, descriptor says %d",
				b.what(), ErrDigestMismatch, resp.ContentLength, b.wantSize)
		}
		if b.off > 0 {
			// No range support: skip to where we are.
			if n, err := io.CopyN(io.Discard, resp.Body, b.off); err != nil {
				resp.Body.Close()
				if err == io.EOF {
					return fmt.Errorf("fetch blob %s: short read: blob is %d bytes, wanted bytes from %d: %w",
						b.what(), n, b.off, io.ErrUnexpectedEOF)
				}
				return fmt.Errorf("fetch blob %s: skip to offset %d of a full response: %w", b.what(), b.off, err)
			}
		}
	case http.StatusPartialContent:
		start, total, ok := ParseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != b.off {
			resp.Body.Close()
			return fmt.Errorf("fetch blob %s: asked for bytes from %d, got Content-Range %q",
				b.what(), b.off, resp.Header.Get("Content-Range"))
		}
		b.total = total
	case http.StatusRequestedRangeNotSatisfiable:
		resp.Body.Close()
		return fmt.Errorf("fetch blob %s: range from %d not satisfiable (blob is shorter; Content-Range %q): %w",
			b.what(), b.off, resp.Header.Get("Content-Range"), io.ErrUnexpectedEOF)
	default:
		return fmt.Errorf("fetch blob %s: %w", b.what(), newHTTPError(b.repo.Registry, resp))
	}
	b.body = resp.Body
	b.full = resp.StatusCode == http.StatusOK
	return nil
}

// ParseContentRange parses a Content-Range header "bytes START-END/TOTAL" (TOTAL may be "*": -1).
func ParseContentRange(s string) (start, total int64, ok bool) {
	s, found := strings.CutPrefix(strings.TrimSpace(s), "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, tot, found := strings.Cut(s, "/")
	if !found {
		return 0, 0, false
	}
	a, b, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, false
	}
	start, err1 := strconv.ParseInt(a, 10, 64)
	end, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || start < 0 || end < start {
		return 0, 0, false
	}
	total = -1
	if tot != "*" {
		t, err := strconv.ParseInt(tot, 10, 64)
		if err != nil || t <= end {
			return 0, 0, false
		}
		total = t
	}
	return start, total, true
}

func (b *blobReader) Read(p []byte) (int, error) {
	for {
		if b.err != nil {
			return 0, b.err
		}
		if b.end >= 0 && b.off >= b.end {
			return 0, io.EOF
		}
		if len(p) == 0 {
			return 0, nil
		}
		if b.body == nil {
			// open's request has had its own retries; a failure here is final.
			if err := b.open(); err != nil {
				b.err = err
				return 0, err
			}
		}
		buf := p
		if b.end >= 0 && int64(len(buf)) > b.end-b.off {
			buf = buf[:b.end-b.off]
		}
		n, err := b.body.Read(buf)
		b.off += int64(n)
		if n > 0 {
			b.failures = 0
		}
		switch {
		case err == nil:
			return n, nil
		case err == io.EOF:
			b.body.Close()
			b.body = nil
			if b.end < 0 || b.off >= b.end {
				if b.end >= 0 {
					return n, nil
				}
				b.err = io.EOF
				return n, io.EOF
			}
			// The response ended before our range did: the blob is short when the response was
			// the whole blob or reached the blob's known end; else the registry sent a partial range.
			if b.full || (b.total >= 0 && b.off >= b.total) {
				b.err = fmt.Errorf("fetch blob %s: short read: blob is %d bytes, wanted bytes up to %d: %w",
					b.what(), b.off, b.end, io.ErrUnexpectedEOF)
				return n, b.err
			}
			if n > 0 {
				return n, nil
			}
			if !b.failed(io.ErrUnexpectedEOF) {
				return 0, b.err
			}
		default:
			b.body.Close()
			b.body = nil
			if b.ctx.Err() != nil || !retryableError(err) || !b.failed(err) {
				if b.err == nil {
					b.err = fmt.Errorf("fetch blob %s at offset %d: %w", b.what(), b.off, unwrapURLError(err))
				}
				return n, b.err
			}
			if n > 0 {
				return n, nil
			}
		}
	}
}

// failed records a failure without progress; it waits and reports true when another try is allowed,
// else sets the sticky error and reports false.
func (b *blobReader) failed(err error) bool {
	if b.failures >= b.c.opts.Retries {
		b.err = fmt.Errorf("fetch blob %s at offset %d: giving up after %d retries: %w", b.what(), b.off, b.failures, err)
		return false
	}
	wait := transient.Backoff(b.failures, b.c.opts.RetryBaseDelay, b.c.opts.RetryMaxDelay)
	b.failures++
	b.c.stats.retries.Add(1)
	b.c.log.Warn("blob transfer interrupted; resuming", zap.String("blob", b.what()),
		zap.Int64("offset", b.off), zap.Error(err), zap.Duration("wait", wait))
	if serr := b.c.sleep(b.ctx, wait); serr != nil {
		b.err = serr
		return false
	}
	return true
}

func (b *blobReader) Close() error {
	if b.body != nil {
		err := b.body.Close()
		b.body = nil
		return err
	}
	return nil
}

// verifyReader checks a blob's length and digest as it is read.
type verifyReader struct {
	r    io.ReadCloser
	desc ocispec.Descriptor
	hash hash.Hash
	what string
	n    int64
	err  error
}

func (v *verifyReader) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	n, err := v.r.Read(p)
	if n > 0 {
		if v.desc.Size >= 0 && v.n+int64(n) > v.desc.Size {
			v.err = fmt.Errorf("blob %s: %w: more than the %d bytes the descriptor says", v.what, ErrDigestMismatch, v.desc.Size)
			return 0, v.err
		}
		v.n += int64(n)
		v.hash.Write(p[:n])
	}
	if err == io.EOF {
		if v.desc.Size >= 0 && v.n != v.desc.Size {
			v.err = fmt.Errorf("blob %s: %w: got %d bytes, descriptor says %d", v.what, ErrDigestMismatch, v.n, v.desc.Size)
			return n, v.err
		}
		if got := digest.NewDigest(v.desc.Digest.Algorithm(), v.hash); got != v.desc.Digest {
			v.err = fmt.Errorf("blob %s: %w: content hashes to %s", v.what, ErrDigestMismatch, got)
			return n, v.err
		}
		v.err = io.EOF
	} else if err != nil {
		v.err = err
	}
	return n, err
}

func (v *verifyReader) Close() error { return v.r.Close() }
