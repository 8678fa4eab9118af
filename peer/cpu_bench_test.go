package peer

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/dfnydus/dfnydus/blobstore"
	"github.com/dfnydus/dfnydus/peer/source"
	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/blob"
	"github.com/dfnydus/dfnydus/rafs/builder"
)

// BenchmarkReadImageCPU reads every file of a real tree (the Go toolchain's src, or
// DFNYDUS_BENCH_TREE) through the fetcher from a local blob directory, cold, and prints the
// CPU-seconds per GB of file data beside the floor: one decompress + digest of every chunk
// (blob.ReadChunk over the blob file, nothing else).
func BenchmarkReadImageCPU(b *testing.B) {
	tree := os.Getenv("DFNYDUS_BENCH_TREE")
	if tree == "" {
		tree = filepath.Join(runtime.GOROOT(), "src")
	}
	dir := b.TempDir()
	res, err := builder.Build(context.Background(), builder.DefaultOptions(), filepath.Join(dir, "blobs"), []builder.Layer{builder.PathLayer(tree)})
	if err != nil {
		b.Fatal(err)
	}
	img := res.Image
	var fileBytes int64
	var files []*rafs.Node
	_ = img.Walk(func(_ string, n *rafs.Node) error {
		if n.Inode.IsReg() {
			files = append(files, n)
			fileBytes += int64(n.Inode.Size)
		}
		return nil
	})
	cpu := func() time.Duration {
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	for i := 0; i < b.N; i++ {
		// The floor: every distinct chunk decompressed and verified once from the blob file.
		c0 := cpu()
		d := blob.NewDir(filepath.Join(dir, "blobs"))
		for _, bc := range chunksOf(img, nil) {
			for _, c := range bc.chunks {
				if _, err := d.ReadChunk(context.Background(), bc.blob, &c, nil); err != nil {
					b.Fatal(err)
				}
			}
		}
		floor := cpu() - c0
		d.Close()

		st, err := blobstore.Open(filepath.Join(dir, "store", time.Now().Format("150405.000000")), blobstore.DefaultOptions())
		if err != nil {
			b.Fatal(err)
		}
		f := NewFetcher(Options{Store: st, MemoryCache: DefaultMemoryCache})
		im, err := f.NewImage("bench", img, source.NewLocal(filepath.Join(dir, "blobs")))
		if err != nil {
			b.Fatal(err)
		}
		c0 = cpu()
		t0 := time.Now()
		for _, n := range files {
			for _, c := range n.Inode.Chunks {
				if _, err := im.ReadChunk(context.Background(), img.Blobs[c.BlobIndex], &c, nil); err != nil {
					b.Fatal(err)
				}
			}
		}
		used, wall := cpu()-c0, time.Since(t0)
		im.Close()
		st.Close()
		gb := float64(fileBytes) / 1e9
		b.ReportMetric(used.Seconds()/gb, "cpu-s/GB")
		b.ReportMetric(floor.Seconds()/gb, "floor-cpu-s/GB")
		b.Logf("%d files, %.1f MB: cold read through the fetcher %.2f CPU-s in %.2f s wall (%.2f CPU-s/GB); floor (decompress+verify each chunk once) %.2f CPU-s/GB",
			len(files), float64(fileBytes)/1e6, used.Seconds(), wall.Seconds(), used.Seconds()/gb, floor.Seconds()/gb)
	}
}
