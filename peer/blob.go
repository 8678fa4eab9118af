package peer

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"sync"

	"go.uber.org/zap"

	"github.com/dfnydus/dfnydus/blobstore"
	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/blob"
)

// Blob is one blob as this node holds it: its bytes in the store (one sparse file of the blob's
// stored, compressed bytes), the chunk records the mounted images gave for it, and the reads in
// flight. Accept is the one place where bytes of the blob enter the node, whoever fetched them (a
// back-to-source read, a piece from another peer, a seed download): chunk bytes are checked
// against their bootstrap digest there, once, and everything downstream (reads, the store, peers
// asking for pieces) trusts what the store marks verified.
type Blob struct {
	f    *Fetcher
	id   string
	size int64
	sb   *blobstore.Blob
	log  *zap.Logger

	mu           sync.Mutex
	comp         rafs.Compressor
	dig          rafs.Digester
	described    bool         // an image gave the blob's compressor and digester
	chunks       []rafs.Chunk // distinct chunks of every image using the blob, by CompressedOffset
	chunkBytes   int64        // their compressed bytes (chunks may overlap: an upper bound of what they cover)
	checked      []bool       // chunks[i] was verified in this process (accepted, or hashed on its first read)
	flights      map[uint64]*flight
	refs         int
	blame        map[int]func(origin string, off, n int64)
	nextListener int
	whole        wholeState
	tail         tailState
	win          readWindow
}

// tailState is the check of a blob's tail (the bytes after its chunk data: tar headers,
// blob.meta, blob.digest, an inlined bootstrap, the ToC) against the bootstrap's ToC digest and
// the ToC's digests, as soon as the tail is here: without it those bytes wait for the whole blob
// (a node that read part of an image could never serve the blob's last piece, and a crash before
// the whole-blob check lost them).
type tailState struct {
	rec     *rafs.Blob // the bootstrap's record of the blob (ToC size and digest); nil: none
	done    bool       // verified, or found unverifiable this way (the whole-blob check remains)
	running bool
	again   bool // bytes arrived while a check ran: run it once more
	fails   int
	err     error // the last check that found the tail corrupt
}

// wholeState is the check of bytes no chunk covers (tar headers, blob.meta, the ToC; everything of
// a blob no mounted image describes) against the blob's own digest, its id.
type wholeState struct {
	running chan struct{} // closed when the running check ends; nil when none runs
	err     error         // the last check's result
	fails   int
}

// maxWholeFailures bounds how often the whole-blob check may fail before the node stops fetching
// the uncovered bytes again by itself (a source that keeps serving wrong bytes).
const maxWholeFailures = 3

// flight is one chunk being fetched; readers of the chunk wait on done.
type flight struct {
	done chan struct{}
	once sync.Once
	// wanted: a reader waits for this chunk (not only a prefetch or the read window); set under
	// the blob's mutex.
	wanted bool
	data   []byte // the uncompressed chunk, when the fetch decoded it for waiting readers
	err    error
}

func (fl *flight) finish(data []byte, err error) {
	fl.once.Do(func() {
		fl.data, fl.err = data, err
		close(fl.done)
	})
}

// ErrSizeMismatch is wrapped when two descriptions of one blob disagree on its size.
var ErrSizeMismatch = errors.New("blob size disagrees with what the node knows")

// OpenBlob returns the node's handle of blob id (size bytes; meta, when not nil, gives its
// compressor and digester), creating it on first use; every OpenBlob must be paired with a
// Release. A size other than the one the node already knows is refused (a lying manifest).
func (f *Fetcher) OpenBlob(id string, size int64, meta *rafs.Blob) (*Blob, error) {
	if size <= 0 || size > blobstore.MaxBlobSize {
		return nil, fmt.Errorf("blob %s: size %d out of range (1 to %d)", id, size, int64(blobstore.MaxBlobSize))
	}
	f.blobsMu.Lock()
	defer f.blobsMu.Unlock()
	b := f.blobs[id]
	if b == nil {
		sb, err := f.store.Blob(id, size)
		if err != nil {
			return nil, fmt.Errorf("blob %s: %w", id, err)
		}
		b = &Blob{f: f, id: id, size: size, sb: sb, flights: map[uint64]*flight{}, blame: map[int]func(string, int64, int64){},
			log: f.log.With(zap.String("blob", id))}
		f.blobs[id] = b
	} else if b.size != size {
		return nil, fmt.Errorf("blob %s: %w: %d bytes here, %d already", id, ErrSizeMismatch, size, b.size)
	}
	if meta != nil {
		b.mu.Lock()
		if b.described && (b.comp != meta.Compressor || b.dig != meta.Digester) {
			b.mu.Unlock()
			return nil, fmt.Errorf("blob %s: described with compressor %v and digester %v, already with %v and %v",
				id, meta.Compressor, meta.Digester, b.comp, b.dig)
		}
		b.comp, b.dig, b.described = meta.Compressor, meta.Digester, true
		if b.tail.rec == nil && meta.TOCSize != 0 && !meta.TOCDigest.IsZero() {
			rec := *meta
			b.tail.rec = &rec
		}
		b.mu.Unlock()
	}
	b.refs++
	return b, nil
}

// Release drops one reference; the last one forgets the chunk table (the stored bytes stay).
func (b *Blob) Release() {
	b.f.blobsMu.Lock()
	defer b.f.blobsMu.Unlock()
	b.refs--
	if b.refs == 0 && b.f.blobs[b.id] == b {
		delete(b.f.blobs, b.id)
	}
}

// ID returns the blob id; Size its size in bytes.
func (b *Blob) ID() string  { return b.id }
func (b *Blob) Size() int64 { return b.size }

// Store returns the blob's bytes in the store: what is verified there may be served to peers.
func (b *Blob) Store() *blobstore.Blob { return b.sb }

// addChunks merges an image's chunks of this blob into the table.
func (b *Blob) addChunks(cs []rafs.Chunk) error {
	b.mu.Lock()
	// The decoders bound this already; a chunk table is also built from images no decoder saw
	// (tests, the builder), and a fetch is sized from it.
	limit := rafs.MaxCompressedChunkSize(b.comp, rafs.MaxChunkSize)
	b.mu.Unlock()
	for i := range cs {
		c := &cs[i]
		if c.CompressedSize == 0 || int64(c.CompressedOffset)+int64(c.CompressedSize) > b.size {
			return fmt.Errorf("blob %s chunk %d: [%d, +%d) is outside the blob's %d bytes", b.id, c.Index, c.CompressedOffset, c.CompressedSize, b.size)
		}
		if c.CompressedSize > limit {
			return fmt.Errorf("blob %s chunk %d: %d stored bytes, over the %d a chunk may take", b.id, c.Index, c.CompressedSize, limit)
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	byOff := make(map[uint64]int, len(b.chunks)+len(cs))
	merged := append([]rafs.Chunk(nil), b.chunks...)
	checked := append([]bool(nil), b.checked...)
	for i, c := range merged {
		byOff[c.CompressedOffset] = i
	}
	for _, c := range cs {
		if i, ok := byOff[c.CompressedOffset]; ok {
			if merged[i].Digest != c.Digest || merged[i].CompressedSize != c.CompressedSize {
				return fmt.Errorf("blob %s: two images describe the chunk at %d differently", b.id, c.CompressedOffset)
			}
			continue
		}
		byOff[c.CompressedOffset] = len(merged)
		merged = append(merged, c)
		checked = append(checked, false)
	}
	idx := make([]int, len(merged))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(x, y int) bool { return merged[idx[x]].CompressedOffset < merged[idx[y]].CompressedOffset })
	b.chunks = make([]rafs.Chunk, len(merged))
	b.checked = make([]bool, len(merged))
	b.chunkBytes = 0
	for i, j := range idx {
		b.chunks[i], b.checked[i] = merged[j], checked[j]
		b.chunkBytes += int64(merged[j].CompressedSize)
	}
	return nil
}

// findLocked returns the index of the chunk at compressed offset off, or -1. b.mu must be held.
func (b *Blob) findLocked(off uint64) int {
	i := sort.Search(len(b.chunks), func(i int) bool { return b.chunks[i].CompressedOffset >= off })
	if i < len(b.chunks) && b.chunks[i].CompressedOffset == off {
		return i
	}
	return -1
}

// overlappingLocked returns the index range [lo, hi) of chunks overlapping [off, end). b.mu held.
func (b *Blob) overlappingLocked(off, end int64) (lo, hi int) {
	lo = sort.Search(len(b.chunks), func(i int) bool {
		c := &b.chunks[i]
		return int64(c.CompressedOffset)+int64(c.CompressedSize) > off
	})
	hi = lo
	for hi < len(b.chunks) && int64(b.chunks[hi].CompressedOffset) < end {
		hi++
	}
	return lo, hi
}

// ChunkBytes clips rs to the bytes chunks cover (merged runs of adjacent chunks), leaving out what
// lies between chunks.
func (b *Blob) ChunkBytes(rs []blobstore.Range) []blobstore.Range {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []blobstore.Range
	for _, r := range rs {
		end := r.Off + r.Len
		lo, hi := b.overlappingLocked(r.Off, end)
		for i := lo; i < hi; i++ {
			c := &b.chunks[i]
			co := max(int64(c.CompressedOffset), r.Off)
			ce := min(int64(c.CompressedOffset)+int64(c.CompressedSize), end)
			if ce <= co {
				continue
			}
			if k := len(out); k > 0 && out[k-1].Off+out[k-1].Len >= co {
				out[k-1].Len = max(out[k-1].Len, ce-out[k-1].Off)
				continue
			}
			out = append(out, blobstore.Range{Off: co, Len: ce - co})
		}
	}
	return out
}

// Awaited returns the runs of chunks lying wholly inside [off, off+n) that readers wait for, so
// that whoever brings those bytes can verify them before the rest.
func (b *Blob) Awaited(off, n int64) []blobstore.Range {
	end := off + n
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []blobstore.Range
	lo, hi := b.overlappingLocked(off, end)
	for i := lo; i < hi; i++ {
		c := &b.chunks[i]
		co, ce := int64(c.CompressedOffset), int64(c.CompressedOffset)+int64(c.CompressedSize)
		if co < off || ce > end {
			continue
		}
		if fl := b.flights[c.CompressedOffset]; fl == nil || !fl.wanted {
			continue
		}
		if k := len(out); k > 0 && out[k-1].Off+out[k-1].Len == co {
			out[k-1].Len += ce - co
			continue
		}
		out = append(out, blobstore.Range{Off: co, Len: ce - co})
	}
	return out
}

// OnBlame registers fn to hear about bytes that failed verification after they were kept pending
// (a chunk across two pieces, the whole-blob check): origin is who sent them ("source" or a peer
// id). The returned func unregisters it.
func (b *Blob) OnBlame(fn func(origin string, off, n int64)) (cancel func()) {
	b.mu.Lock()
	id := b.nextListener
	b.nextListener++
	b.blame[id] = fn
	b.mu.Unlock()
	return func() {
		b.mu.Lock()
		delete(b.blame, id)
		b.mu.Unlock()
	}
}

func (b *Blob) blamed(origins []string, off, n int64) {
	b.mu.Lock()
	fns := make([]func(string, int64, int64), 0, len(b.blame))
	for _, fn := range b.blame {
		fns = append(fns, fn)
	}
	b.mu.Unlock()
	for _, o := range origins {
		for _, fn := range fns {
			fn(o, off, n)
		}
	}
}

// decode turns a chunk's stored bytes into its data, verifying them unless this process already did.
func (b *Blob) decode(src []byte, c *rafs.Chunk, buf []byte, verify bool) ([]byte, error) {
	b.mu.Lock()
	comp, dig := b.comp, b.dig
	b.mu.Unlock()
	return blob.DecodeChunk(src, b.id, c, comp, dig, verify, buf)
}

// key names chunk c in the memory cache.
func (b *Blob) key(c *rafs.Chunk) memKey {
	b.mu.Lock()
	defer b.mu.Unlock()
	return memKey{b.dig, c.Digest}
}

// ChunksVerified reports whether every chunk the mounted images describe is verified in the store
// (false while no image describes the blob).
func (b *Blob) ChunksVerified() bool {
	b.mu.Lock()
	if len(b.chunks) == 0 {
		b.mu.Unlock()
		return false
	}
	total, chunks := b.chunkBytes, b.chunks
	b.mu.Unlock()
	// Cheap test first: the check below walks every chunk.
	if b.sb.VerifiedBytes() < total {
		return false
	}
	for i := range chunks {
		if !b.sb.Verified(int64(chunks[i].CompressedOffset), int64(chunks[i].CompressedSize)) {
			return false
		}
	}
	return true
}

// WaitQuiet returns once no on-demand fetch is in flight and none ended lately: background work
// (prefetch, completing pieces for other peers) waits on it so that a starting container's reads
// have the link.
func (f *Fetcher) WaitQuiet(ctx context.Context) error { return f.fg.waitQuiet(ctx, prefetchQuiet) }

// OnDemand marks a fetch someone waits for that does not come from this node's readers (a peer
// asking this one for bytes it lacks), so that background work steps aside for it as for a
// reader's; done ends it.
func (f *Fetcher) OnDemand() (done func()) {
	f.fg.begin()
	return f.fg.end
}

// BackgroundRequest is the most bytes a background request (prefetch, completing pieces) should
// ask for now: unbounded while reads have been quiet for a while, else small, so that a request
// already on the wire delays the next on-demand read little.
func (f *Fetcher) BackgroundRequest() int64 {
	if f.fg.sinceLast() < prefetchActiveWindow {
		return prefetchActiveRequest
	}
	return math.MaxInt64
}

// ChunkSpan widens [off, off+n) to whole chunks: a piece is verified only with all of every chunk
// that crosses its edges.
func (b *Blob) ChunkSpan(off, n int64) (int64, int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	lo, hi := b.overlappingLocked(off, off+n)
	end := off + n
	if lo < hi {
		off = min(off, int64(b.chunks[lo].CompressedOffset))
		last := &b.chunks[hi-1]
		end = max(end, int64(last.CompressedOffset)+int64(last.CompressedSize))
	}
	return off, end - off
}
