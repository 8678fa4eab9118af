package unpack

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/dfnydus/dfnydus/rafs"
)

// fetcher reads the data chunks of a plan's regular files ahead of the writer, in the exact order
// the writer consumes them: entries in walk order, each file's chunks in file order. At most
// `limit` chunks are held at once, counting both reads in flight and results waiting to be
// consumed, so memory stays bounded by limit * rafs.MaxChunkSize.
type fetcher struct {
	ctx    context.Context
	cancel context.CancelFunc
	queue  chan *fetchJob // in consumption order
	slots  chan struct{}  // one token per chunk held
	free   chan []byte    // recycled buffers
	wg     sync.WaitGroup
}

type fetchJob struct {
	entry int // plan index
	chunk int // index into the inode's Chunks
	done  chan struct{}
	buf   []byte
	data  []byte
	err   error
}

// errFetchEnded means the writer asked for more chunks than the plan has, a bug if it happens.
var errFetchEnded = errors.New("unpack: chunk stream ended early")

func startFetch(ctx context.Context, p *plan, src rafs.ChunkReader, limit int) *fetcher {
	ctx, cancel := context.WithCancel(ctx)
	f := &fetcher{
		ctx:    ctx,
		cancel: cancel,
		queue:  make(chan *fetchJob, limit),
		slots:  make(chan struct{}, limit),
		free:   make(chan []byte, limit),
	}
	f.wg.Add(1)
	go f.produce(p, src)
	return f
}

func (f *fetcher) produce(p *plan, src rafs.ChunkReader) {
	defer f.wg.Done()
	defer close(f.queue)
	for i := range p.entries {
		e := &p.entries[i]
		for _, ci := range e.reads {
			select {
			case f.slots <- struct{}{}:
			case <-f.ctx.Done():
				return
			}
			j := &fetchJob{entry: i, chunk: ci, done: make(chan struct{})}
			f.wg.Add(1)
			go f.read(j, src, p.img.Blobs[e.ino.Chunks[ci].BlobIndex], &e.ino.Chunks[ci])
			select {
			case f.queue <- j:
			case <-f.ctx.Done():
				return
			}
		}
	}
}

func (f *fetcher) read(j *fetchJob, src rafs.ChunkReader, blob *rafs.Blob, c *rafs.Chunk) {
	defer f.wg.Done()
	defer close(j.done)
	size := int(c.UncompressedSize)
	select {
	case b := <-f.free:
		if cap(b) >= size {
			j.buf = b[:size]
		}
	default:
	}
	if j.buf == nil {
		j.buf = make([]byte, size)
	}
	data, err := src.ReadChunk(f.ctx, blob, c, j.buf)
	switch {
	case err != nil:
		j.err = fmt.Errorf("read chunk %d (blob %s, compressed offset %d): %w", j.chunk, blob.ID, c.CompressedOffset, err)
	case len(data) != size:
		j.err = rafs.Corruptf("chunk %d (blob %s, compressed offset %d) read as %d bytes, want %d", j.chunk, blob.ID, c.CompressedOffset, len(data), size)
	default:
		j.data = data
	}
}

// next returns the next chunk of entry i, which must be chunk index ci, once it has been read.
func (f *fetcher) next(entry, ci int) (*fetchJob, error) {
	var j *fetchJob
	select {
	case got, ok := <-f.queue:
		if !ok {
			if err := f.ctx.Err(); err != nil {
				return nil, err
			}
			return nil, errFetchEnded
		}
		j = got
	case <-f.ctx.Done():
		return nil, f.ctx.Err()
	}
	if j.entry != entry || j.chunk != ci {
		return nil, fmt.Errorf("unpack: chunk stream out of step: got entry %d chunk %d, want %d/%d", j.entry, j.chunk, entry, ci)
	}
	select {
	case <-j.done:
	case <-f.ctx.Done():
		return nil, f.ctx.Err()
	}
	if j.err != nil {
		f.release(j)
		return nil, j.err
	}
	return j, nil
}

// release gives the chunk's slot and buffer back once the writer is done with its data.
func (f *fetcher) release(j *fetchJob) {
	select {
	case f.free <- j.buf:
	default:
	}
	j.buf, j.data = nil, nil
	<-f.slots
}

// stop cancels outstanding reads and waits for every goroutine the fetcher started.
func (f *fetcher) stop() {
	f.cancel()
	f.wg.Wait()
}
