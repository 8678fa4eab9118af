package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// Local reads blobs from files dir/<id>: a local blob directory (what the builder writes) or a NAS
// mount of one.
type Local struct {
	dir string
}

// NewLocal returns a Source over the blob files in dir. The directory is not checked here; a
// missing one makes every read fail with ErrNotFound.
func NewLocal(dir string) Source { return &Local{dir: dir} }

func (l *Local) String() string { return "local" }

// Close does nothing: a Local holds no open files between reads.
func (l *Local) Close() error { return nil }

// ReadRange opens the blob file, checks the range against its size and reads it with pread.
func (l *Local) ReadRange(ctx context.Context, blobID string, off, n int64) (io.ReadCloser, error) {
	if err := checkRead(ctx, blobID, off, n); err != nil {
		return nil, fmt.Errorf("local: %w", err)
	}
	if n == 0 {
		return emptyReader(), nil
	}
	what := func() string { return rangeString("local "+l.dir, blobID, off, n) }
	// blobID is validated hex: the name cannot leave dir.
	f, err := os.Open(filepath.Join(l.dir, blobID))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s: %w: %w", what(), ErrNotFound, err)
		}
		return nil, fmt.Errorf("%s: %w", what(), err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", what(), err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s: %w: %s is not a regular file", what(), ErrNotFound, f.Name())
	}
	if off+n > fi.Size() {
		f.Close()
		return nil, fmt.Errorf("%s: %w: the blob is %d bytes", what(), ErrRange, fi.Size())
	}
	body := &fileBody{SectionReader: io.NewSectionReader(f, off, n), f: f}
	return newRangeReader(ctx, body, n, what, nil), nil
}

// fileBody reads a section of a file and closes the file.
type fileBody struct {
	*io.SectionReader
	f *os.File
}

func (b *fileBody) Close() error { return b.f.Close() }
