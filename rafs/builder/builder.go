// Package builder turns directories and (OCI layer) tars into a nydus image: one data blob per
// layer in the nydus 2.2+ blob layout, and one bootstrap (RAFS v5 or v6) merged over all layers with
// overlay whiteouts applied, as nydus-image create + merge do (builder/src/core/*.rs in
// dragonflyoss/nydus). Chunks are deduplicated within the build and against an optional chunk dict.
// Same input and options give byte-identical output.
package builder

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/blob"
	v5 "github.com/dfnydus/dfnydus/rafs/v5"
	v6 "github.com/dfnydus/dfnydus/rafs/v6"
)

// Layer is one build source, lowest first.
type Layer struct {
	Name string
	open func() (source, error)
}

// PathLayer is a directory or a tar file (plain, gzip or zstd).
func PathLayer(p string) Layer {
	return Layer{Name: p, open: func() (source, error) { return openSource(p) }}
}

// TarLayer reads a tar stream (plain, gzip or zstd, sniffed) from r.
func TarLayer(name string, r io.Reader) Layer {
	return StreamLayer(name, func() (io.ReadCloser, error) { return io.NopCloser(r), nil })
}

// StreamLayer reads a tar stream (plain, gzip or zstd, sniffed) that open returns when the build
// reaches this layer, so a remote layer is not fetched before it is needed. When the layer is done
// the rest of the stream is read to its end and closed, and an error from either (a digest that does
// not match, a truncated download) fails the build: a verifying reader reports at EOF.
func StreamLayer(name string, open func() (io.ReadCloser, error)) Layer {
	return Layer{Name: name, open: func() (source, error) {
		rc, err := open()
		if err != nil {
			return nil, err
		}
		dr, err := decompressStream(bufio.NewReaderSize(rc, 1<<20))
		if err != nil {
			rc.Close()
			return nil, fmt.Errorf("layer %s: %w", name, err)
		}
		return newTarSource(dr, &drainCloser{r: rc, dr: dr}), nil
	}}
}

// drainCloser finishes a layer stream: the decompressor and the raw stream are read to EOF so their
// trailers (gzip CRC, digest verification) are checked, then closed.
type drainCloser struct {
	r  io.ReadCloser
	dr io.Reader
}

func (d *drainCloser) Close() error {
	_, err := io.Copy(io.Discard, d.dr)
	if c, ok := d.dr.(io.Closer); ok {
		if cerr := c.Close(); err == nil {
			err = cerr
		}
	}
	if err == nil {
		_, err = io.Copy(io.Discard, d.r)
	}
	if cerr := d.r.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("finish layer stream: %w", err)
	}
	return nil
}

// Stats count what a build did.
type Stats struct {
	Files        int64 `json:"files"`
	BytesRead    int64 `json:"bytes_read"`    // file data read from the sources
	StoredChunks int64 `json:"stored_chunks"` // chunks written to new blobs
	StoredBytes  int64 `json:"stored_bytes"`  // their compressed bytes
	DedupChunks  int64 `json:"dedup_chunks"`  // chunks found earlier in this build
	DictChunks   int64 `json:"dict_chunks"`   // chunks found in the chunk dict
}

// Result is a finished build.
type Result struct {
	// Image is the image as a reader sees it. With Options.InlineBootstrap that includes the blob
	// holding the bootstrap by its real id and size, which Bootstrap itself cannot record.
	Image     *rafs.Image
	Bootstrap []byte
	// LayerBlobs[i] is the blob written for layer i, or nil when every chunk of the layer was found
	// elsewhere (or it had no file data). With Options.InlineBootstrap the last layer always has
	// one: it holds the bootstrap.
	LayerBlobs []*rafs.Blob
	Stats      Stats
	Warnings   []string
}

// Build reads the layers, writes one blob per layer into blobDir (named by blob id) and returns the
// merged image and its encoded bootstrap. With opts.InlineBootstrap the bootstrap is also written
// into the last layer's blob.
func Build(ctx context.Context, opts Options, blobDir string, layers []Layer) (*Result, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if len(layers) == 0 {
		return nil, errors.New("build: no source")
	}
	if err := os.MkdirAll(blobDir, 0o755); err != nil {
		return nil, fmt.Errorf("blob dir: %w", err)
	}
	b := &build{opts: &opts, blobDir: blobDir, tree: newTree(),
		idx:  &chunkIndex{dict: map[chunkKey]rafs.Chunk{}, seen: map[chunkKey]rafs.Chunk{}},
		pool: &sync.Pool{New: func() any { return make([]byte, opts.ChunkSize) }}}
	if opts.ChunkDict != nil {
		b.loadDict(opts.ChunkDict)
	}
	res := &Result{}
	var inline *layerBlob
	defer func() {
		if inline != nil {
			inline.discard()
		}
	}()
	for i, l := range layers {
		lb, err := b.layer(ctx, i, l)
		if err != nil {
			return nil, fmt.Errorf("layer %d (%s): %w", i, l.Name, err)
		}
		var blb *rafs.Blob
		if opts.InlineBootstrap && i == len(layers)-1 {
			// Finished once the bootstrap exists: the blob holds it, whether or not the layer
			// had chunks of its own (builder/src/lib.rs dump_bootstrap creates the blob).
			inline = lb
		} else if lb.w.ChunkCount() == 0 {
			lb.discard()
		} else if blb, err = lb.commit(nil); err != nil {
			return nil, fmt.Errorf("layer %d (%s): %w", i, l.Name, err)
		}
		res.LayerBlobs = append(res.LayerBlobs, blb)
		if opts.Progress != nil {
			opts.Progress(b.stats.BytesRead)
		}
	}
	b.tree.finish()
	if inline == nil {
		img, warnings := b.image()
		bootstrap, err := b.encode(img)
		if err != nil {
			return nil, err
		}
		res.Image, res.Bootstrap, res.Warnings = img, bootstrap, warnings
	} else {
		// The bootstrap names its own blob as nydus-image --blob-inline-meta does: by a
		// placeholder id and the size the blob has before the bootstrap (blob.FinishInline).
		var self *rafs.Blob
		blb, err := inline.commit(func(s *rafs.Blob) ([]byte, error) {
			self = s
			b.blobs[inline.index] = s
			img, warnings := b.image()
			bootstrap, err := b.encode(img)
			res.Image, res.Bootstrap, res.Warnings = img, bootstrap, warnings
			return bootstrap, err
		})
		inline = nil
		if err != nil {
			return nil, fmt.Errorf("layer %d (%s): %w", len(layers)-1, layers[len(layers)-1].Name, err)
		}
		// The image describes the blob as a reader that found the bootstrap in it sees it: by its
		// real id and size.
		*self = *blb
		res.LayerBlobs[len(layers)-1] = blb
	}
	res.Stats = b.stats
	return res, nil
}

// encode writes img as a bootstrap of the build's RAFS version.
func (b *build) encode(img *rafs.Image) ([]byte, error) {
	var data []byte
	var err error
	if b.opts.FSVersion == 5 {
		data, err = v5.Encode(img)
	} else {
		data, err = v6.Encode(img)
	}
	if err != nil {
		return nil, fmt.Errorf("encode v%d bootstrap: %w", b.opts.FSVersion, err)
	}
	return data, nil
}

type build struct {
	opts    *Options
	blobDir string
	tree    *tree
	idx     *chunkIndex
	pool    *sync.Pool
	stats   Stats
	// blobs in build numbering: the dict's blobs first, then one slot per layer (nil if it wrote none).
	blobs []*rafs.Blob
}

func (b *build) loadDict(d *rafs.Image) {
	b.blobs = append(b.blobs, d.Blobs...)
	_ = d.Walk(func(_ string, n *rafs.Node) error {
		for _, c := range n.Inode.Chunks {
			k := chunkKey{digest: c.Digest, size: c.UncompressedSize}
			if _, ok := b.idx.dict[k]; !ok && int(c.BlobIndex) < len(d.Blobs) {
				c.FileOffset = 0
				b.idx.dict[k] = c
			}
		}
		return nil
	})
}

// layerBlob is a layer's blob, written to a temporary file in the blob dir until it is committed
// under its id or discarded.
type layerBlob struct {
	b     *build
	tmp   *os.File
	bw    *bufio.Writer
	w     *blob.Writer
	index uint32 // its slot in build.blobs
}

// discard removes the temporary file.
func (lb *layerBlob) discard() {
	lb.tmp.Close()
	os.Remove(lb.tmp.Name())
}

// commit finishes the blob (inlining the bootstrap encode returns, when encode is not nil), syncs
// it and renames it to its id.
func (lb *layerBlob) commit(encode func(self *rafs.Blob) ([]byte, error)) (*rafs.Blob, error) {
	defer lb.discard() // a no-op for the file once renamed
	var blb *rafs.Blob
	var err error
	if encode == nil {
		blb, err = lb.w.Finish(nil)
	} else {
		blb, err = lb.w.FinishInline(encode)
	}
	if err != nil {
		return nil, fmt.Errorf("finish blob: %w", err)
	}
	if err := lb.bw.Flush(); err != nil {
		return nil, fmt.Errorf("write blob: %w", err)
	}
	if err := lb.tmp.Sync(); err != nil {
		return nil, fmt.Errorf("sync blob: %w", err)
	}
	if err := os.Rename(lb.tmp.Name(), filepath.Join(lb.b.blobDir, blb.ID)); err != nil {
		return nil, fmt.Errorf("commit blob: %w", err)
	}
	lb.b.blobs[lb.index] = blb
	return blb, nil
}

// layer merges one source into the tree and writes its chunks into a new blob, which the caller
// commits or discards.
func (b *build) layer(ctx context.Context, i int, l Layer) (_ *layerBlob, err error) {
	src, err := l.open()
	if err != nil {
		return nil, err
	}
	srcOpen := true
	defer func() {
		if srcOpen {
			src.Close()
		}
	}()
	tmp, err := os.CreateTemp(b.blobDir, ".blob-*.tmp")
	if err != nil {
		return nil, fmt.Errorf("create blob: %w", err)
	}
	bw := bufio.NewWriterSize(tmp, 1<<20)
	lb := &layerBlob{b: b, tmp: tmp, bw: bw, index: uint32(len(b.blobs)),
		w: blob.NewWriter(bw, blob.WriterOptions{Compressor: b.opts.Compressor, Digester: b.opts.Digester, ChunkSize: b.opts.ChunkSize})}
	defer func() {
		if err != nil {
			lb.discard()
		}
	}()
	b.blobs = append(b.blobs, nil)
	p := newPipeline(b.opts, b.idx, lb.w, lb.index, &b.stats, b.pool)
	readErr := b.readEntries(ctx, src, i, p)
	if err := p.close(); err != nil && readErr == nil {
		readErr = err
	}
	if readErr != nil {
		return nil, readErr
	}
	srcOpen = false
	if err := src.Close(); err != nil {
		return nil, err
	}
	return lb, nil
}

func (b *build) readEntries(ctx context.Context, src source, layer int, p *pipeline) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		e, err := src.next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		ino, err := b.tree.apply(e, layer)
		if err != nil {
			return err
		}
		if ino != nil {
			b.stats.Files++
			if err := p.addFile(e.path, ino, e.data); err != nil {
				return err
			}
		}
	}
}

// image assembles the final model: blobs that no chunk references are dropped and the chunks'
// blob indexes renumbered; prefetch paths that do not exist are reported.
func (b *build) image() (*rafs.Image, []string) {
	used := make([]bool, len(b.blobs))
	inodes := map[*rafs.Inode]bool{}
	_ = walkNodes(b.tree.root, func(n *rafs.Node) {
		if !inodes[n.Inode] {
			inodes[n.Inode] = true
			for _, c := range n.Inode.Chunks {
				used[c.BlobIndex] = true
			}
		}
	})
	remap := make([]uint32, len(b.blobs))
	var blobs []*rafs.Blob
	for i, blb := range b.blobs {
		if used[i] && blb != nil {
			remap[i] = uint32(len(blobs))
			blobs = append(blobs, blb)
		}
	}
	for ino := range inodes {
		for k := range ino.Chunks {
			ino.Chunks[k].BlobIndex = remap[ino.Chunks[k].BlobIndex]
		}
	}
	img := &rafs.Image{Version: b.opts.FSVersion, Flags: rafs.FlagExplicitUIDGID, ChunkSize: b.opts.ChunkSize, Compressor: b.opts.Compressor,
		Digester: b.opts.Digester, Blobs: blobs, Root: b.tree.root}
	var warnings []string
	for _, p := range b.opts.Prefetch {
		if img.Lookup(p) == nil {
			warnings = append(warnings, fmt.Sprintf("prefetch path %s is not in the image; ignored", p))
			continue
		}
		img.Prefetch = append(img.Prefetch, p)
	}
	return img, warnings
}

func walkNodes(n *rafs.Node, fn func(*rafs.Node)) error {
	fn(n)
	for _, c := range n.Children {
		_ = walkNodes(c, fn)
	}
	return nil
}
