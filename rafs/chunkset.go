package rafs

import (
	"cmp"
	"slices"
)

// ChunkSet gathers the distinct chunks of an image's blobs. Files that share content (and hard
// links walked twice) list the same chunk record more than once; a chunk is identified by its blob
// and compressed offset, and the first record added for it is kept.
type ChunkSet struct {
	blobs [][]Chunk
}

// NewChunkSet returns an empty set for an image with the given number of blobs.
func NewChunkSet(blobs int) *ChunkSet { return &ChunkSet{blobs: make([][]Chunk, blobs)} }

// Add records c. A chunk whose blob index is beyond the set's blobs is dropped: callers that must
// refuse such a chunk check it first.
func (s *ChunkSet) Add(c Chunk) {
	if int(c.BlobIndex) < len(s.blobs) {
		s.blobs[c.BlobIndex] = append(s.blobs[c.BlobIndex], c)
	}
}

// Blobs returns, indexed like Image.Blobs, each blob's distinct chunks in compressed offset order,
// the order of their bytes in the blob file (nil for a blob with none). Call it after the last Add.
func (s *ChunkSet) Blobs() [][]Chunk {
	for i, cs := range s.blobs {
		slices.SortStableFunc(cs, func(a, b Chunk) int { return cmp.Compare(a.CompressedOffset, b.CompressedOffset) })
		s.blobs[i] = slices.CompactFunc(cs, func(a, b Chunk) bool { return a.CompressedOffset == b.CompressedOffset })
	}
	return s.blobs
}
