package compress

import (
	"bytes"
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/dfnydus/dfnydus/rafs"
)

func TestRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	random := make([]byte, 256<<10)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	inputs := map[string][]byte{
		"empty":    {},
		"one byte": {7},
		"zeros":    make([]byte, rafs.DefaultChunkSize),
		"text":     bytes.Repeat([]byte("the quick brown fox jumps over the lazy dog\n"), 5000),
		"random":   random,
	}
	for _, alg := range []rafs.Compressor{rafs.CompressNone, rafs.CompressLZ4Block, rafs.CompressGzip, rafs.CompressZstd} {
		for name, in := range inputs {
			t.Run(alg.String()+"/"+name, func(t *testing.T) {
				c, err := Compress(alg, nil, in)
				if err != nil {
					t.Fatal(err)
				}
				out, err := Decompress(alg, nil, c, len(in))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(out, in) {
					t.Fatal("round trip changed the data")
				}
				if alg != rafs.CompressNone && name == "zeros" && len(c) >= len(in)/10 {
					t.Errorf("zeros compressed to %d of %d bytes", len(c), len(in))
				}
			})
		}
	}
}

// Wrong sizes and garbage are corrupt-data errors, not panics or oversized buffers.
func TestDecompressRejects(t *testing.T) {
	good, _ := Compress(rafs.CompressZstd, nil, bytes.Repeat([]byte("a"), 1000))
	lz, _ := Compress(rafs.CompressLZ4Block, nil, bytes.Repeat([]byte("a"), 1000))
	gz, _ := Compress(rafs.CompressGzip, nil, bytes.Repeat([]byte("a"), 1000))
	tests := []struct {
		name string
		alg  rafs.Compressor
		in   []byte
		size int
	}{
		{"zstd size too small", rafs.CompressZstd, good, 999},
		{"zstd size too large", rafs.CompressZstd, good, 1001},
		{"zstd garbage", rafs.CompressZstd, []byte("not zstd at all"), 10},
		{"lz4 size too small", rafs.CompressLZ4Block, lz, 10},
		{"lz4 garbage", rafs.CompressLZ4Block, []byte{0xff, 0xff, 0xff}, 100},
		{"gzip size too small", rafs.CompressGzip, gz, 10},
		{"gzip garbage", rafs.CompressGzip, []byte{1, 2, 3}, 3},
		{"none size mismatch", rafs.CompressNone, []byte{1, 2, 3}, 4},
		{"absurd size", rafs.CompressZstd, good, 1 << 40},
		{"negative size", rafs.CompressZstd, good, -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Decompress(tc.alg, nil, tc.in, tc.size); !errors.Is(err, rafs.ErrCorrupt) {
				t.Errorf("err = %v, want rafs.ErrCorrupt", err)
			}
		})
	}
}

// BenchmarkDecompressZstd decodes a 1 MiB chunk of Go source, with and without spare room after
// the chunk's size in the destination (the zstd decoder's fast path needs a little).
func BenchmarkDecompressZstd(b *testing.B) {
	var src []byte
	filepath.WalkDir(filepath.Join(runtime.GOROOT(), "src", "net", "http"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && len(src) < 1<<20 {
			data, _ := os.ReadFile(p)
			src = append(src, data...)
		}
		return nil
	})
	src = src[:min(len(src), 1<<20)]
	comp, err := Compress(rafs.CompressZstd, nil, src)
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		spare int
	}{{"exact", 0}, {"spare", DecodeSlack}} {
		b.Run(tc.name, func(b *testing.B) {
			initZstd()
			buf := make([]byte, 0, len(src)+tc.spare)
			b.SetBytes(int64(len(src)))
			for b.Loop() {
				if _, err := zdec.DecodeAll(comp, buf[:0]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
