package source

import (
	"context"
	"io"
	"sync/atomic"
)

// Stats are a CountingSource's running totals.
type Stats struct {
	Requests int64 // ReadRange calls that reached the wrapped Source (n > 0)
	Bytes    int64 // bytes delivered to readers
	Errors   int64 // failed ReadRange calls plus reads that ended in an error other than io.EOF
}

// CountingSource counts the requests, bytes and errors of a Source. Put it under a Retrying
// wrapper to count every try, over it to count what callers asked for.
type CountingSource struct {
	src                   Source
	requests, bytes, errs atomic.Int64
}

// Counting wraps s.
func Counting(s Source) *CountingSource { return &CountingSource{src: s} }

// Stats returns the totals so far.
func (c *CountingSource) Stats() Stats {
	return Stats{Requests: c.requests.Load(), Bytes: c.bytes.Load(), Errors: c.errs.Load()}
}

// String is the wrapped Source's kind.
func (c *CountingSource) String() string { return c.src.String() }

// Close closes the wrapped Source.
func (c *CountingSource) Close() error { return c.src.Close() }

func (c *CountingSource) ReadRange(ctx context.Context, blobID string, off, n int64) (io.ReadCloser, error) {
	if n != 0 {
		c.requests.Add(1)
	}
	rc, err := c.src.ReadRange(ctx, blobID, off, n)
	if err != nil {
		c.errs.Add(1)
		return nil, err
	}
	return &countingReader{rc: rc, c: c}, nil
}

type countingReader struct {
	rc     io.ReadCloser
	c      *CountingSource
	failed bool
}

func (r *countingReader) Read(p []byte) (int, error) {
	n, err := r.rc.Read(p)
	r.c.bytes.Add(int64(n))
	if err != nil && err != io.EOF && !r.failed {
		r.failed = true
		r.c.errs.Add(1)
	}
	return n, err
}

func (r *countingReader) Close() error { return r.rc.Close() }
