package blob

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/dfnydus/dfnydus/rafs"
)

// TestChunkInfoV1Encoding: our v1 entries for the fixture's chunks are the bytes nydus wrote.
func TestChunkInfoV1Encoding(t *testing.T) {
	data := readFixture(t)
	var got []byte
	for _, ci := range []ChunkInfo{
		{CompressedOffset: 0, CompressedSize: 0x12dc, UncompressedOffset: 0, UncompressedSize: 0x4223, Compressed: true},
		{CompressedOffset: 0x12dc, CompressedSize: 0xb9e, UncompressedOffset: 0x5000, UncompressedSize: 0x3458, Compressed: true},
	} {
		var err error
		if got, err = appendV1(got, &ci); err != nil {
			t.Fatal(err)
		}
	}
	if want := data[0x207a : 0x207a+32]; !bytes.Equal(got, want) {
		t.Errorf("v1 entries\n got %x\nwant %x", got, want)
	}
}

func TestChunkInfoV1Limits(t *testing.T) {
	const maxSize = rafs.MaxChunkSize // 24 bits of size-1
	valid := []ChunkInfo{
		{CompressedSize: 1, UncompressedSize: 1},
		{CompressedOffset: 1<<40 - 1, CompressedSize: maxSize, UncompressedOffset: 1<<44 - 4096, UncompressedSize: maxSize},
		{CompressedOffset: 12345, CompressedSize: 0xfffff, UncompressedOffset: 0x7000, UncompressedSize: 0x100000, Compressed: true},
		{CompressedSize: 0x100001, UncompressedSize: 0xffffff, Compressed: true},
		{CompressedSize: 0x123456, UncompressedSize: 0x123456},
	}
	for _, ci := range valid {
		b, err := appendV1(nil, &ci)
		if err != nil {
			t.Errorf("%+v: %v", ci, err)
			continue
		}
		if got := decodeV1(b); got != ci {
			t.Errorf("round trip %+v\n        -> %+v", ci, got)
		}
	}
	invalid := []ChunkInfo{
		{CompressedSize: 0, UncompressedSize: 1},
		{CompressedSize: 1, UncompressedSize: 0},
		{CompressedSize: maxSize + 1, UncompressedSize: maxSize + 1},
		{CompressedOffset: 1 << 40, CompressedSize: 1, UncompressedSize: 1},
		{CompressedSize: 1, UncompressedOffset: 0x800, UncompressedSize: 1},
		{CompressedSize: 1, UncompressedOffset: 1 << 44, UncompressedSize: 1},
		{CompressedSize: 5, UncompressedSize: 5, Compressed: true}, // v1 cannot say this
		{CompressedSize: 4, UncompressedSize: 5, Compressed: false},
	}
	for _, ci := range invalid {
		if _, err := appendV1(nil, &ci); err == nil {
			t.Errorf("%+v: encoded without error", ci)
		}
	}
}

func TestChunkInfoV2Decoding(t *testing.T) {
	// chunk_info_v2.rs: uncomp_info = offset>>12 | (size-1)<<32 | flags<<56; comp_info = offset |
	// size<<40; data = CRC32 when HAS_CRC32.
	b := binary.LittleEndian.AppendUint64(nil, 0x5|0x3457<<32|uint64(CIV2Compressed|CIV2HasCRC32)<<56)
	b = binary.LittleEndian.AppendUint64(b, 0x12dc|0xb9e<<40)
	b = binary.LittleEndian.AppendUint64(b, 0xdeadbeef)
	ci := decodeV2(b)
	want := ChunkInfo{CompressedOffset: 0x12dc, CompressedSize: 0xb9e, UncompressedOffset: 0x5000, UncompressedSize: 0x3458,
		Compressed: true, V2Flags: CIV2Compressed | CIV2HasCRC32, Data: 0xdeadbeef}
	if ci != want {
		t.Errorf("decodeV2 = %+v\nwant       %+v", ci, want)
	}
	c := ci.Chunk(7, rafs.Digest{1})
	if c.Flags != rafs.ChunkCompressed|rafs.ChunkHasCRC32 || c.CRC32 != 0xdeadbeef || c.Index != 7 {
		t.Errorf("Chunk() = %+v", c)
	}
	if err := ci.validate(0, FeatureChunkInfoV2, 0x2000, 0x9000); err != nil {
		t.Errorf("validate: %v", err)
	}
	for _, tc := range []struct {
		name     string
		ci       ChunkInfo
		features uint32
	}{
		{"past the chunk data", ChunkInfo{CompressedOffset: 0x1000, CompressedSize: 0x1001, UncompressedSize: 1, Compressed: true}, 0},
		{"past the view", ChunkInfo{CompressedSize: 1, UncompressedOffset: 0x9000, UncompressedSize: 1}, 0},
		{"empty compressed", ChunkInfo{UncompressedSize: 1, Compressed: true}, 0},
		{"raw with sizes differing", ChunkInfo{CompressedSize: 2, UncompressedSize: 1}, 0},
		{"zero CRC", ChunkInfo{CompressedSize: 1, UncompressedSize: 1, V2Flags: CIV2HasCRC32}, 0},
		{"zran outside a zran blob", ChunkInfo{CompressedSize: 1, UncompressedSize: 1, V2Flags: CIV2Zran}, 0},
		{"batch outside a batch blob", ChunkInfo{CompressedSize: 1, UncompressedSize: 1, V2Flags: CIV2Batch}, 0},
	} {
		if err := tc.ci.validate(3, tc.features, 0x2000, 0x9000); !errors.Is(err, rafs.ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", tc.name, err)
		}
	}
}

func TestMetaHeader(t *testing.T) {
	h := MetaHeader{Features: FeatureAligned | FeatureChunkInfoV2 | FeatureBatch, CICompressor: rafs.CompressLZ4Block,
		CIEntries: 10, CIOffset: 4096, CICompressedSize: 100, CIUncompressedSize: 10*24 + 64,
		ZranOffset: 240, ZranSize: 64, ZranCount: 2}
	b := h.encode()
	if len(b) != MetaHeaderSize {
		t.Fatalf("header is %d bytes", len(b))
	}
	got, err := decodeMetaHeader(b)
	if err != nil || got != h {
		t.Errorf("round trip %+v, %v\nwant       %+v", got, err, h)
	}
	for _, tc := range []struct {
		name string
		edit func(h *MetaHeader)
	}{
		{"no entries", func(h *MetaHeader) { h.CIEntries = 0 }},
		{"too many entries", func(h *MetaHeader) { h.CIEntries = MaxChunks + 1 }},
		{"context past the array", func(h *MetaHeader) { h.ZranSize = 65 }},
		{"context over the entries", func(h *MetaHeader) { h.ZranOffset = 200 }},
		{"context wraps", func(h *MetaHeader) { h.ZranOffset, h.ZranSize = 240, ^uint64(0) }},
		{"batch without v2", func(h *MetaHeader) { h.Features &^= FeatureChunkInfoV2 }},
		{"v2 size mismatch", func(h *MetaHeader) { h.Features &^= FeatureBatch }},
		{"raw with sizes differing", func(h *MetaHeader) { h.CICompressor = rafs.CompressNone }},
	} {
		bad := h
		tc.edit(&bad)
		if _, err := decodeMetaHeader(bad.encode()); !errors.Is(err, rafs.ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", tc.name, err)
		}
	}
}

func TestCheckOrder(t *testing.T) {
	a := ChunkInfo{CompressedOffset: 0, CompressedSize: 100, UncompressedOffset: 0, UncompressedSize: 5000, Compressed: true}
	b := ChunkInfo{CompressedOffset: 100, CompressedSize: 50, UncompressedOffset: 0x2000, UncompressedSize: 60, Compressed: true}
	for _, tc := range []struct {
		name     string
		infos    []ChunkInfo
		features uint32
		ok       bool
	}{
		{"sorted", []ChunkInfo{a, b}, 0, true},
		{"uncompressed out of order", []ChunkInfo{b, a}, 0, false},
		{"uncompressed overlap", []ChunkInfo{a, {CompressedOffset: 100, CompressedSize: 1, UncompressedOffset: 0x1000, UncompressedSize: 1}}, 0, false},
		{"compressed overlap", []ChunkInfo{a, {CompressedOffset: 99, CompressedSize: 50, UncompressedOffset: 0x2000, UncompressedSize: 60, Compressed: true}}, 0, false},
		{"compressed overlap in a zran blob", []ChunkInfo{a, {CompressedOffset: 0, CompressedSize: 100, UncompressedOffset: 0x2000, UncompressedSize: 60}}, FeatureZran, true},
	} {
		err := checkOrder(tc.infos, tc.features)
		if tc.ok != (err == nil) || err != nil && !errors.Is(err, rafs.ErrCorrupt) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}
