package builder

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"github.com/dfnydus/dfnydus/rafs"
	"github.com/klauspost/compress/zstd"
)

// entry is one filesystem object from a source, in the order a tar stream would carry it: parents
// before children. Whiteouts (.wh.NAME, .wh..wh..opq) arrive as ordinary entries and are applied by
// the tree.
type entry struct {
	path      string // cleaned, absolute
	mode      uint32 // stat(2) mode: S_IFMT type | special bits | permissions
	uid, gid  uint32
	size      int64 // regular files
	mtime     uint64
	mtimeNsec uint32
	symlink   string // symlink target
	hardlink  string // absolute path of an earlier entry this one is a hard link to
	rdev      uint64
	xattrs    []rafs.Xattr
	data      io.Reader // regular files: exactly size bytes
}

// source yields entries until io.EOF.
type source interface {
	next() (*entry, error)
	Close() error
}

// openSource opens a directory, or a tar file that is plain, gzip or zstd compressed (sniffed).
func openSource(p string) (source, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return nil, fmt.Errorf("open source: %w", err)
	}
	if fi.IsDir() {
		return newDirSource(p)
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("open source: %w", err)
	}
	r, err := decompressStream(bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("source %s: %w", p, err)
	}
	return newTarSource(r, f), nil
}

// decompressStream sniffs gzip or zstd magic and wraps r accordingly; anything else is passed through.
func decompressStream(r *bufio.Reader) (io.Reader, error) {
	magic, _ := r.Peek(4)
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("gzip layer: %w", err)
		}
		return zr, nil
	case bytes.Equal(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("zstd layer: %w", err)
		}
		return zr.IOReadCloser(), nil
	}
	return r, nil
}

// cleanPath maps any archive name onto an absolute path inside the image: "../" cannot climb above
// the root, as container runtimes resolve layer paths.
func cleanPath(name string) (string, error) {
	if strings.IndexByte(name, 0) >= 0 {
		return "", fmt.Errorf("entry name %q contains NUL", name)
	}
	return path.Clean("/" + name), nil
}
