package source_test

import (
	"context"
	"fmt"
	"io"
	"testing"
)

// BenchmarkReadRange reads 4 MiB ranges (the smallest Dragonfly piece) of a 64 MiB blob from each
// source, one reader at a time and eight at once; b.SetBytes makes go test print MB/s.
func BenchmarkReadRange(b *testing.B) {
	const blobSize, piece = 64 << 20, 4 << 20
	for _, bc := range []struct {
		name string
		make func(testing.TB) *backend
	}{
		{"local", localBackend},
		{"registry", registryBackend},
		{"s3", s3Backend},
	} {
		b.Run(bc.name, func(b *testing.B) {
			be := bc.make(b)
			id := be.put(b, randomBytes(3, blobSize))
			read := func(ctx context.Context, i int) error {
				off := int64(i%(blobSize/piece)) * piece
				rc, err := be.src.ReadRange(ctx, id, off, piece)
				if err != nil {
					return err
				}
				defer rc.Close()
				n, err := io.Copy(io.Discard, rc)
				if err == nil && n != piece {
					err = fmt.Errorf("read %d bytes of %d", n, piece)
				}
				return err
			}
			b.Run("serial", func(b *testing.B) {
				b.SetBytes(piece)
				ctx := context.Background()
				for i := 0; b.Loop(); i++ {
					if err := read(ctx, i); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("parallel8", func(b *testing.B) {
				b.SetBytes(piece)
				b.SetParallelism(8)
				ctx := context.Background()
				b.RunParallel(func(pb *testing.PB) {
					for i := 0; pb.Next(); i++ {
						if err := read(ctx, i); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		})
	}
}
