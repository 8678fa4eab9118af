package bootstrap

import (
	"bytes"
	"path/filepath"
	"testing"
)

// FuzzExtract feeds Extract and Decode every form a bootstrap arrives in, damaged: a bare v5 or v6
// bootstrap, a bootstrap layer tar, its gzip and zstd forms, and a blob with an inlined bootstrap.
// They must return an error, never panic, hang or allocate without bound.
func FuzzExtract(f *testing.F) {
	v6 := mustRead(f, filepath.Join(fixtures, "v6-zstd-blake3", "rafs-v6-2.2.boot"))
	v5 := mustRead(f, filepath.Join(fixtures, "v5-repeatable", "sha256-nocompress-repeatable"))
	for _, seed := range [][]byte{v6, v5, layerTar(f, LayerPath, v6), gz(layerTar(f, LayerPath, v6)), zst(layerTar(f, "./"+LayerPath, v5)), blobWithBootstrap(f, v6)} {
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
