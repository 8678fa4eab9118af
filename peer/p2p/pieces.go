package p2p

import (
	"math/bits"

	"github.com/dfnydus/dfnydus/rafs"
)

// Piece lengths, as the Rust dfdaemon chooses them (dragonfly-client-util/src/... piece length
// calculation: next_power_of_two(content_length / 500) clamped to [4 MiB, 64 MiB]); the scheduler
// refuses pieces under 4 MiB.
const (
	MinPieceLength = 4 << 20
	MaxPieceLength = 64 << 20
)

// PieceLengthFor returns the piece length the Rust dfdaemon uses for a task of size bytes.
func PieceLengthFor(size uint64) uint64 {
	l := size / 500
	if l <= MinPieceLength {
		return MinPieceLength
	}
	p := uint64(1) << (64 - bits.LeadingZeros64(l-1))
	if p > MaxPieceLength {
		return MaxPieceLength
	}
	return p
}

// layout is the piece geometry of a task.
type layout struct {
	size        uint64
	pieceLength uint64
	count       uint32
}

func newLayout(size, pieceLength uint64) layout {
	n := (size + pieceLength - 1) / pieceLength
	return layout{size: size, pieceLength: pieceLength, count: uint32(n)}
}

// bounds returns piece n's byte range [off, off+length).
func (l layout) bounds(n uint32) (off, length uint64) {
	off = uint64(n) * l.pieceLength
	length = min(l.pieceLength, l.size-off)
	return off, length
}

// span returns the pieces covering [off, off+n).
func (l layout) span(off, n uint64) (first, last uint32) {
	return uint32(off / l.pieceLength), uint32((off + n - 1) / l.pieceLength)
}

// chunkTable is what verification needs to know of a blob: its distinct chunks by compressed
// offset, and for every piece the chunks that touch it.
type chunkTable struct {
	blob    *rafs.Blob
	chunks  []rafs.Chunk
	byPiece [][]int32 // piece number -> indices into chunks overlapping it
}

func newChunkTable(b *rafs.Blob, chunks []rafs.Chunk, l layout) *chunkTable {
	t := &chunkTable{blob: b, chunks: chunks, byPiece: make([][]int32, l.count)}
	for i, c := range chunks {
		if c.CompressedSize == 0 || c.CompressedOffset+uint64(c.CompressedSize) > l.size {
			continue // a chunk outside the blob fails its own read; it cannot vouch for a piece
		}
		first, last := l.span(c.CompressedOffset, uint64(c.CompressedSize))
		for p := first; p <= last; p++ {
			t.byPiece[p] = append(t.byPiece[p], int32(i))
		}
	}
	return t
}
