package v6

import "testing"

// TestMetaAllocatorMatchesUpstream replays upstream's test_set_v6_offset (builder/src/core/v6.rs):
// a 32-byte compact inode laid out with various directory sizes, starting from offset 0. Each step
// must land where nydus-image puts it, since byte-identical output depends on it.
func TestMetaAllocatorMatchesUpstream(t *testing.T) {
	a := newMetaAllocator()
	a.offset = 0
	if off := a.placeChunked(32, 0); off != 0 || a.offset != 32 {
		t.Fatalf("empty regular file at %d (next %d), want 0 (next 32)", off, a.offset)
	}
	steps := []struct {
		dirSize      uint64
		alignBefore  bool
		wantLayout   uint16
		wantOff      uint64
		wantData     uint64 // checked when non-zero
		wantNextFree uint64
	}{
		{4064, false, layoutFlatInline, 4096, 0, 8192},
		{4096, false, layoutFlatPlain, 32, 8192, 8192 + 4096},
		{8160, false, layoutFlatInline, 8192 + 4096, 8192 + 4096 + 4096, 8192 + 4096 + 8192},
		{8161, false, layoutFlatPlain, 64, 8192 + 4096 + 8192, 8192 + 4096 + 8192 + 8192},
		{4096 + 3968, false, layoutFlatInline, 96, 8192 + 4096 + 8192 + 8192, 8192 + 4096 + 8192 + 8192 + 4096},
		{4096 + 2048, false, layoutFlatInline, 8192 + 4096 + 8192 + 8192 + 4096, 8192 + 4096 + 8192 + 8192 + 4096 + 4096, 8192 + 4096 + 8192 + 8192 + 4096 + 8192},
		{1985, false, layoutFlatInline, 8192 + 4096 + 8192 + 8192 + 4096 + 8192, 0, 8192 + 4096 + 8192 + 8192 + 4096 + 8192 + 32 + 1985 + 31},
		{1984, true, layoutFlatInline, 8192 + 4096 + 8192 + 8192 + 4096 + 2048 + 32, 0, 8192 + 4096 + 8192 + 8192 + 4096 + 8192 + 2048},
	}
	for i, s := range steps {
		if s.alignBefore {
			a.align(slotSize)
		}
		off, data, layout := a.placeWithTail(32, s.dirSize)
		if layout != s.wantLayout || off != s.wantOff || (s.wantData != 0 && data != s.wantData) || a.offset != s.wantNextFree {
			t.Fatalf("step %d (dir size %d): layout %d inode %d data %d next %d; want layout %d inode %d data %d next %d",
				i, s.dirSize, layout, off, data, a.offset, s.wantLayout, s.wantOff, s.wantData, s.wantNextFree)
		}
	}
}
