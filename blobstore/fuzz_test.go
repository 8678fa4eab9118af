package blobstore

import (
	"encoding/binary"
	"testing"
)

// FuzzDecodeRanges feeds arbitrary records to the decoder of a blob's index ranges: it must never
// panic, and what it accepts must be a valid set within the blob.
func FuzzDecodeRanges(f *testing.F) {
	rec := func(pairs ...uint64) []byte {
		var b []byte
		for _, p := range pairs {
			b = binary.BigEndian.AppendUint64(b, p)
		}
		return b
	}
	f.Add(rec(0, 10, 10, 20, 30, 40), int64(100))
	f.Add(rec(5, 3), int64(100))
	f.Add(rec(0, 200), int64(100))
	f.Add(rec(10, 20, 15, 30), int64(100))
	f.Add([]byte{1, 2, 3}, int64(1))
	f.Fuzz(func(t *testing.T, data []byte, size int64) {
		if size <= 0 || size > MaxBlobSize {
			return
		}
		pos := 0
		next := func() ([]byte, []byte) {
			if pos >= len(data) {
				return nil, nil
			}
			end := min(pos+16, len(data))
			r := data[pos:end]
			pos = end
			if len(r) < 16 {
				return r, nil
			}
			return r[:8], r[8:]
		}
		ss, err := decodeRanges(size, next)
		if err != nil {
			return
		}
		var total int64
		for i, s := range ss.s {
			if s.off < 0 || s.off >= s.end || s.end > size || (i > 0 && ss.s[i-1].end >= s.off) {
				t.Fatalf("accepted invalid set %v for size %d", ss.s, size)
			}
			total += s.end - s.off
		}
		if total != ss.total {
			t.Fatalf("total %d, counted %d", ss.total, total)
		}
	})
}
