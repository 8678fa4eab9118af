package blobstore

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"testing"

	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"
)

// testID is a valid blob id derived from n.
func testID(n int) string {
	h := sha256.Sum256([]byte(fmt.Sprint(n)))
	return hex.EncodeToString(h[:])
}

// pattern is the verified content of blob id at off: never zero, so a punched byte shows.
func pattern(id string, off int64, n int) []byte {
	p := make([]byte, n)
	seed := byte(id[0]) + byte(id[1])*7
	for i := range p {
		o := off + int64(i)
		p[i] = byte(o*131+o>>9) ^ seed | 1
	}
	return p
}

// junk is the content of pending bytes: different from pattern, never zero.
func junk(off int64, n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(off+int64(i)) | 0x80
	}
	return p
}

func testOptions(t testing.TB) Options {
	o := DefaultOptions()
	o.Log = zaptest.NewLogger(t)
	return o
}

func openT(t testing.TB, dir string, o Options) *Store {
	t.Helper()
	s, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func mustBlob(t testing.TB, s *Store, id string, size int64) *Blob {
	t.Helper()
	b, err := s.Blob(id, size)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fileBytes reads the blob's file directly.
func fileBytes(t testing.TB, s *Store, id string) []byte {
	t.Helper()
	p, err := os.ReadFile(s.blobPath(id))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// dataRanges lists the allocated extents of a file with SEEK_DATA/SEEK_HOLE.
func dataRanges(t testing.TB, path string) []Range {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	info, _ := f.Stat()
	fd := int(f.Fd())
	var out []Range
	for off := int64(0); off < info.Size(); {
		d, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		h, err := unix.Seek(fd, d, unix.SEEK_HOLE)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, Range{d, h - d})
		off = h
	}
	return out
}

// checkFile verifies that the blob's file holds the pattern in every verified range and zeros
// everywhere else (nothing pending survives).
func checkFile(t testing.TB, s *Store, b *Blob, allowPending bool) {
	t.Helper()
	p := fileBytes(t, s, b.ID())
	if int64(len(p)) != b.Size() {
		t.Fatalf("blob %s: file of %d bytes, want %d", b.ID()[:8], len(p), b.Size())
	}
	pos := int64(0)
	for _, r := range b.Ranges() {
		for i := pos; i < r.Off && !allowPending; i++ {
			if p[i] != 0 {
				t.Fatalf("blob %s: byte %d not verified but %#x on disk", b.ID()[:8], i, p[i])
			}
		}
		if !bytes.Equal(p[r.Off:r.End()], pattern(b.ID(), r.Off, int(r.Len))) {
			want := pattern(b.ID(), r.Off, int(r.Len))
			got := p[r.Off:r.End()]
			first, zeros, junks := -1, 0, 0
			jk := junk(r.Off, int(r.Len))
			for i := range got {
				if got[i] != want[i] {
					if first < 0 {
						first = i
					}
					if got[i] == 0 {
						zeros++
					} else if got[i] == jk[i] {
						junks++
					}
				}
			}
			t.Fatalf("blob %s: verified range %v does not hold the written bytes: first bad at +%d, %d zeros, %d junk", b.ID()[:8], r, first, zeros, junks)
		}
		pos = r.End()
	}
	for i := pos; i < int64(len(p)) && !allowPending; i++ {
		if p[i] != 0 {
			t.Fatalf("blob %s: byte %d not verified but %#x on disk", b.ID()[:8], i, p[i])
		}
	}
}

func errorsIs(err, target error) bool { return errors.Is(err, target) }
