package source

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/opencontainers/go-digest"

	"github.com/dfnydus/dfnydus/registry"
)

// Registry reads blobs of one repository with HTTP Range GETs.
type Registry struct {
	c    *registry.Client
	repo registry.Ref
}

// NewRegistry returns a Source reading blob "sha256:"+id of repo (only Registry and Repository are
// used) through c. c is shared and stays open when the Source is closed; its retry options apply
// under any Retrying wrapper.
func NewRegistry(c *registry.Client, repo registry.Ref) Source {
	repo.Tag, repo.Digest = "", ""
	return &Registry{c: c, repo: repo}
}

func (r *Registry) String() string { return "registry" }

// Close does nothing: the client belongs to the caller.
func (r *Registry) Close() error { return nil }

func (r *Registry) ReadRange(ctx context.Context, blobID string, off, n int64) (io.ReadCloser, error) {
	if err := checkRead(ctx, blobID, off, n); err != nil {
		return nil, fmt.Errorf("registry %s: %w", r.repo.Context(), err)
	}
	if n == 0 {
		return emptyReader(), nil
	}
	what := func() string { return rangeString("registry "+r.repo.Context(), blobID, off, n) }
	d := digest.NewDigestFromEncoded(digest.SHA256, blobID)
	body, err := r.c.FetchBlobRange(ctx, r.repo, d, off, n)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what(), r.fix(ctx, d, off, n, err))
	}
	fix := func(err error, _ int64) error { return r.fix(ctx, d, off, n, err) }
	return newRangeReader(ctx, body, n, what, fix), nil
}

// fix maps the registry client's errors onto the package's sentinels. The client reports a range
// past the blob's end as io.ErrUnexpectedEOF, as it does a transfer cut short; a HEAD of the blob
// tells the two apart (only on this error path).
func (r *Registry) fix(ctx context.Context, d digest.Digest, off, n int64, err error) error {
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	case errors.Is(err, registry.ErrUnauthorized):
		return fmt.Errorf("%w: %w", ErrUnauthorized, err)
	case !errors.Is(err, io.ErrUnexpectedEOF) || ctx.Err() != nil:
		return err
	}
	ok, size, herr := r.c.BlobExists(ctx, r.repo, d)
	switch {
	case herr != nil:
		return err
	case !ok:
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	case size >= 0 && off+n > size:
		return fmt.Errorf("%w: the blob is %d bytes: %w", ErrRange, size, err)
	}
	return err
}
