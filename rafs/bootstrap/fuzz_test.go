package bootstrap

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

// TestMain shortens the fuzzer's minimization of new inputs unless -fuzzminimizetime is given.
// Go's minimizer tries removing every byte and then every range of bytes, O(n²) runs for an
// n-byte input, so for these inputs (bootstraps of 8 to 90 KiB) it always runs to its deadline.
// With the default of 60 s each new interesting input took a worker away for a minute, and
// `go test -fuzz FuzzExtract` reported about 10 execs in its first minute; even 1 s cost most of
// the workers' time while coverage was still growing by a few inputs a second. 100 ms still lets
// the minimizer cut an input's tail, which is most of what it achieves here.
func TestMain(m *testing.M) {
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.fuzzminimizetime" })
	if !set {
		if err := flag.Set("test.fuzzminimizetime", "100ms"); err != nil {
			panic(err)
		}
	}
	os.Exit(m.Run())
}

// FuzzExtract feeds Extract and Decode every form a bootstrap arrives in, damaged: a bare v5 or v6
// bootstrap, a bootstrap layer tar, its gzip and zstd forms, and a blob with an inlined bootstrap
// (with a raw and with a zstd first chunk, and one nydus-image made). They must return an error, never panic, hang or
// allocate without bound.
func FuzzExtract(f *testing.F) {
	v6 := mustRead(f, filepath.Join(fixtures, "v6-zstd-blake3", "rafs-v6-2.2.boot"))
	v5 := mustRead(f, filepath.Join(fixtures, "v5-repeatable", "sha256-nocompress-repeatable"))
	for _, seed := range [][]byte{v6, v5, layerTar(f, LayerPath, v6), gz(layerTar(f, LayerPath, v6)),
		zst(layerTar(f, "./"+LayerPath, v5)), blobWithBootstrap(f, v6), blobWithBootstrap(f, v6, zstdChunk),
		mustRead(f, filepath.Join(fixtures, "v6-inlined-bootstrap", "2fa78cad554b75ac91a4a125ed148d0ddeb25efa4aaa8bd80e5dc292690a4dca"))} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		boot, err := Extract(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		_, _ = Decode(boot)
	})
}
