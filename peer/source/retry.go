package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7"
	"go.uber.org/zap"

	"github.com/dfnydus/dfnydus/internal/transient"
)

// RetryOptions configure NewRetrying.
type RetryOptions struct {
	// Attempts bounds the tries of one ReadRange: the first request plus at most Attempts-1
	// retries, whether a failure came before the body or in the middle of it. Below 1 means 1.
	Attempts int
	// Base is the backoff before the first retry; it doubles for each further one, up to Max,
	// with jitter (a random point in the upper half). 0 means 100ms; Max 0 means 10s.
	Base, Max time.Duration
	// Logger gets a warning for each retry; nil means none.
	Logger *zap.Logger
}

// RetryingSource retries a Source's transient failures with exponential backoff and jitter. A
// transfer that breaks midway is resumed: the retry asks only for the bytes not yet delivered.
type RetryingSource struct {
	src     Source
	opts    RetryOptions
	log     *zap.Logger
	retries atomic.Int64
	// sleep waits between tries; tests may replace it.
	sleep func(ctx context.Context, d time.Duration) error
}

// Retrying wraps s: each ReadRange gets up to attempts tries, the first retry after about base.
// Transient failures are retried (see Transient); a missing blob, a bad range or id, refused
// credentials and a done context are not. The result is a *RetryingSource.
func Retrying(s Source, attempts int, base time.Duration) Source {
	return NewRetrying(s, RetryOptions{Attempts: attempts, Base: base})
}

// NewRetrying is Retrying with all options.
func NewRetrying(s Source, opts RetryOptions) *RetryingSource {
	if opts.Attempts < 1 {
		opts.Attempts = 1
	}
	if opts.Base <= 0 {
		opts.Base = 100 * time.Millisecond
	}
	if opts.Max <= 0 {
		opts.Max = 10 * time.Second
	}
	if opts.Max < opts.Base {
		opts.Max = opts.Base
	}
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	return &RetryingSource{src: s, opts: opts, log: log, sleep: transient.Sleep}
}

// Retries is how many retries have been made so far.
func (r *RetryingSource) Retries() int64 { return r.retries.Load() }

// String is the wrapped Source's kind.
func (r *RetryingSource) String() string { return r.src.String() }

// Close closes the wrapped Source.
func (r *RetryingSource) Close() error { return r.src.Close() }

func (r *RetryingSource) ReadRange(ctx context.Context, blobID string, off, n int64) (io.ReadCloser, error) {
	if err := checkRead(ctx, blobID, off, n); err != nil {
		return nil, fmt.Errorf("%s: %w", r.src, err)
	}
	if n == 0 {
		return emptyReader(), nil
	}
	rr := &retryReader{r: r, ctx: ctx, id: blobID, off: off, end: off + n}
	if err := rr.open(); err != nil {
		return nil, err
	}
	return rr, nil
}

// retryReader reads [off, end) and reopens the rest of the range after a transient failure.
type retryReader struct {
	r       *RetryingSource
	ctx     context.Context
	id      string
	off     int64 // next byte to deliver
	end     int64
	tries   int // requests made so far
	body    io.ReadCloser
	lastErr error
	err     error // sticky
}

// open requests [off, end), retrying transient failures while tries remain.
func (rr *retryReader) open() error {
	for {
		rr.tries++
		body, err := rr.r.src.ReadRange(rr.ctx, rr.id, rr.off, rr.end-rr.off)
		if err == nil {
			rr.body = body
			return nil
		}
		if !rr.again(err) {
			return rr.err
		}
	}
}

// again decides after a failure: it waits and reports true when another try is due, else it sets
// the sticky error and reports false.
func (rr *retryReader) again(err error) bool {
	if rr.ctx.Err() != nil || !Transient(err) {
		rr.err = err
		return false
	}
	if rr.tries >= rr.r.opts.Attempts {
		if rr.tries > 1 {
			err = fmt.Errorf("giving up after %d tries: %w", rr.tries, err)
		}
		rr.err = err
		return false
	}
	wait := transient.Backoff(rr.tries-1, rr.r.opts.Base, rr.r.opts.Max)
	rr.r.retries.Add(1)
	rr.r.log.Warn("source read failed; retrying", zap.String("source", rr.r.src.String()),
		zap.String("blob", rr.id), zap.Int64("offset", rr.off), zap.Int64("left", rr.end-rr.off),
		zap.Int("try", rr.tries), zap.Duration("wait", wait), zap.Error(err))
	if serr := rr.r.sleep(rr.ctx, wait); serr != nil {
		rr.err = fmt.Errorf("%s: blob %s: waiting to retry (%v): %w", rr.r.src, rr.id, err, serr)
		return false
	}
	return true
}

func (rr *retryReader) Read(p []byte) (int, error) {
	for {
		if rr.err != nil {
			return 0, rr.err
		}
		if rr.off >= rr.end {
			return 0, io.EOF
		}
		if rr.body == nil {
			if err := rr.open(); err != nil {
				return 0, err
			}
		}
		n, err := rr.body.Read(p)
		rr.off += int64(n)
		if err == io.EOF {
			if rr.off < rr.end { // a Source broke its contract; do not loop on it
				rr.err = fmt.Errorf("%s: blob %s: body ended at %d before %d: %w", rr.r.src, rr.id, rr.off, rr.end, io.ErrUnexpectedEOF)
				return n, rr.err
			}
			return n, io.EOF
		}
		if err == nil {
			return n, nil
		}
		rr.body.Close()
		rr.body = nil
		if !rr.again(err) {
			return n, rr.err
		}
		if n > 0 {
			return n, nil
		}
	}
}

func (rr *retryReader) Close() error {
	if rr.body == nil {
		return nil
	}
	err := rr.body.Close()
	rr.body = nil
	return err
}

// Transient reports whether err is worth retrying: what transient.Is says, with the S3 status
// codes minio reports judged like HTTP statuses, and never for a missing blob, a bad range or blob
// id, or refused credentials, whatever their cause (a range refused by a body cut short is still a
// bad range).
func Transient(err error) bool {
	switch {
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrRange), errors.Is(err, ErrInvalidBlobID),
		errors.Is(err, ErrUnauthorized):
		return false
	}
	if er, ok := errors.AsType[minio.ErrorResponse](err); ok && er.StatusCode != 0 {
		return transient.Status(er.StatusCode)
	}
	return transient.Is(err)
}
