package trace

import (
	"context"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/dfnydus/dfnydus/rafs"
)

// Recorder is a rafs.ChunkReader that notes each chunk the first time it is asked for, then reads
// it through the wrapped reader. The FUSE filesystem passes a pointer into the reading file's own
// chunk list, which names the file that first read a chunk shared by several (dedup); a chunk
// pointer it does not know falls back to the first file of the image holding that chunk.
type Recorder struct {
	r   rafs.ChunkReader
	img *rafs.Image

	byPtr map[*rafs.Chunk]string
	byKey map[chunkKey]string

	mu      sync.Mutex
	seen    map[chunkKey]bool
	entries []Entry
	stopped bool
}

type chunkKey struct {
	blob uint32
	off  uint64
}

var _ rafs.ChunkReader = (*Recorder)(nil)

// NewRecorder wraps r, recording reads of img's chunks.
func NewRecorder(img *rafs.Image, r rafs.ChunkReader) *Recorder {
	rec := &Recorder{r: r, img: img, byPtr: map[*rafs.Chunk]string{}, byKey: map[chunkKey]string{}, seen: map[chunkKey]bool{}}
	done := map[*rafs.Inode]bool{}
	_ = img.Walk(func(p string, n *rafs.Node) error {
		if n.Inode == nil || !n.Inode.IsReg() || done[n.Inode] {
			return nil
		}
		done[n.Inode] = true // a hard link is named by its first path
		for i := range n.Inode.Chunks {
			c := &n.Inode.Chunks[i]
			rec.byPtr[c] = p
			k := chunkKey{c.BlobIndex, c.CompressedOffset}
			if _, ok := rec.byKey[k]; !ok {
				rec.byKey[k] = p
			}
		}
		return nil
	})
	return rec
}

// ReadChunk implements rafs.ChunkReader.
func (rec *Recorder) ReadChunk(ctx context.Context, b *rafs.Blob, c *rafs.Chunk, buf []byte) ([]byte, error) {
	rec.note(b, c)
	return rec.r.ReadChunk(ctx, b, c, buf)
}

func (rec *Recorder) note(b *rafs.Blob, c *rafs.Chunk) {
	k := chunkKey{c.BlobIndex, c.CompressedOffset}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.stopped || rec.seen[k] {
		return
	}
	rec.seen[k] = true
	p, ok := rec.byPtr[c]
	if !ok {
		p = rec.byKey[k]
	}
	if p == "" {
		return // not a chunk of the image's files: nothing a later mount could prefetch
	}
	rec.entries = append(rec.entries, Entry{Path: p, Blob: b.ID, Offset: c.CompressedOffset, Size: c.CompressedSize, Digest: c.Digest.String()})
}

// Stop ends the recording and returns the trace, bound to the given digests. Reads after Stop are
// passed through unrecorded.
func (rec *Recorder) Stop(manifest, bootstrap digest.Digest) *Trace {
	rec.mu.Lock()
	rec.stopped = true
	entries := append([]Entry(nil), rec.entries...)
	rec.mu.Unlock()
	return &Trace{Version: Version, Manifest: manifest, Bootstrap: bootstrap, Created: time.Now().UTC().Truncate(time.Second), Entries: entries}
}

// Len is the number of chunks recorded so far.
func (rec *Recorder) Len() int {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return len(rec.entries)
}
