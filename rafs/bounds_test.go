package rafs_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/bootstrap"
	"github.com/dfnydus/dfnydus/rafs/builder"
	"github.com/dfnydus/dfnydus/rafs/compress"
)

// The bound must hold for what the compressors really produce on incompressible input, or valid
// images would be refused.
func TestMaxCompressedChunkSizeCoversRealOutput(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []uint32{rafs.MinChunkSize, 0x10000, rafs.DefaultChunkSize} {
		src := make([]byte, n)
		for i := range src {
			src[i] = byte(rng.Uint32())
		}
		for _, c := range []rafs.Compressor{rafs.CompressNone, rafs.CompressLZ4Block, rafs.CompressGzip, rafs.CompressZstd} {
			out, err := compress.Compress(c, nil, src)
			if err != nil {
				t.Fatalf("%v: %v", c, err)
			}
			if bound := rafs.MaxCompressedChunkSize(c, n); uint32(len(out)) > bound {
				t.Errorf("%v of %d random bytes: %d bytes, over the bound %d", c, n, len(out), bound)
			}
		}
	}
}

func TestMaxCompressedChunkSizeValues(t *testing.T) {
	for _, tc := range []struct {
		c    rafs.Compressor
		n    uint32
		want uint32
	}{
		{rafs.CompressNone, rafs.MaxChunkSize, rafs.MaxChunkSize},
		{rafs.CompressZstd, 0x1000, 0x1000 + 0x10 + (0x20000-0x1000)>>11}, // small inputs get the margin
		{rafs.CompressZstd, rafs.MaxChunkSize, rafs.MaxChunkSize + rafs.MaxChunkSize>>8},
		{rafs.CompressLZ4Block, rafs.MaxChunkSize, rafs.MaxChunkSize + rafs.MaxChunkSize/255 + 16},
	} {
		if got := rafs.MaxCompressedChunkSize(tc.c, tc.n); got != tc.want {
			t.Errorf("MaxCompressedChunkSize(%v, %#x) = %d, want %d", tc.c, tc.n, got, tc.want)
		}
	}
	// Nothing a 16 MiB chunk can compress to comes near the 4 GiB a hostile record can claim.
	for _, c := range []rafs.Compressor{rafs.CompressNone, rafs.CompressLZ4Block, rafs.CompressGzip, rafs.CompressZstd} {
		if got := rafs.MaxCompressedChunkSize(c, rafs.MaxChunkSize); got > 2*rafs.MaxChunkSize {
			t.Errorf("%v bound for the maximum chunk size is %d", c, got)
		}
	}
}

// buildImage builds a one-file image of compressible data with 4 KiB zstd chunks and returns its
// bootstrap, the file's first chunk and the blob it lives in.
func buildImage(t *testing.T, version int) ([]byte, rafs.Chunk, *rafs.Blob) {
	t.Helper()
	src, blobs := t.TempDir(), t.TempDir()
	data := bytes.Repeat([]byte("compressible "), 3*rafs.MinChunkSize/13)
	if err := os.WriteFile(filepath.Join(src, "f"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	opts := builder.DefaultOptions()
	opts.FSVersion, opts.ChunkSize, opts.Workers = version, rafs.MinChunkSize, 1
	res, err := builder.Build(context.Background(), opts, blobs, []builder.Layer{builder.PathLayer(src)})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	in := res.Image.Lookup("/f").Inode
	if !in.Chunks[0].IsCompressed() {
		t.Fatal("the first chunk is stored uncompressed")
	}
	return res.Bootstrap, in.Chunks[0], res.Image.Blobs[in.Chunks[0].BlobIndex]
}

// patchChunk rewrites the compressed offset and size of every chunk record holding c's digest; the
// 80-byte record (rafs.ChunkRecordSize) starts with the digest in both versions.
func patchChunk(t *testing.T, boot []byte, c rafs.Chunk, off uint64, size uint32) []byte {
	t.Helper()
	out := bytes.Clone(boot)
	n := 0
	for i := 0; ; {
		j := bytes.Index(out[i:], c.Digest[:])
		if j < 0 {
			break
		}
		p := i + j
		rec := rafs.UnmarshalChunkRecord(out[p : p+rafs.ChunkRecordSize])
		if rec == c || rec.CompressedSize == c.CompressedSize && rec.CompressedOffset == c.CompressedOffset {
			binary.LittleEndian.PutUint32(out[p+40:], size)
			binary.LittleEndian.PutUint64(out[p+48:], off)
			n++
		}
		i = p + 1
	}
	if n == 0 {
		t.Fatal("no chunk record found to patch")
	}
	return out
}

func TestDecodeBoundsChunkCompressedSize(t *testing.T) {
	for _, version := range []int{5, 6} {
		boot, c, b := buildImage(t, version)
		bound := rafs.MaxCompressedChunkSize(b.Compressor, b.ChunkSize)
		for _, tc := range []struct {
			name string
			off  uint64
			size uint32
			want string // "" means the bootstrap decodes
		}{
			{"as built", c.CompressedOffset, c.CompressedSize, ""},
			{"at the bound", 0, bound, ""},
			{"one over the bound", 0, bound + 1, "exceeds"},
			{"4 GiB", 0, 0xffff_fff0, "exceeds"},
			{"past the blob", b.CompressedSize - 1, 2, "runs past the blob"},
			{"offset overflow", ^uint64(0) - 1, 100, "overflows"},
		} {
			t.Run(fmt.Sprintf("v%d/%s", version, tc.name), func(t *testing.T) {
				img, err := bootstrap.Decode(patchChunk(t, boot, c, tc.off, tc.size))
				if tc.want == "" {
					if err != nil {
						t.Fatalf("v%d: %v", version, err)
					}
					if got := img.Lookup("/f").Inode.Chunks[0].CompressedSize; got != tc.size {
						t.Fatalf("v%d: decoded compressed size %d, want %d", version, got, tc.size)
					}
					return
				}
				if !errors.Is(err, rafs.ErrCorrupt) || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("v%d: err = %v, want ErrCorrupt mentioning %q", version, err, tc.want)
				}
				// The message names the file and the chunk, so a user knows what to look at.
				if !strings.Contains(err.Error(), "chunk 0") || !(strings.Contains(err.Error(), "/f") || strings.Contains(err.Error(), "nid")) {
					t.Errorf("v%d: %v does not name the inode and chunk", version, err)
				}
			})
		}
	}
}
