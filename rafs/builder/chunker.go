package builder

import (
	"fmt"
	"io"
	"sync"

	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/blob"
	"github.com/dfnydus/dfnydus/rafs/digest"
)

// chunkKey is nydus's dedup key: the same digest and the same length (builder/src/core/chunk_dict.rs).
type chunkKey struct {
	digest rafs.Digest
	size   uint32
}

// chunkIndex remembers every chunk the build can point at: the chunk dict's and those already written.
// The blob index in each chunk is in build numbering (see Build).
type chunkIndex struct {
	dict map[chunkKey]rafs.Chunk // read-only once the build starts: workers consult it concurrently
	seen map[chunkKey]rafs.Chunk // only the collector touches it
}

// job is one chunk of one file on its way through digest, dedup and compression.
type job struct {
	ino        *rafs.Inode
	fileOffset uint64
	buf        []byte
	data       []byte
	key        chunkKey
	dictHit    bool
	prepared   blob.Prepared
	err        error
	done       chan struct{}
}

// pipeline digests and compresses chunks on Workers goroutines and appends them to the layer's blob
// in submission order, so output is byte-for-byte reproducible whatever the scheduling.
type pipeline struct {
	opts      *Options
	wopts     blob.WriterOptions
	idx       *chunkIndex
	w         *blob.Writer
	blobIndex uint32
	stats     *Stats

	work  chan *job
	order chan *job
	wg    sync.WaitGroup
	done  chan struct{}
	pool  *sync.Pool
	mu    sync.Mutex
	err   error
}

func newPipeline(opts *Options, idx *chunkIndex, w *blob.Writer, blobIndex uint32, stats *Stats, pool *sync.Pool) *pipeline {
	p := &pipeline{
		opts:      opts,
		wopts:     blob.WriterOptions{Compressor: opts.Compressor, Digester: opts.Digester, ChunkSize: opts.ChunkSize},
		idx:       idx,
		w:         w,
		blobIndex: blobIndex,
		stats:     stats,
		work:      make(chan *job, opts.Workers*2),
		order:     make(chan *job, opts.Workers*2+2),
		done:      make(chan struct{}),
		pool:      pool,
	}
	for i := 0; i < opts.Workers; i++ {
		p.wg.Add(1)
		go p.worker()
	}
	go p.collect()
	return p
}

func (p *pipeline) worker() {
	defer p.wg.Done()
	for j := range p.work {
		j.key = chunkKey{digest: digest.Sum(p.opts.Digester, j.data), size: uint32(len(j.data))}
		if _, ok := p.idx.dict[j.key]; ok {
			j.dictHit = true
		} else {
			j.prepared, j.err = blob.Prepare(p.wopts, j.data, j.key.digest)
		}
		close(j.done)
	}
}

func (p *pipeline) collect() {
	defer close(p.done)
	for j := range p.order {
		<-j.done
		if err := p.place(j); err != nil {
			p.fail(err)
		}
		p.pool.Put(j.buf)
	}
}

// place decides where a digested chunk lives: the dict, an earlier chunk of this build, or a new
// record in this layer's blob.
func (p *pipeline) place(j *job) error {
	if j.err != nil {
		return j.err
	}
	if p.failed() != nil {
		return nil
	}
	var c rafs.Chunk
	switch {
	case j.dictHit:
		c = p.idx.dict[j.key]
		p.stats.DictChunks++
	default:
		if seen, ok := p.idx.seen[j.key]; ok {
			c = seen
			p.stats.DedupChunks++
			break
		}
		var err error
		c, err = p.w.AddPrepared(j.prepared)
		if err != nil {
			return fmt.Errorf("append chunk to blob: %w", err)
		}
		c.BlobIndex = p.blobIndex
		p.idx.seen[j.key] = c
		p.stats.StoredChunks++
		p.stats.StoredBytes += int64(c.CompressedSize)
	}
	c.FileOffset = j.fileOffset
	j.ino.Chunks = append(j.ino.Chunks, c)
	return nil
}

func (p *pipeline) fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err == nil {
		p.err = err
	}
}

func (p *pipeline) failed() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// addFile reads exactly ino.Size bytes from r and queues them as chunks of ino.
func (p *pipeline) addFile(path string, ino *rafs.Inode, r io.Reader) error {
	cs := uint64(p.opts.ChunkSize)
	for off := uint64(0); off < ino.Size; off += cs {
		if err := p.failed(); err != nil {
			return err
		}
		n := min(cs, ino.Size-off)
		buf := p.pool.Get().([]byte)
		if _, err := io.ReadFull(r, buf[:n]); err != nil {
			p.pool.Put(buf)
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("read %s at offset %d: %w", path, off, err)
		}
		p.stats.BytesRead += int64(n)
		j := &job{ino: ino, fileOffset: off, buf: buf, data: buf[:n], done: make(chan struct{})}
		p.order <- j
		p.work <- j
	}
	return nil
}

// close drains the pipeline and returns its first error.
func (p *pipeline) close() error {
	close(p.work)
	close(p.order)
	p.wg.Wait()
	<-p.done
	return p.failed()
}
