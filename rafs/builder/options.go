package builder

import (
	"fmt"
	"runtime"

	"github.com/dfnydus/dfnydus/rafs"
)

// Options configure a build. The zero value is not valid; start from DefaultOptions.
type Options struct {
	FSVersion  int // 5 or 6
	Compressor rafs.Compressor
	Digester   rafs.Digester
	ChunkSize  uint32
	// ChunkDict is a bootstrap whose chunks may be referenced instead of stored again (dedup across
	// images). Its blobs join the new image's blob table when any of their chunks is used.
	ChunkDict *rafs.Image
	// Prefetch lists absolute paths the runtime should fetch first (a directory means its subtree).
	Prefetch []string
	// InlineBootstrap also writes the bootstrap into the last layer's blob, which is then written
	// even when the layer has no chunks of its own (nydus-image --blob-inline-meta): the blob
	// alone is the image. v6 only. The bootstrap names that blob by blob.InlinedBlobID.
	InlineBootstrap bool
	// Workers compress and digest chunks in parallel; 0 means GOMAXPROCS.
	Workers int
	// Progress, when set, is called after each source with the number of bytes of file data read so far.
	Progress func(bytesRead int64)
}

// DefaultOptions are nydus-image's defaults: fs-version 6, zstd, blake3, 1 MiB chunks.
func DefaultOptions() Options {
	return Options{FSVersion: 6, Compressor: rafs.CompressZstd, Digester: rafs.DigestBlake3, ChunkSize: rafs.DefaultChunkSize}
}

func (o *Options) validate() error {
	if o.FSVersion != 5 && o.FSVersion != 6 {
		return fmt.Errorf("fs-version %d: want 5 or 6", o.FSVersion)
	}
	if o.InlineBootstrap && o.FSVersion != 6 {
		return fmt.Errorf("inline bootstrap: fs-version %d blobs have no place for it, want 6", o.FSVersion)
	}
	if !rafs.ValidChunkSize(uint64(o.ChunkSize)) {
		return fmt.Errorf("chunk size %#x: want a power of two between %#x and %#x", o.ChunkSize, rafs.MinChunkSize, rafs.MaxChunkSize)
	}
	if _, err := rafs.ParseCompressor(o.Compressor.String()); err != nil {
		return err
	}
	if _, err := rafs.ParseDigester(o.Digester.String()); err != nil {
		return err
	}
	if d := o.ChunkDict; d != nil {
		if d.Digester != o.Digester {
			return fmt.Errorf("chunk dict uses digester %v, this build %v: digests would never match", d.Digester, o.Digester)
		}
		if d.ChunkSize != o.ChunkSize {
			return fmt.Errorf("chunk dict uses chunk size %#x, this build %#x", d.ChunkSize, o.ChunkSize)
		}
	}
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	return nil
}
