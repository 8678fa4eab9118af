package p2p

import "math/bits"

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

// newLayout cuts size bytes in pieces. The caller bounds size and pieceLength (a blob is at most
// 1 TiB and a piece at least 4 MiB), so the count fits 32 bits with room to spare.
func newLayout(size, pieceLength uint64) layout {
	n := (size + pieceLength - 1) / pieceLength
	return layout{size: size, pieceLength: pieceLength, count: uint32(n)}
}

// ValidPieceLength reports whether a forced piece length is one Dragonfly peers use: 4 MiB to
// 64 MiB (the scheduler refuses shorter pieces; the Rust client never cuts longer ones).
func ValidPieceLength(n uint64) bool { return n >= MinPieceLength && n <= MaxPieceLength }

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
