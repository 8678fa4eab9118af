package convert

import (
	"io"
	"sync/atomic"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// progressReader reports a source layer's bytes as the builder reads them.
func (cv *converter) progressReader(rc io.ReadCloser, l ocispec.Descriptor) io.ReadCloser {
	if cv.opts.Progress == nil {
		return rc
	}
	return &countingReader{rc: rc, report: func(n int64, done bool) {
		cv.event(Event{Phase: "build", Layer: l.Digest.String(), Done: n, Total: l.Size, Finished: done})
	}}
}

type countingReader struct {
	rc     io.ReadCloser
	n      int64
	report func(int64, bool)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.rc.Read(p)
	c.n += int64(n)
	c.report(c.n, err == io.EOF)
	return n, err
}

func (c *countingReader) Close() error { return c.rc.Close() }

// progressReaderAt reports a blob's upload as the registry client reads it.
func (cv *converter) progressReaderAt(r io.ReaderAt, id string, size int64) io.ReaderAt {
	if cv.opts.Progress == nil {
		return r
	}
	return &countingReaderAt{r: r, report: func(n int64) {
		cv.event(Event{Phase: "push", Layer: id, Done: n, Total: size})
	}}
}

type countingReaderAt struct {
	r      io.ReaderAt
	n      atomic.Int64
	report func(int64)
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.report(c.n.Add(int64(n)))
	return n, err
}
