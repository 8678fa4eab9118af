package blob

import (
	"bytes"
	"fmt"
	"io"
	"testing"

	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/digest"
)

// BenchmarkWriter measures the write path (Prepare + AddPrepared + Finish) in MB/s of chunk
// data, on a mix of text and random 1 MiB chunks.
func BenchmarkWriter(b *testing.B) {
	chunks := [][]byte{textBytes(rafs.DefaultChunkSize), randomBytes(9, rafs.DefaultChunkSize)}
	digests := []rafs.Digest{digest.Sum(rafs.DigestBlake3, chunks[0]), digest.Sum(rafs.DigestBlake3, chunks[1])}
	const perBlob = 16
	for _, comp := range allCompressors {
		b.Run(comp.String(), func(b *testing.B) {
			opts := WriterOptions{Compressor: comp}
			b.SetBytes(perBlob * rafs.DefaultChunkSize)
			for b.Loop() {
				w := NewWriter(io.Discard, opts)
				for i := range perBlob {
					if _, err := w.AddChunk(chunks[i%2], digests[i%2]); err != nil {
						b.Fatal(err)
					}
				}
				if _, err := w.Finish(nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkReadChunk measures ReadChunk (read, decompress, digest check) per compressor.
func BenchmarkReadChunk(b *testing.B) {
	for _, comp := range allCompressors {
		b.Run(fmt.Sprint(comp), func(b *testing.B) {
			opts := WriterOptions{Compressor: comp}
			file, recs, entry := writeBlob(b, opts, [][]byte{textBytes(rafs.DefaultChunkSize)}, nil)
			r := bytes.NewReader(file)
			buf := make([]byte, rafs.DefaultChunkSize)
			b.SetBytes(rafs.DefaultChunkSize)
			for b.Loop() {
				if _, err := ReadChunk(r, entry.ID, &recs[0], comp, opts.Digester, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
