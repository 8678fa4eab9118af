package blob

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/dfnydus/dfnydus/rafs"
)

// sampleBlob is a v6 blob with several chunks and an inlined bootstrap, plus where its parts are.
type sampleBlob struct {
	file   []byte
	recs   []rafs.Chunk
	entry  *rafs.Blob
	toc    map[string]TOCEntry
	tocOff int // first ToC entry
	hdrOff int // blob.meta header
	opts   WriterOptions
}

func newSampleBlob(t testing.TB) *sampleBlob {
	t.Helper()
	opts := WriterOptions{Compressor: rafs.CompressZstd, Digester: rafs.DigestBlake3, ChunkSize: 0x10000}
	chunks := make([][]byte, 0, 40)
	for i := range 40 { // enough chunks for a compressed blob.meta
		chunks = append(chunks, textBytes(1000+i*37))
	}
	file, recs, b := writeBlob(t, opts, chunks, textBytes(20000))
	rd, err := Open(bytes.NewReader(file), int64(len(file)))
	if err != nil {
		t.Fatal(err)
	}
	s := &sampleBlob{file: file, recs: recs, entry: b, toc: map[string]TOCEntry{}, opts: opts,
		tocOff: int(rd.tocOff), hdrOff: int(rd.metaHdrOff)}
	for _, e := range rd.TOC() {
		s.toc[e.Name] = e
	}
	if h, _ := rd.MetaHeader(); h.CICompressor != rafs.CompressZstd {
		t.Fatalf("sample blob.meta is stored %v, want zstd", h.CICompressor)
	}
	return s
}

// tocEntryAt returns the file offset of the named ToC entry.
func (s *sampleBlob) tocEntryAt(t testing.TB, name string) int {
	for off := s.tocOff; off < len(s.file)-tarBlockSize; off += tocEntrySize {
		if e, err := decodeTOCEntry(s.file[off : off+tocEntrySize]); err == nil && e.Name == name {
			return off
		}
	}
	t.Fatalf("no ToC entry %q", name)
	return 0
}

// readEverything opens the blob and reads every part of it, returning the first error.
func readEverything(file []byte, b *rafs.Blob, recs []rafs.Chunk, opts WriterOptions) error {
	rd, err := Open(bytes.NewReader(file), int64(len(file)))
	if err != nil {
		return err
	}
	if err := rd.Verify(b); err != nil {
		return err
	}
	if _, err := rd.ChunkInfos(); err != nil {
		return err
	}
	if _, err := rd.Digests(); err != nil {
		return err
	}
	if _, err := rd.Bootstrap(); err != nil && !errors.Is(err, ErrNoBootstrap) {
		return err
	}
	for i := range recs {
		if _, err := ReadChunk(bytes.NewReader(file), b.ID, &recs[i], opts.Compressor, opts.Digester, nil); err != nil {
			return err
		}
	}
	return nil
}

func fixTarSum(h []byte) {
	var blk [tarBlockSize]byte
	copy(blk[:], h)
	putOctal(h[tarSumOff:tarSumOff+tarSumLen], uint64(tarChecksum(&blk)))
}

func TestCorruption(t *testing.T) {
	s := newSampleBlob(t)
	if err := readEverything(s.file, s.entry, s.recs, s.opts); err != nil {
		t.Fatalf("pristine blob: %v", err)
	}
	le := binary.LittleEndian
	tail := len(s.file) - tarBlockSize
	chunk2 := int(s.recs[2].CompressedOffset) + 3

	for _, tc := range []struct {
		name   string
		mutate func(f []byte) []byte
		atOpen bool   // Open itself must refuse it
		want   string // the error must mention this
	}{
		{name: "truncated by one byte", mutate: func(f []byte) []byte { return f[:len(f)-1] }},
		{name: "truncated before the ToC", mutate: func(f []byte) []byte { return f[:s.tocOff] }},
		{name: "truncated to half", mutate: func(f []byte) []byte { return f[:len(f)/2] }},
		{name: "truncated to 100 bytes", mutate: func(f []byte) []byte { return f[:100] }},
		{name: "truncated to nothing", mutate: func(f []byte) []byte { return f[:0] }},
		{name: "ToC tar header byte flipped", atOpen: true, want: "checksum",
			mutate: func(f []byte) []byte { f[tail+5] ^= 1; return f }},
		{name: "ToC tar header says a non-regular file", atOpen: true, want: "regular",
			mutate: func(f []byte) []byte { f[tail+tarTypeOff] = '5'; fixTarSum(f[tail:]); return f }},
		{name: "ToC size not a multiple of 128", atOpen: true, want: "ToC",
			mutate: func(f []byte) []byte {
				putOctal(f[tail+tarSizeOff:tail+tarSizeOff+tarSizeLen], 130)
				fixTarSum(f[tail:])
				return f
			}},
		{name: "ToC size larger than the file", atOpen: true,
			mutate: func(f []byte) []byte {
				putOctal(f[tail+tarSizeOff:tail+tarSizeOff+tarSizeLen], 1<<32)
				fixTarSum(f[tail:])
				return f
			}},
		{name: "ToC with absurdly many entries", atOpen: true,
			mutate: func(f []byte) []byte {
				putOctal(f[tail+tarSizeOff:tail+tarSizeOff+tarSizeLen], 128*1000)
				fixTarSum(f[tail:])
				return f
			}},
		{name: "ToC entry digest flipped", want: "blob.digest",
			mutate: func(f []byte) []byte { f[s.tocEntryAt(t, NameDigest)+30] ^= 1; return f }},
		{name: "ToC entry name changed", want: "iMage.blob",
			mutate: func(f []byte) []byte { f[s.tocEntryAt(t, NameBlobData)+9] = 'M'; return f }},
		{name: "ToC entry offset outside the file", atOpen: true, want: "past the ToC",
			mutate: func(f []byte) []byte { le.PutUint64(f[s.tocEntryAt(t, NameDigest)+56:], 1<<50); return f }},
		{name: "ToC entry size outside the file", atOpen: true, want: "past the ToC",
			mutate: func(f []byte) []byte { le.PutUint64(f[s.tocEntryAt(t, NameBootstrap)+64:], 1<<62); return f }},
		{name: "ToC entry size wraps around", atOpen: true, want: "past the ToC",
			mutate: func(f []byte) []byte { le.PutUint64(f[s.tocEntryAt(t, NameBootstrap)+64:], ^uint64(0)-10); return f }},
		{name: "ToC entry with unknown flags", atOpen: true, want: "flags",
			mutate: func(f []byte) []byte { le.PutUint32(f[s.tocEntryAt(t, NameDigest):], 0x100); return f }},
		{name: "ToC entry with two compressors", atOpen: true, want: "compressor",
			mutate: func(f []byte) []byte { le.PutUint32(f[s.tocEntryAt(t, NameDigest):], 3); return f }},
		{name: "ToC names an entry twice", atOpen: true, want: "twice",
			mutate: func(f []byte) []byte {
				copy(f[s.tocEntryAt(t, NameDigest)+8:], NameBootstrap+"\x00")
				return f
			}},
		{name: "bootstrap claims an absurd expansion", atOpen: true, want: "expand",
			mutate: func(f []byte) []byte { le.PutUint64(f[s.tocEntryAt(t, NameBootstrap)+72:], 1<<45); return f }},
		{name: "blob.meta header magic", atOpen: true, want: "magic",
			mutate: func(f []byte) []byte { f[s.hdrOff] ^= 0xff; return f }},
		{name: "blob.meta header second magic", atOpen: true, want: "magic",
			mutate: func(f []byte) []byte { f[s.hdrOff+MetaHeaderSize-1] ^= 0xff; return f }},
		{name: "blob.meta header with absurd entry count", atOpen: true, want: "chunk infos",
			mutate: func(f []byte) []byte { le.PutUint32(f[s.hdrOff+12:], 0xffff_ffff); return f }},
		{name: "blob.meta with more entries than digests", atOpen: true, want: "digests",
			mutate: func(f []byte) []byte {
				le.PutUint32(f[s.hdrOff+12:], 20_000)
				le.PutUint64(f[s.hdrOff+32:], 320_000)
				le.PutUint64(f[s.tocEntryAt(t, NameMeta)+72:], 320_000)
				return f
			}},
		{name: "blob.meta with more entries than chunk data bytes", atOpen: true, want: "cannot fit",
			mutate: func(f []byte) []byte {
				le.PutUint32(f[s.hdrOff+12:], 20_000)
				le.PutUint64(f[s.hdrOff+32:], 320_000)
				le.PutUint64(f[s.tocEntryAt(t, NameMeta)+72:], 320_000)
				copy(f[s.tocEntryAt(t, NameDigest)+8:], "blob.digesX")
				return f
			}},
		{name: "blob.meta header offset disagrees with the ToC", atOpen: true, want: "disagrees",
			mutate: func(f []byte) []byte { le.PutUint64(f[s.hdrOff+16:], 12345); return f }},
		{name: "blob.meta header sizes disagree", atOpen: true,
			mutate: func(f []byte) []byte { le.PutUint64(f[s.hdrOff+32:], 48); return f }},
		{name: "blob.meta header unknown compressor", atOpen: true, want: "compressor",
			mutate: func(f []byte) []byte { le.PutUint32(f[s.hdrOff+8:], 7); return f }},
		{name: "blob.meta header v2 flag", atOpen: true,
			mutate: func(f []byte) []byte { f[s.hdrOff+4] |= byte(FeatureChunkInfoV2); return f }},
		{name: "chunk-info array byte flipped", want: NameMeta,
			mutate: func(f []byte) []byte {
				m := s.toc[NameMeta]
				f[m.CompressedOffset+m.CompressedSize/2] ^= 0x10
				return f
			}},
		{name: "blob.digest byte flipped", want: NameDigest,
			mutate: func(f []byte) []byte { f[s.toc[NameDigest].CompressedOffset+40] ^= 1; return f }},
		{name: "bootstrap byte flipped", want: NameBootstrap,
			mutate: func(f []byte) []byte { f[s.toc[NameBootstrap].CompressedOffset+20] ^= 1; return f }},
		{name: "section tar header renamed", want: "tar header",
			mutate: func(f []byte) []byte {
				at := int(s.toc[NameDigest].CompressedOffset + s.toc[NameDigest].CompressedSize)
				f[at] = 'B'
				fixTarSum(f[at : at+tarBlockSize])
				return f
			}},
		{name: "chunk data byte flipped", want: "image.blob",
			mutate: func(f []byte) []byte { f[chunk2] ^= 0x55; return f }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.mutate(bytes.Clone(s.file))
			if tc.atOpen {
				_, err := Open(bytes.NewReader(f), int64(len(f)))
				if !errors.Is(err, rafs.ErrCorrupt) {
					t.Fatalf("Open: %v, want an error wrapping ErrCorrupt", err)
				}
				if !strings.Contains(err.Error(), tc.want) {
					t.Errorf("Open: %v, want it to mention %q", err, tc.want)
				}
			}
			err := readEverything(f, s.entry, s.recs, s.opts)
			t.Log(err)
			if !errors.Is(err, rafs.ErrCorrupt) {
				t.Fatalf("read: %v, want an error wrapping ErrCorrupt", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("read: %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

// TestCorruptChunk: ReadChunk names the chunk and the blob when the bytes or the record are bad.
func TestCorruptChunk(t *testing.T) {
	s := newSampleBlob(t)
	f := bytes.Clone(s.file)
	f[s.recs[2].CompressedOffset+3] ^= 0x55
	for i := range s.recs {
		_, err := ReadChunk(bytes.NewReader(f), s.entry.ID, &s.recs[i], s.opts.Compressor, s.opts.Digester, nil)
		if i != 2 {
			if err != nil {
				t.Errorf("chunk %d: %v", i, err)
			}
			continue
		}
		if !errors.Is(err, rafs.ErrCorrupt) || !strings.Contains(err.Error(), "chunk 2") ||
			!strings.Contains(err.Error(), s.entry.ID) {
			t.Errorf("flipped chunk 2: %v, want ErrCorrupt naming chunk 2 and blob %s", err, s.entry.ID)
		}
	}

	good := s.recs[1]
	for _, tc := range []struct {
		name string
		edit func(c *rafs.Chunk)
		comp rafs.Compressor
	}{
		{"offset past the end", func(c *rafs.Chunk) { c.CompressedOffset = uint64(len(s.file)) - 2 }, s.opts.Compressor},
		{"offset out of range", func(c *rafs.Chunk) { c.CompressedOffset = 1 << 62 }, s.opts.Compressor},
		{"zero uncompressed size", func(c *rafs.Chunk) { c.UncompressedSize = 0 }, s.opts.Compressor},
		{"huge uncompressed size", func(c *rafs.Chunk) { c.UncompressedSize = 1 << 30 }, s.opts.Compressor},
		{"huge compressed size", func(c *rafs.Chunk) { c.CompressedSize = 1 << 30 }, s.opts.Compressor},
		{"raw with different sizes", func(c *rafs.Chunk) { c.Flags = 0 }, s.opts.Compressor},
		{"wrong digest", func(c *rafs.Chunk) { c.Digest[0] ^= 1 }, s.opts.Compressor},
		{"wrong compressor", func(c *rafs.Chunk) {}, rafs.CompressLZ4Block},
		{"wrong uncompressed size", func(c *rafs.Chunk) { c.UncompressedSize-- }, s.opts.Compressor},
	} {
		c := good
		tc.edit(&c)
		_, err := ReadChunk(bytes.NewReader(s.file), s.entry.ID, &c, tc.comp, s.opts.Digester, nil)
		if !errors.Is(err, rafs.ErrCorrupt) || !strings.Contains(err.Error(), "chunk 1") {
			t.Errorf("%s: %v, want ErrCorrupt naming chunk 1", tc.name, err)
		}
	}
	c := good
	c.Flags |= rafs.ChunkEncrypted
	if _, err := ReadChunk(bytes.NewReader(s.file), s.entry.ID, &c, s.opts.Compressor, s.opts.Digester, nil); err == nil {
		t.Error("encrypted chunk: no error")
	}
}

// TestVerifyTableEntry: Verify(b) catches every table field that disagrees with the blob.
func TestVerifyTableEntry(t *testing.T) {
	s := newSampleBlob(t)
	rd, err := Open(bytes.NewReader(s.file), int64(len(s.file)))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		edit func(b *rafs.Blob)
	}{
		{"compressed size", func(b *rafs.Blob) { b.CompressedSize-- }},
		{"uncompressed size", func(b *rafs.Blob) { b.UncompressedSize += 4096 }},
		{"chunk count", func(b *rafs.Blob) { b.ChunkCount++ }},
		{"features", func(b *rafs.Blob) { b.Features &^= FeatureHasTOC }},
		{"meta offset", func(b *rafs.Blob) { b.MetaOffset++ }},
		{"meta compressed size", func(b *rafs.Blob) { b.MetaCompressedSize++ }},
		{"meta uncompressed size", func(b *rafs.Blob) { b.MetaUncompressedSize += 16 }},
		{"meta compressor", func(b *rafs.Blob) { b.MetaCompressor = rafs.CompressLZ4Block }},
		{"ToC size", func(b *rafs.Blob) { b.TOCSize += 128 }},
		{"ToC digest", func(b *rafs.Blob) { b.TOCDigest[31] ^= 1 }},
		{"meta digest", func(b *rafs.Blob) { b.MetaDigest[0] = 1 }},
		{"meta size", func(b *rafs.Blob) { b.MetaSize = 7 }},
	} {
		b := *s.entry
		tc.edit(&b)
		if err := rd.Verify(&b); !errors.Is(err, rafs.ErrCorrupt) {
			t.Errorf("%s: Verify = %v, want ErrCorrupt", tc.name, err)
		}
	}
	// A merged bootstrap drops INLINED_FS_META; zero ToC fields mean "not recorded".
	b := *s.entry
	b.Features &^= FeatureInlinedFSMeta
	b.TOCSize, b.TOCDigest = 0, rafs.Digest{}
	if err := rd.Verify(&b); err != nil {
		t.Errorf("merged entry: %v", err)
	}
	// MetaDigest/MetaSize, when set, are the file's own sha256 and size.
	b = *s.entry
	b.MetaDigest, b.MetaSize = hexDigest(t, b.ID), uint64(len(s.file))
	if err := rd.Verify(&b); err != nil {
		t.Errorf("entry with meta digest: %v", err)
	}
}
