package blob

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/dfnydus/dfnydus/rafs"
)

// ErrTailUnverifiable is wrapped by VerifyTail when the blob's tail holds bytes that no digest of
// the ToC vouches for (no ToC recorded in the bootstrap, a section the ToC gives no digest, a tar
// header other than the one nydus-image writes, a gap): only the whole blob's sha256 can verify
// them. It says nothing about whether the bytes are right.
var ErrTailUnverifiable = errors.New("blob tail cannot be verified without the whole blob")

// VerifyTail verifies the bytes of a nydus 2.2+ blob that follow its chunk data (image.blob's tar
// header, blob.meta and its header, blob.digest, an inlined bootstrap, their tar headers, and the
// ToC) without reading the chunk data, against what the bootstrap records: the ToC's size and
// sha256 (b.TOCSize, b.TOCDigest; the bootstrap is verified against its own digest). The ToC then
// vouches for each section by its sha256, and each tar header must be byte for byte the one
// nydus-image writes for that section (tarHeader). Every byte from start to the end of the blob
// is then verified; a blob's chunk data ends at start.
//
// r must read the blob's tail; a read error (bytes not here yet) is returned as is. A tail that
// disagrees with a digest wraps rafs.ErrCorrupt; one that no digest covers wraps
// ErrTailUnverifiable.
func VerifyTail(r io.ReaderAt, size int64, b *rafs.Blob) (start int64, err error) {
	if b.TOCSize == 0 || b.TOCDigest.IsZero() {
		return 0, fmt.Errorf("%w: the bootstrap records no ToC digest", ErrTailUnverifiable)
	}
	if int64(b.TOCSize) > size || b.TOCSize <= tarBlockSize {
		return 0, rafs.Corruptf("ToC of %d bytes in a %d-byte blob", b.TOCSize, size)
	}
	rd, err := Open(r, size)
	if err != nil {
		return 0, err
	}
	if !rd.hasTOC {
		return 0, rafs.Corruptf("the bootstrap records a ToC, the blob ends without one")
	}
	if rd.tocSize != b.TOCSize || rd.tocDigest != b.TOCDigest {
		return 0, rafs.Corruptf("ToC of %d bytes with sha256 %s, the bootstrap records %d bytes with %s",
			rd.tocSize, rd.tocDigest, b.TOCSize, b.TOCDigest)
	}
	data := rd.entry(NameBlobData)
	if data == nil {
		return 0, fmt.Errorf("%w: the ToC has no %s", ErrTailUnverifiable, NameBlobData)
	}
	type span struct{ off, end uint64 }
	spans := []span{{rd.tocOff, uint64(size)}} // the ToC and its tar header: the bootstrap's digest
	header := func(off uint64, name string, n uint64) error {
		if off+tarBlockSize > rd.tocOff {
			return rafs.Corruptf("tar header of %q at %d runs into the ToC at %d", name, off, rd.tocOff)
		}
		got := make([]byte, tarBlockSize)
		if err := rd.readAt(got, off, "tar header of "+name); err != nil {
			return err
		}
		want := tarHeader(name, n)
		if !bytes.Equal(got, want[:]) {
			if gotName, gotSize, perr := parseTarHeader(got); perr == nil && gotName == name && gotSize == n {
				// A header nydus-image would not write byte for byte (another mtime, mode or
				// format): right for readers, but no digest covers its other bytes.
				return fmt.Errorf("%w: tar header of %q at %d is not the one nydus-image writes", ErrTailUnverifiable, name, off)
			}
			return rafs.Corruptf("tar header at %d is not the header of %q (%d bytes)", off, name, n)
		}
		spans = append(spans, span{off, off + tarBlockSize})
		return nil
	}
	// image.blob's digest covers the chunk data: only its header belongs to the tail.
	if data.start() != 0 {
		return 0, rafs.Corruptf("%s starts at %d, not at the start of the blob", NameBlobData, data.start())
	}
	for i := range rd.toc {
		e := &rd.toc[i]
		if off, n, ok := rd.tarHeaderOf(e); ok {
			if err := header(off, e.Name, n); err != nil {
				return 0, err
			}
		}
		if e.Name == NameBlobData {
			continue
		}
		if e.Digest.IsZero() {
			return 0, fmt.Errorf("%w: the ToC gives %q no digest", ErrTailUnverifiable, e.Name)
		}
		s, err := entrySection(e)
		if err != nil {
			return 0, err
		}
		got, err := s.sum(rd.r)
		if err != nil {
			return 0, err
		}
		if got != e.Digest {
			return 0, rafs.Corruptf("ToC entry %q: sha256 %s, ToC says %s", e.Name, got, e.Digest)
		}
		spans = append(spans, span{e.start(), e.start() + e.CompressedSize})
	}
	// What the digests vouch for must be exactly the tail: every byte, none twice.
	sort.Slice(spans, func(i, j int) bool { return spans[i].off < spans[j].off })
	at := data.CompressedSize
	for _, s := range spans {
		if s.off != at {
			return 0, fmt.Errorf("%w: bytes [%d, %d) lie in no section the ToC vouches for", ErrTailUnverifiable, min(at, s.off), max(at, s.off))
		}
		at = s.end
	}
	if at != uint64(size) {
		return 0, fmt.Errorf("%w: the tail ends at %d, the blob at %d", ErrTailUnverifiable, at, size)
	}
	return int64(data.CompressedSize), nil
}
