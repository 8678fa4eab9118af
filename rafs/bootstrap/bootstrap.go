// Package bootstrap finds and decodes a RAFS bootstrap wherever users keep one: a bare bootstrap file
// (v5 or v6, sniffed), the bootstrap layer of a nydus image (a tar or tar.gz holding image/image.boot,
// nydus-snapshotter pkg/converter), or a nydus blob with an inlined bootstrap (the ToC's image.boot).
package bootstrap

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/blob"
	v5 "github.com/dfnydus/dfnydus/rafs/v5"
	v6 "github.com/dfnydus/dfnydus/rafs/v6"
	"github.com/klauspost/compress/zstd"
)

// MaxSize bounds how large a bootstrap we accept (a 1M-file image is well under this).
const MaxSize = 1 << 30

// LayerPath is where the bootstrap sits inside a nydus bootstrap layer.
const LayerPath = "image/image.boot"

// ErrNotBootstrap is returned when data is none of the accepted forms.
var ErrNotBootstrap = errors.New("not a RAFS bootstrap, bootstrap layer or blob with an inlined bootstrap")

// Decode parses a bare v5 or v6 bootstrap. A v5 image's Merkle tree is verified too: it is the
// integrity of v5 metadata, so no caller should use a v5 tree that fails it.
func Decode(data []byte) (*rafs.Image, error) {
	switch {
	case v6.IsV6(data):
		return v6.Decode(data)
	case v5.IsV5(data):
		img, err := v5.Decode(data)
		if err != nil {
			return nil, err
		}
		if err := v5.Verify(img); err != nil {
			return nil, fmt.Errorf("v5 merkle tree: %w", err)
		}
		return img, nil
	}
	return nil, ErrNotBootstrap
}

// Load reads the file at p in any accepted form and returns the bare bootstrap bytes and the image.
func Load(p string) ([]byte, *rafs.Image, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, nil, fmt.Errorf("open bootstrap: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("stat bootstrap: %w", err)
	}
	data, err := Extract(f, fi.Size())
	if err != nil {
		return nil, nil, fmt.Errorf("bootstrap %s: %w", p, err)
	}
	img, err := Decode(data)
	if err != nil {
		return nil, nil, fmt.Errorf("bootstrap %s: %w", p, err)
	}
	return data, img, nil
}

// Extract returns the bare bootstrap held by r in any accepted form.
func Extract(r io.ReaderAt, size int64) ([]byte, error) {
	head := make([]byte, 4096)
	n, err := r.ReadAt(head, 0)
	if err != nil && err != io.EOF {
		return nil, fmt.Errorf("read: %w", err)
	}
	head = head[:n]
	sr := io.NewSectionReader(r, 0, size)
	switch {
	case len(head) >= 2 && head[0] == 0x1f && head[1] == 0x8b:
		zr, err := gzip.NewReader(bufio.NewReader(sr))
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		return fromTar(zr)
	case len(head) >= 4 && bytes.Equal(head[:4], []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(bufio.NewReader(sr), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		defer zr.Close()
		return fromTar(zr)
	case isTar(head):
		return fromTar(sr)
	}
	if size >= 1024+4 && (v6.IsV6(head) || v5.IsV5(head)) {
		if size > MaxSize {
			return nil, fmt.Errorf("bootstrap of %d bytes exceeds the %d limit", size, MaxSize)
		}
		data := make([]byte, size)
		if _, err := r.ReadAt(data, 0); err != nil && err != io.EOF {
			return nil, fmt.Errorf("read: %w", err)
		}
		return data, nil
	}
	if br, err := blob.Open(r, size); err == nil && br.HasTOC() {
		data, err := br.Bootstrap()
		if err != nil {
			return nil, fmt.Errorf("blob with no inlined bootstrap: %w", err)
		}
		return data, nil
	}
	return nil, ErrNotBootstrap
}

// isTar recognises a ustar/GNU tar header.
func isTar(head []byte) bool {
	return len(head) >= 512 && (bytes.Equal(head[257:262], []byte("ustar")))
}

func fromTar(r io.Reader) ([]byte, error) {
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil, fmt.Errorf("%w: no %s in the layer", ErrNotBootstrap, LayerPath)
		}
		if err != nil {
			return nil, fmt.Errorf("read bootstrap layer: %w", err)
		}
		if hdr.Name != LayerPath && hdr.Name != "./"+LayerPath && hdr.Name != "/"+LayerPath {
			continue
		}
		if hdr.Size > MaxSize || hdr.Size < 0 {
			return nil, fmt.Errorf("%s of %d bytes exceeds the %d limit", LayerPath, hdr.Size, MaxSize)
		}
		// Grow with what the tar really holds: a header claiming 1 GiB in a tiny (or truncated)
		// layer must not cost 1 GiB up front.
		data, err := io.ReadAll(tr)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", LayerPath, err)
		}
		if int64(len(data)) != hdr.Size {
			return nil, fmt.Errorf("read %s: %d of its %d bytes: %w", LayerPath, len(data), hdr.Size, io.ErrUnexpectedEOF)
		}
		return data, nil
	}
}
