package v6

import (
	"bytes"
	"errors"
	"testing"

	"github.com/dfnydus/dfnydus/rafs"
)

// fuzzSeedModel is a compact image with one of everything, to seed the fuzzer with small inputs.
func fuzzSeedModel(t testing.TB) []byte {
	m := newModel(0x1000, testBlob(0))
	f := m.add("/d/f", fileInode(0o644))
	f.Size, f.Chunks = 0x2800, []rafs.Chunk{chunk(0, 0, 0, 0, 0x1000), chunk(0, 1, 0x2000, 0x1000, 0x800)}
	m.add("/d/hard", f)
	m.add("/s", symlinkInode("d/f"))
	m.add("/c", &rafs.Inode{Mode: rafs.SIFCHR | 0o600, Rdev: mkdev(5, 1)})
	m.add("/p", &rafs.Inode{Mode: rafs.SIFIFO | 0o600})
	m.add("/x", fileInode(0o600)).Xattrs = []rafs.Xattr{{Name: "user.k", Value: []byte("v")}, {Name: "trusted.t", Value: nil}}
	m.img.Prefetch = []string{"/d"}
	data, err := Encode(m.img)
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	return data
}

// FuzzDecode feeds arbitrary bytes to Decode. It must never panic, and any error must wrap
// rafs.ErrCorrupt or ErrUnsupported. When a decoded model can be encoded again, the encoding must
// decode, and re-encoding that must give the same bytes (Encode is a fixpoint on its own output).
func FuzzDecode(f *testing.F) {
	f.Add(readFixture(f, fixtureBoot))
	f.Add(corruptBase(f))
	f.Add(fuzzSeedModel(f))
	f.Fuzz(func(t *testing.T, data []byte) {
		img, err := Decode(data)
		if err != nil {
			if !errors.Is(err, rafs.ErrCorrupt) && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("Decode error %q wraps neither ErrCorrupt nor ErrUnsupported", err)
			}
			return
		}
		first, err := Encode(img)
		if err != nil {
			return // a decodable image may still break Encode's rules (say, unaligned offsets)
		}
		again, err := Decode(first)
		if err != nil {
			t.Fatalf("Decode(Encode(Decode(data))): %v", err)
		}
		second, err := Encode(again)
		if err != nil {
			t.Fatalf("Encode(Decode(Encode(Decode(data)))): %v", err)
		}
		if !bytes.Equal(first, second) {
			t.Fatalf("Encode is not a fixpoint:\n%s", firstDiffs(first, second, 8))
		}
	})
}
