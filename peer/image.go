package peer

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/dfnydus/dfnydus/peer/source"
	"github.com/dfnydus/dfnydus/rafs"
)

// Image is one mounted image as the fetcher sees it: its model, where its blobs come from, and its
// counters. It is the rafs.ChunkReader the FUSE filesystem reads through.
type Image struct {
	Name  string
	f     *Fetcher
	img   *rafs.Image
	src   source.Source
	st    imageStats
	blobs []*Blob // by blob index; nil for blobs no regular file uses

	closeMu    sync.Mutex // guards replacing blobs at Close against Stats
	prefetchMu sync.Mutex
	prefetch   PrefetchStatus
	trace      atomic.Pointer[traceReads] // set when a start trace is prefetched
}

// imageStats are an image's counters, updated atomically.
type imageStats struct {
	reads          atomic.Int64
	bytesOnDemand  atomic.Int64
	bytesPrefetch  atomic.Int64
	fetches        atomic.Int64
	verifyFailures atomic.Int64
	readErrors     atomic.Int64
}

// requested counts one request to the image's source.
func (s *imageStats) requested() { s.fetches.Add(1) }

// fetched counts n bytes brought in by a fetch of this kind.
func (s *imageStats) fetched(kind string, n int64) {
	if kind == kindPrefetch {
		s.bytesPrefetch.Add(n)
	} else {
		s.bytesOnDemand.Add(n)
	}
}

// NewImage attaches an image and its blob source to the fetcher. A blob's size is the bootstrap's
// record of it (the caller fills in what it learned elsewhere, e.g. the manifest, when the record
// has none); a blob already known to the node with another size is refused. Close releases it.
func (f *Fetcher) NewImage(name string, img *rafs.Image, src source.Source) (*Image, error) {
	im := &Image{Name: name, f: f, img: img, src: src, prefetch: PrefetchStatus{State: PrefetchIdle}, blobs: make([]*Blob, len(img.Blobs))}
	for _, bc := range chunksOf(img, nil) {
		b := bc.blob
		size := int64(b.CompressedSize)
		if size == 0 {
			last := bc.chunks[len(bc.chunks)-1]
			size = int64(last.CompressedOffset) + int64(last.CompressedSize)
		}
		bl, err := f.OpenBlob(b.ID, size, b)
		if err != nil {
			im.Close()
			return nil, fmt.Errorf("image %s: %w", name, err)
		}
		im.blobs[bc.index] = bl
		if err := bl.addChunks(bc.chunks); err != nil {
			im.Close()
			return nil, fmt.Errorf("image %s: %w", name, err)
		}
	}
	return im, nil
}

// Close releases the image's blobs.
func (im *Image) Close() {
	im.closeMu.Lock()
	blobs := im.blobs
	im.blobs = make([]*Blob, len(blobs)) // Stats after Close sees no blob, never a released one
	im.closeMu.Unlock()
	for _, bl := range blobs {
		if bl != nil {
			bl.Release()
		}
	}
}

// RAFS returns the image model.
func (im *Image) RAFS() *rafs.Image { return im.img }

// ReadChunk implements rafs.ChunkReader: memory, store, then source; always verified.
func (im *Image) ReadChunk(ctx context.Context, b *rafs.Blob, c *rafs.Chunk, buf []byte) ([]byte, error) {
	im.st.reads.Add(1)
	im.noteTraceRead(c)
	if int(c.BlobIndex) >= len(im.blobs) || im.blobs[c.BlobIndex] == nil {
		im.st.readErrors.Add(1)
		return nil, fmt.Errorf("image %s: chunk %d names blob %d, which the image does not hold", im.Name, c.Index, c.BlobIndex)
	}
	data, err := im.f.readChunk(ctx, im.src, &im.st, im.blobs[c.BlobIndex], c, buf)
	if err != nil {
		im.st.readErrors.Add(1)
	}
	return data, err
}

// Stats is a snapshot of an image's progress, as `dfnydus stat` shows it.
type Stats struct {
	Name              string         `json:"name"`
	Source            string         `json:"source"`
	Chunks            int            `json:"chunks"`        // distinct chunks of the image
	ChunksCached      int            `json:"chunks_cached"` // of which the store has
	BytesTotal        int64          `json:"bytes_total"`   // their uncompressed bytes
	BytesCached       int64          `json:"bytes_cached"`
	ChunkReads        int64          `json:"chunk_reads"`
	Fetches           int64          `json:"fetches"` // back-to-source requests
	BytesFetched      int64          `json:"bytes_fetched"`
	BytesOnDemand     int64          `json:"bytes_fetched_on_demand"`
	BytesPrefetched   int64          `json:"bytes_fetched_by_prefetch"`
	VerifyFailures    int64          `json:"verify_failures"`
	ReadErrors        int64          `json:"read_errors"`
	Prefetch          PrefetchStatus `json:"prefetch"`
	StoreRepairedEver int64          `json:"store_repaired"`
}

// Stats counts the image's chunks against the store (a walk of the chunk tables: cheap, not free).
func (im *Image) Stats() Stats {
	s := Stats{Name: im.Name, Source: im.src.String(),
		ChunkReads: im.st.reads.Load(), Fetches: im.st.fetches.Load(),
		BytesOnDemand: im.st.bytesOnDemand.Load(), BytesPrefetched: im.st.bytesPrefetch.Load(),
		VerifyFailures: im.st.verifyFailures.Load(), ReadErrors: im.st.readErrors.Load(),
		StoreRepairedEver: im.f.repaired.Load()}
	s.BytesFetched = s.BytesOnDemand + s.BytesPrefetched
	im.closeMu.Lock()
	blobs := im.blobs
	im.closeMu.Unlock()
	for _, bc := range im.distinctChunks() {
		bl := blobs[bc.index]
		for _, c := range bc.chunks {
			s.Chunks++
			s.BytesTotal += int64(c.UncompressedSize)
			if bl != nil && bl.sb.Verified(int64(c.CompressedOffset), int64(c.CompressedSize)) {
				s.ChunksCached++
				s.BytesCached += int64(c.UncompressedSize)
			}
		}
	}
	im.prefetchMu.Lock()
	s.Prefetch = im.prefetch
	im.prefetchMu.Unlock()
	s.Prefetch = im.withTraceCounts(s.Prefetch)
	return s
}

// blobChunks are the distinct chunks of one blob, by compressed offset.
type blobChunks struct {
	blob   *rafs.Blob
	index  int
	chunks []rafs.Chunk
}

// distinctChunks lists every chunk the image references once, grouped by blob, in blob order.
func (im *Image) distinctChunks() []blobChunks {
	return chunksOf(im.img, nil)
}

// chunksOf collects the distinct chunks of the regular files under the given roots (nil: the whole
// image), grouped by blob and sorted by compressed offset.
func chunksOf(img *rafs.Image, roots []string) []blobChunks {
	set := rafs.NewChunkSet(len(img.Blobs))
	seen := map[*rafs.Inode]bool{}
	visit := func(_ string, n *rafs.Node) error {
		if seen[n.Inode] || !n.Inode.IsReg() {
			return nil
		}
		seen[n.Inode] = true
		for _, c := range n.Inode.Chunks {
			set.Add(c)
		}
		return nil
	}
	if roots == nil {
		_ = img.Walk(visit)
	} else {
		for _, r := range roots {
			if n := img.Lookup(r); n != nil {
				_ = walkFrom(r, n, visit)
			}
		}
	}
	var out []blobChunks
	for i, chunks := range set.Blobs() {
		if len(chunks) > 0 {
			out = append(out, blobChunks{blob: img.Blobs[i], index: i, chunks: chunks})
		}
	}
	return out
}

func walkFrom(p string, n *rafs.Node, fn func(string, *rafs.Node) error) error {
	if err := fn(p, n); err != nil {
		return err
	}
	for _, c := range n.Children {
		if err := walkFrom(p+"/"+c.Name, c, fn); err != nil {
			return err
		}
	}
	return nil
}
