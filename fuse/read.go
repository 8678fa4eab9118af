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
	"golang.org/x/sync/errgroup"

	"github.com/dfnydus/dfnydus/rafs"
)

// fileHandle is an open regular file.
type fileHandle struct {
	n *node
}

var _ gofuse.FileReader = (*fileHandle)(nil)

// Read fills dest from offset off.
func (f *fileHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	fs := f.n.fs
	start := time.Now()
	data, err := fs.readAt(ctx, f.n.inode(), dest, off)
	fs.m.reads.Inc()
	fs.m.readSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		return nil, fs.readErrno(ctx, f.n, off, len(dest), err)
	}
	fs.m.readBytes.Add(float64(len(data)))
	return fuse.ReadResultData(data), 0
}

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

// readAt reads in's bytes at off into dest and returns the filled prefix: fewer bytes only at the
// end of the file. Gaps between chunks and hole chunks read as zeros.
func (fs *filesystem) readAt(ctx context.Context, in *rafs.Inode, dest []byte, off int64) ([]byte, error) {
	if off < 0 {
		return nil, fmt.Errorf("negative offset %d", off)
	}
	start := uint64(off)
	if start >= in.Size || len(dest) == 0 {
		return dest[:0], nil
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

	switch len(spans) {
	case 0:
	case 1:
		if err := fs.copySpan(ctx, spans[0]); err != nil {
			return nil, err
		}
	default:
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(fs.opts.ReadParallelism)
		for _, s := range spans {
			g.Go(func() error { return fs.copySpan(gctx, s) })
		}
		if err := g.Wait(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// copySpan gets the span's chunk and copies the needed bytes out.
func (fs *filesystem) copySpan(ctx context.Context, s span) error {
	data, err := fs.chunk(ctx, s.c)
	if err != nil {
		return err
	}
	copy(s.dst, data[s.from:])
	return nil
}

// chunk returns the verified bytes of c, from the cache or through the chunk reader.
func (fs *filesystem) chunk(ctx context.Context, c *rafs.Chunk) ([]byte, error) {
	b := fs.img.Blobs[c.BlobIndex] // checkChunks made sure it exists
	if err := fs.ctx.Err(); err != nil {
		return nil, &chunkError{blob: b.ID, chunk: c, err: fmt.Errorf("filesystem is unmounting: %w", err)}
	}
	key := chunkKey{blob: c.BlobIndex, offset: c.CompressedOffset, size: c.UncompressedSize, digest: c.Digest}
	data, hit, err := fs.cache.get(ctx, key, func(ctx context.Context) ([]byte, error) {
		fs.m.fetches.Inc()
		data, err := fs.reader.ReadChunk(ctx, b, c, nil)
		if err == nil && len(data) != int(c.UncompressedSize) { // not cached
			return nil, rafs.Corruptf("chunk reader returned %d bytes, the record says %d", len(data), c.UncompressedSize)
		}
		return data, err
	})
	if hit {
		fs.m.cacheHits.Inc()
	}
	if err == nil && len(data) != int(c.UncompressedSize) {
		// Never wrong data: readAt copies exactly the record's size out of data.
		err = rafs.Corruptf("chunk reader returned %d bytes, the record says %d", len(data), c.UncompressedSize)
	}
	if err != nil {
		return nil, &chunkError{blob: b.ID, chunk: c, err: err}
	}
	return data, nil
}
