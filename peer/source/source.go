package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Source reads ranges of blobs, named by blob id (hex sha256 of the blob file). It is safe for
// concurrent use.
type Source interface {
	// ReadRange returns a reader of bytes [off, off+n) of the blob: exactly n bytes and then
	// io.EOF, or an error. Errors may come from ReadRange or from Read (a transfer that breaks
	// midway). The reader stops with ctx's error once ctx is done; the caller must Close it.
	// n == 0 yields an empty reader without any I/O (it does not check that the blob exists).
	ReadRange(ctx context.Context, blobID string, off, n int64) (io.ReadCloser, error)
	// String names the kind of source ("registry", "s3", "local"): a bounded value for logs and
	// metric labels.
	String() string
	// Close releases what the Source holds (idle connections); shared clients passed in stay open.
	Close() error
}

var (
	// ErrNotFound is wrapped when the blob is missing at the source.
	ErrNotFound = errors.New("blob not found")
	// ErrRange is wrapped when a range starts before 0 or runs past the end of the blob.
	ErrRange = errors.New("range outside the blob")
	// ErrInvalidBlobID is wrapped when a blob id is not 64 lowercase hex digits; such an id never
	// reaches a path or a URL.
	ErrInvalidBlobID = errors.New("invalid blob id")
	// ErrUnauthorized is wrapped when the source refuses our credentials (or wants some).
	ErrUnauthorized = errors.New("access denied")
)

// blobIDLen is the length of a hex sha256.
const blobIDLen = 64

// ValidateBlobID reports whether id is a blob id: 64 lowercase hex digits. The error wraps
// ErrInvalidBlobID.
func ValidateBlobID(id string) error {
	if len(id) != blobIDLen {
		return fmt.Errorf("%w %q: want %d lowercase hex digits, have %d characters", ErrInvalidBlobID,
			truncate(id, 80), blobIDLen, len(id))
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return fmt.Errorf("%w %q: character %d is not lowercase hex", ErrInvalidBlobID, id, i)
		}
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "?") + "..."
}

// checkRead validates the arguments every ReadRange takes.
func checkRead(ctx context.Context, blobID string, off, n int64) error {
	if err := ValidateBlobID(blobID); err != nil {
		return err
	}
	if off < 0 || n < 0 || off > (1<<62)-n {
		return fmt.Errorf("blob %s: %w: offset %d length %d", blobID, ErrRange, off, n)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("blob %s: %w", blobID, err)
	}
	return nil
}

// emptyReader is what a zero-length read returns.
func emptyReader() io.ReadCloser { return io.NopCloser(strings.NewReader("")) }

// rangeReader enforces the ReadRange contract over a source's body: at most n bytes are read,
// fewer is io.ErrUnexpectedEOF, a done context stops reading, and other errors go through fix
// (which maps them onto the package's sentinels) and are wrapped with what was being read.
type rangeReader struct {
	ctx  context.Context
	body io.ReadCloser
	left int64
	what func() string
	fix  func(err error, done int64) error // nil: errors unchanged
	done int64
	err  error // sticky
}

func newRangeReader(ctx context.Context, body io.ReadCloser, n int64, what func() string, fix func(error, int64) error) *rangeReader {
	return &rangeReader{ctx: ctx, body: body, left: n, what: what, fix: fix}
}

func (r *rangeReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if r.left == 0 {
		return 0, io.EOF
	}
	if err := r.ctx.Err(); err != nil {
		r.err = fmt.Errorf("%s: after %d bytes: %w", r.what(), r.done, err)
		return 0, r.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.body.Read(p)
	r.left -= int64(n)
	r.done += int64(n)
	switch {
	case err == nil || (err == io.EOF && r.left == 0):
		return n, nil
	case r.ctx.Err() != nil:
		// The transport reports a cancelled request in its own words; say why.
		r.err = fmt.Errorf("%s: after %d bytes: %w (%v)", r.what(), r.done, r.ctx.Err(), err)
	case err == io.EOF:
		r.err = fmt.Errorf("%s: body ended after %d bytes, %d short: %w", r.what(), r.done, r.left, io.ErrUnexpectedEOF)
		if r.fix != nil {
			r.err = r.fix(r.err, r.done)
		}
	default:
		if r.fix != nil {
			err = r.fix(err, r.done)
		}
		r.err = fmt.Errorf("%s: after %d bytes: %w", r.what(), r.done, err)
	}
	return n, r.err
}

func (r *rangeReader) Close() error { return r.body.Close() }

// rangeString describes a read for errors: "blob ID bytes OFF-END".
func rangeString(kind, blobID string, off, n int64) string {
	return fmt.Sprintf("%s: blob %s bytes %d-%d", kind, blobID, off, off+n-1)
}

// ReadFull reads exactly n bytes at off of a blob from s.
func ReadFull(ctx context.Context, s Source, blobID string, off, n int64) ([]byte, error) {
	rc, err := s.ReadRange(ctx, blobID, off, n)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	buf := make([]byte, n)
	if _, err := io.ReadFull(rc, buf); err != nil {
		return nil, err
	}
	return buf, nil
}

// BytesAt serves bytes fetched at blob offset Base as if they were the blob file (an io.ReaderAt
// for rafs/blob.ReadChunk).
type BytesAt struct {
	Data []byte
	Base int64
}

func (b BytesAt) ReadAt(p []byte, off int64) (int, error) {
	off -= b.Base
	if off < 0 || off > int64(len(b.Data)) {
		return 0, fmt.Errorf("read at %d outside the fetched range", off+b.Base)
	}
	n := copy(p, b.Data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Filler is a Source that brings ranges of a blob into the node itself rather than handing bytes
// to the caller: the P2P layer, which fetches whole pieces from other peers (or ranges from the
// source) and passes every byte through the blob's verification point. Fill returns once
// [off, off+n) is verified in the node's store, or with the reason it is not.
type Filler interface {
	// Fills reports whether Fill handles blobID; ReadRange serves the others.
	Fills(blobID string) bool
	Fill(ctx context.Context, blobID string, off, n int64) error
}
