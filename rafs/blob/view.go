package blob

import (
	"context"
	"fmt"
	"io"
	"slices"

	"github.com/dfnydus/dfnydus/rafs"
)

// WriteUncompressedView writes blob b's uncompressed view to w: each chunk's bytes at its
// UncompressedOffset, gaps zero-filled, b.UncompressedSize bytes rounded up to 4 KiB (or further,
// to cover the last chunk, when b.UncompressedSize is zero). This is what the kernel's EROFS
// driver reads as the extra device of a RAFS v6 image (block address = uncompressed offset /
// 4096), and what nydusd keeps as <id>.blob.data. chunks are the blob's chunk records
// (duplicates, such as the same chunk referenced by several files, are written once); src
// supplies verified chunk bytes.
//
// When w can be truncated (an *os.File), it is emptied and sized first so that gaps stay sparse;
// otherwise the gaps are written as zeros.
func WriteUncompressedView(w io.WriterAt, src rafs.ChunkReader, b *rafs.Blob, chunks []rafs.Chunk) error {
	return WriteUncompressedViewContext(context.Background(), w, src, b, chunks)
}

// WriteUncompressedViewContext is WriteUncompressedView with a context for the chunk reads.
func WriteUncompressedViewContext(ctx context.Context, w io.WriterAt, src rafs.ChunkReader, b *rafs.Blob, chunks []rafs.Chunk) error {
	uniq, total, err := ViewLayout(b, chunks)
	if err != nil {
		return err
	}

	t, sparse := w.(interface{ Truncate(int64) error })
	if sparse {
		if err := t.Truncate(0); err != nil {
			return fmt.Errorf("uncompressed view: %w", err)
		}
	}
	var end uint64
	var buf []byte
	for _, c := range uniq {
		if !sparse {
			if err := zeroFill(w, end, c.UncompressedOffset); err != nil {
				return err
			}
		}
		data, err := src.ReadChunk(ctx, b, c, buf)
		if err != nil {
			return fmt.Errorf("uncompressed view of blob %s: %w", b.ID, err)
		}
		if len(data) != int(c.UncompressedSize) {
			return rafs.Corruptf("blob %s chunk %d: got %d bytes, record says %d", b.ID, c.Index, len(data), c.UncompressedSize)
		}
		if _, err := w.WriteAt(data, int64(c.UncompressedOffset)); err != nil {
			return fmt.Errorf("uncompressed view of blob %s: write chunk %d: %w", b.ID, c.Index, err)
		}
		buf = data
		end = c.UncompressedOffset + uint64(c.UncompressedSize)
	}
	if sparse {
		if err := t.Truncate(int64(total)); err != nil {
			return fmt.Errorf("uncompressed view: %w", err)
		}
		return nil
	}
	return zeroFill(w, end, total)
}

// ViewLayout returns the chunks of blob b's uncompressed view sorted by UncompressedOffset, each
// once (the same chunk referenced by several files appears once), and the view's size:
// b.UncompressedSize rounded up to 4 KiB, or further to cover the last chunk. Between the
// returned chunks the view is zeros (alignment padding). A chunk outside the view, or two
// different chunks overlapping in it, make the blob corrupt.
func ViewLayout(b *rafs.Blob, chunks []rafs.Chunk) ([]*rafs.Chunk, uint64, error) {
	order := make([]*rafs.Chunk, len(chunks))
	for i := range chunks {
		order[i] = &chunks[i]
	}
	slices.SortFunc(order, func(x, y *rafs.Chunk) int {
		if x.UncompressedOffset != y.UncompressedOffset {
			if x.UncompressedOffset < y.UncompressedOffset {
				return -1
			}
			return 1
		}
		return int(x.UncompressedSize) - int(y.UncompressedSize)
	})

	if b.UncompressedSize > MaxUncompressedSize {
		return nil, 0, rafs.Corruptf("blob %s: uncompressed size %d out of range", b.ID, b.UncompressedSize)
	}
	limit := roundUp4K(b.UncompressedSize)
	if b.UncompressedSize == 0 {
		limit = MaxUncompressedSize
	}
	uniq := order[:0]
	var end uint64
	for _, c := range order {
		cend := c.UncompressedOffset + uint64(c.UncompressedSize)
		if c.UncompressedSize == 0 || cend < c.UncompressedOffset || cend > limit {
			return nil, 0, rafs.Corruptf("blob %s chunk %d: uncompressed [%d, +%d) outside the %d-byte view",
				b.ID, c.Index, c.UncompressedOffset, c.UncompressedSize, limit)
		}
		if n := len(uniq); n > 0 {
			p := uniq[n-1]
			if c.UncompressedOffset == p.UncompressedOffset && c.UncompressedSize == p.UncompressedSize && c.Digest == p.Digest {
				continue // the same chunk again (file offset or blob index may differ)
			}
			if c.UncompressedOffset < end {
				return nil, 0, rafs.Corruptf("blob %s: chunks %d and %d overlap in the uncompressed view", b.ID, p.Index, c.Index)
			}
		}
		uniq = append(uniq, c)
		end = cend
	}
	return uniq, max(roundUp4K(b.UncompressedSize), roundUp4K(end)), nil
}

var zeros [64 << 10]byte

// zeroFill writes zeros over [from, to), so that the view has the right bytes and length
// whatever w held before.
func zeroFill(w io.WriterAt, from, to uint64) error {
	for from < to {
		n := min(to-from, uint64(len(zeros)))
		if _, err := w.WriteAt(zeros[:n], int64(from)); err != nil {
			return fmt.Errorf("uncompressed view: zero-fill at %d: %w", from, err)
		}
		from += n
	}
	return nil
}
