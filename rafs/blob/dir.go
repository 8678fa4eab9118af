package blob

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/dfnydus/dfnydus/rafs"
)

// Dir serves chunks from a local directory of blob files, each named by its blob id. It opens
// each blob file once and is safe for concurrent use; Close releases the files.
type Dir struct {
	path string

	mu     sync.Mutex
	files  map[string]*os.File
	closed bool
}

var _ rafs.ChunkReader = (*Dir)(nil)

// NewDir returns a Dir reading blob files from path. Nothing is opened until a chunk is read.
func NewDir(path string) *Dir {
	return &Dir{path: path, files: make(map[string]*os.File)}
}

// ValidID reports whether id has the form of a blob id: 64 lowercase hex digits. Dir refuses
// other ids, which also keeps them from naming paths outside the directory.
func ValidID(id string) bool {
	if len(id) != 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// file returns the open blob file for id.
func (d *Dir) file(id string) (*os.File, error) {
	if !ValidID(id) {
		return nil, fmt.Errorf("blob dir: %q is not a blob id", id)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, errors.New("blob dir: closed")
	}
	if f, ok := d.files[id]; ok {
		return f, nil
	}
	f, err := os.Open(filepath.Join(d.path, id))
	if err != nil {
		return nil, fmt.Errorf("blob dir: %w", err)
	}
	d.files[id] = f
	return f, nil
}

// ReadChunk returns the verified, uncompressed bytes of chunk c of blob b (see ReadChunk).
func (d *Dir) ReadChunk(ctx context.Context, b *rafs.Blob, c *rafs.Chunk, buf []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, err := d.file(b.ID)
	if err != nil {
		return nil, err
	}
	return ReadChunk(f, b.ID, c, b.Compressor, b.Digester, buf)
}

// Close closes every blob file opened so far; later reads fail.
func (d *Dir) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	var errs []error
	for id, f := range d.files {
		if err := f.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close blob %s: %w", id, err))
		}
		delete(d.files, id)
	}
	return errors.Join(errs...)
}
