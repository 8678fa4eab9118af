// Package bootstrap finds and decodes a RAFS bootstrap wherever users keep one: a bare bootstrap file
// (v5 or v6, sniffed), the bootstrap layer of a nydus image (a tar, tar.gz or tar.zst holding
// image/image.boot, nydus-snapshotter pkg/converter), or a nydus blob with an inlined bootstrap
// (the ToC's image.boot, or an image.boot tar header at the blob's tail). Compressed layers are
// decoded within bounds set by their size, so hostile input costs time and memory in proportion
// to its size or a fixed cap.
package bootstrap

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

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
	// Before the magics decide: a v6 bootstrap cut within its superblock no longer passes IsV6.
	if err := v6.Truncated(data); err != nil {
		return nil, err
	}
	if err := v5.Truncated(data); err != nil {
		return nil, err
	}
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
//
// When p is a blob that inlines the bootstrap, the blob entry that names it the way
// nydus-image --blob-inline-meta does (feature INLINED_FS_META, by a placeholder id and its size
// before the bootstrap) is given p's id, size and ToC, as nydusd does when it loads such a blob
// (rafs/src/metadata/mod.rs load_from_file, builder/src/core/context.rs BlobContext::from). The
// id is p's name without extensions when that is a blob id (nydusd's rule), else the sha256 of p.
// The bytes returned are the bootstrap as stored.
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
	data, br, err := extract(f, fi.Size())
	if err != nil {
		return nil, nil, fmt.Errorf("bootstrap %s: %w", p, err)
	}
	img, err := Decode(data)
	if err != nil {
		return nil, nil, fmt.Errorf("bootstrap %s: %w", p, err)
	}
	if br != nil {
		if err := adoptContainer(img, p, f, br); err != nil {
			return nil, nil, fmt.Errorf("bootstrap %s: %w", p, err)
		}
	}
	return data, img, nil
}

// adoptContainer gives the blob entries that stand for the blob the bootstrap was inlined in
// (br, the file f at p) that blob's id, size and ToC. They are those with INLINED_FS_META and, as
// nydusd also takes them for the container (set_blob_id_from_meta_path), one without
// CAP_TAR_TOC: bootstraps inlined by nydus-image builds from before the feature bits existed
// name their blob by an id that is not the file's sha256. Only a sole blob is taken for the container
// that way, as such builds had one, so a multi-blob image never has two entries renamed alike.
func adoptContainer(img *rafs.Image, p string, f io.ReaderAt, br *blob.Reader) error {
	var self []*rafs.Blob
	for _, b := range img.Blobs {
		if b.Features&rafs.BlobFeatureInlinedFSMeta != 0 ||
			(len(img.Blobs) == 1 && b.Features&rafs.BlobFeatureCapTarTOC == 0) {
			self = append(self, b)
		}
	}
	if len(self) == 0 {
		return nil
	}
	id, err := containerID(p, f, br.Size())
	if err != nil {
		return err
	}
	for _, b := range self {
		b.ID, b.CompressedSize = id, uint64(br.Size())
		b.TOCSize, b.TOCDigest = br.TOCSize(), br.TOCDigest()
	}
	return nil
}

// containerID is the id of the blob file f at p: its name without extensions when that is a
// blob id (rafs/src/metadata/mod.rs set_blob_id_from_meta_path), else its sha256.
func containerID(p string, f io.ReaderAt, size int64) (string, error) {
	name, _, _ := strings.Cut(filepath.Base(p), ".")
	if isBlobID(name) {
		return name, nil
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, size)); err != nil {
		return "", fmt.Errorf("hash blob to name it: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// isBlobID reports whether s is a blob id: 64 lower-case hex digits (a sha256).
func isBlobID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// Extract returns the bare bootstrap held by r in any accepted form.
//
// A blob is recognised by its tail before anything is sniffed at offset 0: its first bytes are
// chunk data, which nydus-image compresses with zstd by default, so a blob with an inlined
// bootstrap usually starts with the zstd magic of a compressed tar.
func Extract(r io.ReaderAt, size int64) ([]byte, error) {
	data, _, err := extract(r, size)
	return data, err
}

// extract is Extract that also returns the blob the bootstrap was inlined in, if it was.
func extract(r io.ReaderAt, size int64) ([]byte, *blob.Reader, error) {
	if data, br, ok, err := fromBlob(r, size); ok {
		return data, br, err
	}
	data, err := layerOrBare(r, size)
	return data, nil, err
}

// layerOrBare returns the bootstrap of a bootstrap layer (tar, tar.gz, tar.zst) or a bare
// bootstrap, told apart by their first bytes.
func layerOrBare(r io.ReaderAt, size int64) ([]byte, error) {
	head := make([]byte, 4096)
	n, err := r.ReadAt(head, 0)
	if err != nil && err != io.EOF {
		return nil, fmt.Errorf("read: %w", err)
	}
	head = head[:n]
	sr := io.NewSectionReader(r, 0, size)
	limit := layerLimit(size)
	switch {
	case len(head) >= 2 && head[0] == 0x1f && head[1] == 0x8b:
		zr, err := gzip.NewReader(bufio.NewReader(sr))
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		return fromTar(&capReader{r: zr, left: limit, limit: limit})
	case len(head) >= 4 && bytes.Equal(head[:4], []byte{0x28, 0xb5, 0x2f, 0xfd}):
		// Without these options a frame header alone decides the decoder's allocation: a
		// single-segment frame sizes its window from the declared content size (up to 64 GiB by
		// default), any other frame from its window descriptor (up to 512 MiB).
		zr, err := zstd.NewReader(bufio.NewReader(sr), zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderLowmem(true), zstd.WithDecoderMaxMemory(uint64(limit)),
			zstd.WithDecoderMaxWindow(zstdWindow(limit)))
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		defer zr.Close()
		return fromTar(&capReader{r: zr, left: limit, limit: limit})
	case isTar(head):
		return fromTar(sr)
	}
	// HasMagic, not IsV6: a v6 bootstrap cut inside its superblock is read to be named truncated.
	if v6.HasMagic(head) || v5.IsV5(head) {
		if size > MaxSize {
			return nil, fmt.Errorf("bootstrap of %d bytes exceeds the %d limit", size, MaxSize)
		}
		data := make([]byte, size)
		if _, err := r.ReadAt(data, 0); err != nil && err != io.EOF {
			return nil, fmt.Errorf("read: %w", err)
		}
		return data, nil
	}
	switch {
	case size == 0:
		return nil, fmt.Errorf("%w: the file is empty", ErrNotBootstrap)
	case size <= int64(len(head)) && allZero(head):
		// A v6 bootstrap starts with 1024 zero bytes; its superblock follows.
		return nil, fmt.Errorf("%w: its %d bytes are all zero, as a RAFS v6 bootstrap cut before its superblock at byte 1024 would be", ErrNotBootstrap, size)
	}
	return nil, ErrNotBootstrap
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// fromBlob returns the bootstrap inlined in a nydus blob; ok is false when r is not such a blob.
// A blob is one whose last 512 bytes are the tar header of its ToC ("rafs.blob.toc", nydus 2.2+,
// storage/src/meta/toc.rs) or, without a ToC, of the bootstrap itself ("image.boot",
// builder/src/lib.rs dump_bootstrap). A bootstrap layer ends in a tar's zero blocks and a
// compressed one in compressed bytes, so neither is mistaken for a blob.
func fromBlob(r io.ReaderAt, size int64) (data []byte, br *blob.Reader, ok bool, err error) {
	if size < 0 || size > blob.MaxFileSize {
		return nil, nil, false, nil
	}
	br, err = blob.Open(r, size)
	if err != nil {
		// Either the tail could not be read, or it is a GNU tar header (the one a blob ends in)
		// that is damaged or names a damaged section: the blob's own error says more than the
		// tar or zstd error that sniffing its first bytes would give.
		return nil, nil, true, fmt.Errorf("blob: %w", err)
	}
	if !br.HasTOC() && !br.HasBootstrap() {
		return nil, nil, false, nil
	}
	data, err = br.Bootstrap()
	if err != nil {
		return nil, nil, true, fmt.Errorf("blob with no inlined bootstrap: %w", err)
	}
	return data, br, true, nil
}

// Bounds on a compressed bootstrap layer, so that neither its decoder's memory nor the bytes it
// yields can be chosen by a few hostile header bytes.
const (
	// maxLayerRatio bounds how far a compressed layer may expand: deflate cannot exceed about
	// 1032:1, and a tar holding one bootstrap stays far below it even when the bootstrap is
	// mostly the zero padding of RAFS v6's 4 KiB alignment. zstd has no such ceiling (an RLE
	// block of 4 bytes stands for 128 KiB), so the ratio is what bounds it.
	maxLayerRatio = 1024
	// minLayerLimit lets small layers expand further than the ratio would allow.
	minLayerLimit = 1 << 20
	// layerSlack covers the tar headers, directory entries and end-of-archive blocks around the
	// bootstrap.
	layerSlack = 1 << 20
	// Window bounds for zstd layers: encoders use up to 8 MiB at the levels of the zstd CLI
	// without --ultra or --long (lib/compress/clevels.h), 128 MiB with --long=27.
	minZstdWindow = 8 << 20
	maxZstdWindow = 128 << 20
)

// ErrTooLarge is wrapped when a compressed bootstrap layer expands past the bounds above.
var ErrTooLarge = errors.New("bootstrap layer expands too far")

// layerLimit is how many decompressed bytes a compressed layer of size bytes may yield.
func layerLimit(size int64) int64 {
	limit := int64(MaxSize + layerSlack)
	if size < limit/maxLayerRatio {
		limit = max(size*maxLayerRatio, minLayerLimit)
	}
	return limit
}

// zstdWindow is the largest zstd window accepted for a layer that may yield limit bytes: the
// decoder allocates the window up front, before a byte of output exists.
func zstdWindow(limit int64) uint64 {
	return uint64(min(max(limit, minZstdWindow), maxZstdWindow))
}

// capReader fails with ErrTooLarge once more than limit bytes have been read from r. Unlike
// io.LimitReader it does not end the stream quietly, which would turn an over-long layer into a
// truncated one.
type capReader struct {
	r           io.Reader
	left, limit int64
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		// One byte more than allowed tells an exact fit from an overflow.
		var b [1]byte
		n, err := c.r.Read(b[:])
		if n > 0 {
			return 0, fmt.Errorf("%w: more than %d decompressed bytes", ErrTooLarge, c.limit)
		}
		return 0, err
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
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
