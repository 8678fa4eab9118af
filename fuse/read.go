package fuse

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"syscall"
	"time"

	gofuse "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"go.uber.org/zap"

	"github.com/dfnydus/dfnydus/rafs"
)

// fileHandle is an open regular file.
type fileHandle struct {
	n *node
}

var (
	_ gofuse.FileReader   = (*fileHandle)(nil)
	_ gofuse.FileReleaser = (*fileHandle)(nil)
)

// Release closes the handle. When it was the file's last, the file's chunks leave the chunk
// cache: the kernel keeps the data in its page cache, and an idle mount holds no chunk memory.
func (f *fileHandle) Release(ctx context.Context) syscall.Errno {
	if f.n.opens.Add(-1) == 0 {
		f.n.fs.cache.drop(f.n.fs.chunkKeys(f.n.inode()))
	}
	return 0
}

// Read fills dest from offset off.
func (f *fileHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	fs := f.n.fs
	start := time.Now()
	data, h, err := fs.readAt(ctx, f.n.inode(), dest, off)
	fs.m.reads.Inc()
	fs.m.readSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		return nil, fs.readErrno(ctx, f.n, off, len(dest), err)
	}
	fs.m.readBytes.Add(float64(len(data)))
	if h.e == nil {
		return fuse.ReadResultData(data), 0
	}
	return &heldResult{data: data, h: h}, 0
}

// heldResult is a reply made of a cached chunk's bytes: the hold on them ends once go-fuse has
// written the reply to the kernel (Done), so the chunk's buffer is not reused under it.
type heldResult struct {
	data []byte
	h    hold
}

func (r *heldResult) Bytes([]byte) ([]byte, fuse.Status) { return r.data, fuse.OK }
func (r *heldResult) Size() int                          { return len(r.data) }
func (r *heldResult) Done()                              { r.h.release(); r.h = hold{} }

// Slices lets go-fuse write the bytes with writev, without copying them into its buffer.
func (r *heldResult) Slices() ([][]byte, fuse.Status) { return [][]byte{r.data}, fuse.OK }

// chunkError is a failed chunk read, naming the chunk for the log.
type chunkError struct {
	blob  string
	chunk *rafs.Chunk
	err   error
}

func (e *chunkError) Error() string {
	return fmt.Sprintf("blob %s chunk %d (file offset %d): %v", e.blob, e.chunk.Index, e.chunk.FileOffset, e.err)
}

func (e *chunkError) Unwrap() error { return e.err }

// readErrno logs a failed read and turns it into EINTR (interrupted) or EIO (anything else).
func (fs *filesystem) readErrno(ctx context.Context, n *node, off int64, size int, err error) syscall.Errno {
	fields := []zap.Field{zap.String("path", n.rn.Path()), zap.Int64("offset", off), zap.Int("size", size)}
	var ce *chunkError
	if errors.As(err, &ce) {
		fields = append(fields, zap.String("blob", ce.blob), zap.Uint32("chunk", ce.chunk.Index),
			zap.Uint64("chunk_file_offset", ce.chunk.FileOffset))
	}
	fields = append(fields, zap.Error(err))
	// EINTR only when the caller was interrupted: a process that gets EINTR without a signal
	// retries forever (an unmount cancelling fetches gives EIO).
	if ctx.Err() != nil {
		fs.m.readErrors.WithLabelValues(errKindInterrupted).Inc()
		fs.log.Debug("read interrupted", fields...)
		return syscall.EINTR
	}
	fs.m.readErrors.WithLabelValues(errKindIO).Inc()
	if fs.ctx.Err() != nil {
		fs.log.Debug("read during unmount", fields...)
	} else {
		fs.log.Error("read failed", fields...)
	}
	return syscall.EIO
}

// span is the part of one chunk a read needs: chunk bytes [from, from+len(dst)) go to dst.
type span struct {
	c    *rafs.Chunk
	from uint64
	dst  []byte
}

// readAt reads in's bytes at off and returns them: len(dest) bytes, fewer only at the end of the
// file. Gaps between chunks and hole chunks read as zeros. When one chunk holds the whole range,
// the result is a slice of the chunk's cached bytes (no copy; callers must not modify it, and
// must release the hold when done with it); otherwise it is dest's prefix and the hold is zero.
func (fs *filesystem) readAt(ctx context.Context, in *rafs.Inode, dest []byte, off int64) ([]byte, hold, error) {
	if off < 0 {
		return nil, hold{}, fmt.Errorf("negative offset %d", off)
	}
	start := uint64(off)
	if start >= in.Size || len(dest) == 0 {
		return dest[:0], hold{}, nil
	}
	end := start + min(uint64(len(dest)), in.Size-start)
	out := dest[:end-start]

	chunks := in.Chunks
	i := sort.Search(len(chunks), func(i int) bool {
		return chunks[i].FileOffset+uint64(chunks[i].UncompressedSize) > start
	})
	var spans []span
	pos := start
	for ; i < len(chunks) && chunks[i].FileOffset < end; i++ {
		c := &chunks[i]
		if c.FileOffset > pos {
			clear(out[pos-start : c.FileOffset-start])
			pos = c.FileOffset
		}
		cend := min(c.FileOffset+uint64(c.UncompressedSize), end)
		dst := out[pos-start : cend-start]
		if c.Flags&rafs.ChunkHole != 0 {
			clear(dst)
		} else {
			spans = append(spans, span{c: c, from: pos - c.FileOffset, dst: dst})
		}
		pos = cend
	}
	clear(out[pos-start:])

	if len(spans) == 1 && len(spans[0].dst) == len(out) {
		s := spans[0]
		data, h, err := fs.waitChunk(ctx, s.c, fs.startChunk(s.c))
		if err != nil {
			return nil, hold{}, err
		}
		return data[s.from : s.from+uint64(len(out))], h, nil
	}
	if err := fs.copySpans(ctx, spans); err != nil {
		return nil, hold{}, err
	}
	return out, hold{}, nil
}

// copySpans gets the spans' chunks and copies the needed bytes out. Up to ReadParallelism chunk
// fetches run ahead of the one being copied; they run in the cache's goroutines, so a read that
// needs no fetch starts none.
func (fs *filesystem) copySpans(ctx context.Context, spans []span) error {
	claims := make([]claim, 0, len(spans))
	next := 0 // spans[next] is copied next
	defer func() {
		for _, cl := range claims[next:] { // claimed, never waited for (an earlier span failed)
			fs.cache.release(cl)
		}
	}()
	for ; next < len(spans); next++ {
		for len(claims) < len(spans) && len(claims) < next+fs.opts.ReadParallelism {
			claims = append(claims, fs.startChunk(spans[len(claims)].c))
		}
		s := spans[next]
		data, h, err := fs.waitChunk(ctx, s.c, claims[next])
		if err != nil {
			next++ // waitChunk ended this claim
			return err
		}
		copy(s.dst, data[s.from:])
		h.release()
	}
	return nil
}

// keyOf names chunk c in the chunk cache.
func keyOf(c *rafs.Chunk) chunkKey {
	return chunkKey{blob: c.BlobIndex, offset: c.CompressedOffset, size: c.UncompressedSize, digest: c.Digest}
}

// chunkKeys yields the cache keys of in's chunks.
func (fs *filesystem) chunkKeys(in *rafs.Inode) func(yield func(chunkKey) bool) {
	return func(yield func(chunkKey) bool) {
		for i := range in.Chunks {
			if !yield(keyOf(&in.Chunks[i])) {
				return
			}
		}
	}
}

// startChunk claims c's bytes in the cache, starting a fetch through the chunk reader unless
// they are cached or being fetched. After unmount began it starts nothing: the claim's entry
// then fails with the unmount's error.
func (fs *filesystem) startChunk(c *rafs.Chunk) claim {
	b := fs.img.Blobs[c.BlobIndex] // checkChunks made sure it exists
	cl, hit := fs.cache.start(keyOf(c), func(ctx context.Context, buf []byte) ([]byte, error) {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("filesystem is unmounting: %w", err)
		}
		fs.m.fetches.Inc()
		data, err := fs.reader.ReadChunk(ctx, b, c, buf)
		if err == nil && len(data) != int(c.UncompressedSize) { // not cached
			return nil, rafs.Corruptf("chunk reader returned %d bytes, the record says %d", len(data), c.UncompressedSize)
		}
		return data, err
	})
	if hit {
		fs.m.cacheHits.Inc()
	}
	return cl
}

// waitChunk returns the verified bytes of c for a claim from startChunk, and the hold on them.
func (fs *filesystem) waitChunk(ctx context.Context, c *rafs.Chunk, cl claim) ([]byte, hold, error) {
	data, h, err := fs.cache.wait(ctx, cl)
	if err == nil && len(data) != int(c.UncompressedSize) {
		// Never wrong data: copySpans copies exactly the record's size out of data.
		h.release()
		h, err = hold{}, rafs.Corruptf("chunk reader returned %d bytes, the record says %d", len(data), c.UncompressedSize)
	}
	if err != nil {
		return nil, hold{}, &chunkError{blob: fs.img.Blobs[c.BlobIndex].ID, chunk: c, err: err}
	}
	return data, h, nil
}
