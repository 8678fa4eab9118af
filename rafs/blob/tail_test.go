package blob

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/dfnydus/dfnydus/rafs"
)

// tailOnly reads a blob's bytes from start on and refuses anything before: the chunk data.
type tailOnly struct {
	file  []byte
	start int64
}

func (r tailOnly) ReadAt(p []byte, off int64) (int, error) {
	if off < r.start {
		return 0, fmt.Errorf("read at %d: chunk data (before %d) is not here", off, r.start)
	}
	return bytes.NewReader(r.file).ReadAt(p, off)
}

// The tail of a blob is verified from the tail alone, whatever the blob holds: every compressor,
// with and without an inlined bootstrap, and the upstream fixture built by nydus-image 2.2.
func TestVerifyTail(t *testing.T) {
	type blobCase struct {
		name  string
		file  []byte
		entry *rafs.Blob
		data  int64 // where the chunk data ends
	}
	var cases []blobCase
	for _, comp := range []rafs.Compressor{rafs.CompressNone, rafs.CompressZstd, rafs.CompressLZ4Block, rafs.CompressGzip} {
		for _, boot := range [][]byte{nil, textBytes(30000)} {
			opts := WriterOptions{Compressor: comp, Digester: rafs.DigestBlake3, ChunkSize: 0x10000}
			file, recs, b := writeBlob(t, opts, sampleChunks(0x10000), boot)
			last := recs[len(recs)-1]
			cases = append(cases, blobCase{fmt.Sprintf("%v, bootstrap inlined %v", comp, boot != nil), file, b,
				int64(last.CompressedOffset) + int64(last.CompressedSize)})
		}
	}
	fixture := readFixture(t)
	fe := v6FixtureEntry(t)
	cases = append(cases, blobCase{"nydus-image 2.2 fixture", fixture, fe, int64(fe.MetaOffset) - tarBlockSize})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			start, err := VerifyTail(tailOnly{tc.file, tc.data}, int64(len(tc.file)), tc.entry)
			if err != nil {
				t.Fatal(err)
			}
			if start != tc.data {
				t.Errorf("tail starts at %d, the chunk data ends at %d", start, tc.data)
			}
		})
	}
}

// No byte of a tail can change and still pass, but for the stored bytes of a compressed section:
// its digest is of what it decodes to (as a chunk's is), and a change that decodes to the same
// content (a zstd frame header's unused bits) passes as it does for chunks.
func TestVerifyTailRefusesEveryChangedByte(t *testing.T) {
	s := newSampleBlob(t)
	start, err := VerifyTail(bytes.NewReader(s.file), int64(len(s.file)), s.entry)
	if err != nil {
		t.Fatal(err)
	}
	compressed := func(off int64) bool {
		for _, e := range s.toc {
			if alg, _ := e.Compressor(); alg != rafs.CompressNone && uint64(off) >= e.start() && uint64(off) < e.start()+e.CompressedSize {
				return true
			}
		}
		return false
	}
	passed := 0
	for off := start; off < int64(len(s.file)); off++ {
		bad := bytes.Clone(s.file)
		bad[off] ^= 0x01
		_, err := VerifyTail(bytes.NewReader(bad), int64(len(bad)), s.entry)
		switch {
		case err == nil && compressed(off):
			passed++
		case err == nil:
			t.Fatalf("byte %d of the tail [%d, %d) changed and the tail still verified", off, start, len(s.file))
		case !errors.Is(err, rafs.ErrCorrupt) && !errors.Is(err, ErrTailUnverifiable):
			t.Fatalf("byte %d changed: %v, want a corrupt or unverifiable tail", off, err)
		}
	}
	if passed > 8 {
		t.Errorf("%d changed bytes of compressed sections decoded to the same content, want a few header bits at most", passed)
	}
}

func TestVerifyTailRefuses(t *testing.T) {
	s := newSampleBlob(t)
	cases := []struct {
		name  string
		file  func() []byte
		entry func() *rafs.Blob
		want  error
	}{
		{"no ToC digest in the bootstrap", nil, func() *rafs.Blob { b := *s.entry; b.TOCDigest = rafs.Digest{}; return &b }, ErrTailUnverifiable},
		{"another ToC digest in the bootstrap", nil, func() *rafs.Blob { b := *s.entry; b.TOCDigest[0] ^= 1; return &b }, rafs.ErrCorrupt},
		{"another ToC size in the bootstrap", nil, func() *rafs.Blob { b := *s.entry; b.TOCSize += tocEntrySize; return &b }, rafs.ErrCorrupt},
		{"a ToC size larger than the blob", nil, func() *rafs.Blob { b := *s.entry; b.TOCSize = 1 << 30; return &b }, rafs.ErrCorrupt},
		{"a blob cut short", func() []byte { return s.file[:len(s.file)-1] }, nil, rafs.ErrCorrupt},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			file, entry := s.file, s.entry
			if tc.file != nil {
				file = tc.file()
			}
			if tc.entry != nil {
				entry = tc.entry()
			}
			_, err := VerifyTail(bytes.NewReader(file), int64(len(file)), entry)
			if !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// A tail whose bytes are not all here yet fails with the read error, neither corrupt nor
// unverifiable: the caller tries again when they are.
func TestVerifyTailNotHereYet(t *testing.T) {
	s := newSampleBlob(t)
	_, err := VerifyTail(tailOnly{s.file, int64(len(s.file)) - 100}, int64(len(s.file)), s.entry)
	if err == nil || errors.Is(err, rafs.ErrCorrupt) || errors.Is(err, ErrTailUnverifiable) {
		t.Errorf("got %v, want the read error", err)
	}
	var _ io.ReaderAt = tailOnly{}
}
