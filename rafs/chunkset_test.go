package rafs

import (
	"reflect"
	"testing"
)

func TestChunkSet(t *testing.T) {
	// chunk is a record of blob b at compressed offset off; tag tells records of one chunk apart.
	chunk := func(b uint32, off uint64, tag uint32) Chunk {
		return Chunk{BlobIndex: b, CompressedOffset: off, CompressedSize: 10, FileOffset: uint64(tag)}
	}
	tests := []struct {
		name  string
		blobs int
		add   []Chunk
		want  [][]Chunk
	}{
		{"nothing added", 2, nil, [][]Chunk{nil, nil}},
		{"one blob, in offset order whatever the order added", 1,
			[]Chunk{chunk(0, 30, 0), chunk(0, 10, 0), chunk(0, 20, 0)},
			[][]Chunk{{chunk(0, 10, 0), chunk(0, 20, 0), chunk(0, 30, 0)}}},
		{"a chunk two files share is listed once, as first added", 1,
			[]Chunk{chunk(0, 20, 1), chunk(0, 10, 1), chunk(0, 20, 2), chunk(0, 10, 2), chunk(0, 20, 3)},
			[][]Chunk{{chunk(0, 10, 1), chunk(0, 20, 1)}}},
		{"the same offset in two blobs is two chunks", 2,
			[]Chunk{chunk(1, 10, 0), chunk(0, 10, 0)},
			[][]Chunk{{chunk(0, 10, 0)}, {chunk(1, 10, 0)}}},
		{"grouped by blob, a blob without chunks stays empty", 3,
			[]Chunk{chunk(2, 5, 0), chunk(0, 7, 0), chunk(2, 1, 0)},
			[][]Chunk{{chunk(0, 7, 0)}, nil, {chunk(2, 1, 0), chunk(2, 5, 0)}}},
		{"a chunk of a blob the image does not have is dropped", 1,
			[]Chunk{chunk(0, 10, 0), chunk(1, 10, 0), chunk(7, 0, 0)},
			[][]Chunk{{chunk(0, 10, 0)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewChunkSet(tt.blobs)
			for _, c := range tt.add {
				s.Add(c)
			}
			if got := s.Blobs(); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Blobs() =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}
