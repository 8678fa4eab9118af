package blob

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/digest"
)

var (
	allCompressors = []rafs.Compressor{rafs.CompressNone, rafs.CompressLZ4Block, rafs.CompressGzip, rafs.CompressZstd}
	allDigesters   = []rafs.Digester{rafs.DigestBlake3, rafs.DigestSHA256}
)

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func textBytes(n int) []byte {
	const s = "the quick brown fox jumps over the lazy dog; nydus chunks compress well when they are text.\n"
	return []byte(strings.Repeat(s, n/len(s)+1)[:n])
}

// sampleChunks returns chunks of varied content for a chunk size: zeros, random, text, a single
// byte, a full chunk, and sizes that are not multiples of 4 KiB.
func sampleChunks(chunkSize int) [][]byte {
	return [][]byte{
		make([]byte, chunkSize),            // zeros, full chunk
		randomBytes(1, chunkSize),          // incompressible, full chunk
		textBytes(chunkSize/2 + 123),       // compressible, unaligned size
		{0x42},                             // one byte
		randomBytes(2, chunkSize/3+1),      // incompressible, unaligned size
		textBytes(chunkSize),               // compressible, full chunk
		append(textBytes(100), 0, 1, 2, 3), // small
	}
}

// writeBlob writes chunks (and an optional bootstrap) and returns the file, the records and the
// table entry.
func writeBlob(t testing.TB, opts WriterOptions, chunks [][]byte, boot []byte) ([]byte, []rafs.Chunk, *rafs.Blob) {
	t.Helper()
	var buf bytes.Buffer
	w := NewWriter(&buf, opts)
	var recs []rafs.Chunk
	for i, data := range chunks {
		var c rafs.Chunk
		var err error
		if i%2 == 0 {
			c, err = w.AddChunk(data, digest.Sum(opts.Digester, data))
		} else {
			var p Prepared
			if p, err = Prepare(opts, data, digest.Sum(opts.Digester, data)); err == nil {
				c, err = w.AddPrepared(p)
			}
		}
		if err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
		recs = append(recs, c)
	}
	if w.ChunkCount() != len(chunks) {
		t.Fatalf("ChunkCount() = %d, want %d", w.ChunkCount(), len(chunks))
	}
	b, err := w.Finish(boot)
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), recs, b
}

func TestWriterRoundTrip(t *testing.T) {
	for _, comp := range allCompressors {
		for _, dig := range allDigesters {
			for _, cs := range []uint32{rafs.MinChunkSize, 0x10000, rafs.DefaultChunkSize} {
				opts := WriterOptions{Compressor: comp, Digester: dig, ChunkSize: cs}
				t.Run(fmt.Sprintf("%v/%v/%#x", comp, dig, cs), func(t *testing.T) {
					t.Parallel()
					checkRoundTrip(t, opts, sampleChunks(int(cs)), nil)
				})
			}
		}
	}
}

func TestWriterInlinedBootstrap(t *testing.T) {
	for _, tc := range []struct {
		name string
		boot []byte
		flag uint32 // how image.boot is stored
	}{
		{"compressible", textBytes(50000), TOCCompressZstd},
		{"incompressible", randomBytes(7, 3000), TOCCompressNone},
		{"one byte", []byte{1}, TOCCompressNone},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := WriterOptions{Compressor: rafs.CompressZstd, Digester: rafs.DigestBlake3}
			file := checkRoundTrip(t, opts, sampleChunks(rafs.DefaultChunkSize)[:3], tc.boot)
			rd, err := Open(bytes.NewReader(file), int64(len(file)))
			if err != nil {
				t.Fatal(err)
			}
			if e := rd.entry(NameBootstrap); e == nil || e.Flags != tc.flag {
				t.Errorf("image.boot entry %+v, want flags %#x", e, tc.flag)
			}
		})
	}
}

// FinishInline hands the bootstrap encoder the blob's entry as a bootstrap inlined in it must
// record it (placeholder id, the size before image.boot, no ToC: builder/src/lib.rs
// dump_bootstrap), every other field final; an encoder's error fails the blob.
func TestWriterFinishInline(t *testing.T) {
	opts := WriterOptions{Compressor: rafs.CompressLZ4Block, Digester: rafs.DigestSHA256}
	var buf bytes.Buffer
	w := NewWriter(&buf, opts)
	for _, c := range sampleChunks(rafs.DefaultChunkSize)[:3] {
		if _, err := w.AddChunk(c, rafs.Digest{}); err != nil {
			t.Fatal(err)
		}
	}
	var self rafs.Blob
	b, err := w.FinishInline(func(s *rafs.Blob) ([]byte, error) {
		self = *s
		return textBytes(5000), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	rd, err := Open(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	if err := rd.Verify(b); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	boot := rd.entry(NameBootstrap)
	if boot == nil {
		t.Fatal("no image.boot")
	}
	want := *b
	want.ID, want.CompressedSize, want.TOCSize, want.TOCDigest = InlinedBlobID, boot.CompressedOffset, 0, rafs.Digest{}
	if self != want {
		t.Errorf("encoder got\n%+v\nwant\n%+v", self, want)
	}
	if b.Features&FeatureInlinedFSMeta == 0 {
		t.Errorf("features %#x lack INLINED_FS_META", b.Features)
	}

	failing := NewWriter(&bytes.Buffer{}, opts)
	if _, err := failing.FinishInline(func(*rafs.Blob) ([]byte, error) { return nil, errors.New("encoder broke") }); err == nil ||
		!strings.Contains(err.Error(), "encoder broke") {
		t.Errorf("encoder error surfaced as %v", err)
	}
}

// checkRoundTrip writes chunks twice (the files must be identical), then reads everything back.
func checkRoundTrip(t *testing.T, opts WriterOptions, chunks [][]byte, boot []byte) []byte {
	t.Helper()
	file, recs, b := writeBlob(t, opts, chunks, boot)
	again, _, _ := writeBlob(t, opts, chunks, boot)
	if !bytes.Equal(file, again) {
		t.Fatal("two runs wrote different blobs")
	}
	if sum := sha256.Sum256(file); b.ID != hex.EncodeToString(sum[:]) {
		t.Errorf("ID %s is not the sha256 of the file", b.ID)
	}

	wantFeatures := FeatureAligned | FeatureInlinedChunkDigest | FeatureHasTarHeader | FeatureHasTOC | FeatureCapTarTOC
	if boot != nil {
		wantFeatures |= FeatureInlinedFSMeta
	}
	var uend uint64
	for i, c := range recs {
		data := chunks[i]
		if c.Index != uint32(i) || c.UncompressedSize != uint32(len(data)) || c.Digest != digest.Sum(opts.Digester, data) {
			t.Errorf("record %d = %+v", i, c)
		}
		if c.UncompressedOffset%4096 != 0 || c.UncompressedOffset < uend {
			t.Errorf("record %d: uncompressed offset %#x (previous end %#x)", i, c.UncompressedOffset, uend)
		}
		uend = c.UncompressedOffset + uint64(c.UncompressedSize)
		if c.IsCompressed() != (c.CompressedSize < c.UncompressedSize) || opts.Compressor == rafs.CompressNone && c.IsCompressed() {
			t.Errorf("record %d: compressed=%v with sizes %d/%d", i, c.IsCompressed(), c.CompressedSize, c.UncompressedSize)
		}
	}
	wantChunkSize := opts.ChunkSize
	if wantChunkSize == 0 {
		wantChunkSize = rafs.DefaultChunkSize
	}
	want := rafs.Blob{
		ID: b.ID, ChunkSize: wantChunkSize, ChunkCount: uint32(len(chunks)), Compressor: opts.Compressor,
		Digester: opts.Digester, Features: wantFeatures, CompressedSize: uint64(len(file)),
		UncompressedSize: roundUp4K(uend),
		MetaCompressor:   b.MetaCompressor, MetaOffset: b.MetaOffset, MetaCompressedSize: b.MetaCompressedSize,
		MetaUncompressedSize: uint64(16 * len(chunks)), TOCSize: b.TOCSize, TOCDigest: b.TOCDigest,
	}
	if *b != want {
		t.Errorf("table entry %+v\nwant        %+v", *b, want)
	}

	rd, err := Open(bytes.NewReader(file), int64(len(file)))
	if err != nil {
		t.Fatal(err)
	}
	if !rd.HasTOC() {
		t.Fatal("HasTOC() = false")
	}
	if err := rd.Verify(b); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if tail := file[len(file)-int(b.TOCSize):]; sha256.Sum256(tail) != [32]byte(b.TOCDigest) {
		t.Error("TOCDigest is not the sha256 of the ToC and its tar header")
	}
	infos, err := rd.ChunkInfos()
	if err != nil {
		t.Fatal(err)
	}
	ds, err := rd.Digests()
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != len(recs) || len(ds) != len(recs) {
		t.Fatalf("%d chunk infos and %d digests for %d chunks", len(infos), len(ds), len(recs))
	}
	for i := range recs {
		if got := infos[i].Chunk(uint32(i), ds[i]); got != recs[i] {
			t.Errorf("chunk info %d = %+v\nrecord       %+v", i, got, recs[i])
		}
		out, err := ReadChunk(bytes.NewReader(file), b.ID, &recs[i], opts.Compressor, opts.Digester, nil)
		if err != nil {
			t.Fatalf("ReadChunk %d: %v", i, err)
		}
		if !bytes.Equal(out, chunks[i]) {
			t.Errorf("ReadChunk %d returned different bytes", i)
		}
	}
	gotBoot, err := rd.Bootstrap()
	switch {
	case boot == nil && !errors.Is(err, ErrNoBootstrap):
		t.Errorf("Bootstrap() error = %v, want ErrNoBootstrap", err)
	case boot != nil && (err != nil || !bytes.Equal(gotBoot, boot)):
		t.Errorf("Bootstrap() = %d bytes, %v; want the %d bytes written", len(gotBoot), err, len(boot))
	}
	return file
}

// TestMetaCompression covers how blob.meta is stored: like the chunks when that shrinks it, gzip
// replaced by zstd (the ToC cannot name gzip), raw when compression does not help.
func TestMetaCompression(t *testing.T) {
	many := make([][]byte, 300)
	for i := range many {
		many[i] = textBytes(1 + i%50)
	}
	for _, tc := range []struct {
		comp   rafs.Compressor
		chunks [][]byte
		want   rafs.Compressor
	}{
		{rafs.CompressNone, many, rafs.CompressNone},
		{rafs.CompressLZ4Block, many, rafs.CompressLZ4Block},
		{rafs.CompressZstd, many, rafs.CompressZstd},
		{rafs.CompressGzip, many, rafs.CompressZstd},
	} {
		t.Run(fmt.Sprintf("%v/%d", tc.comp, len(tc.chunks)), func(t *testing.T) {
			opts := WriterOptions{Compressor: tc.comp, ChunkSize: rafs.MinChunkSize}
			file := checkRoundTrip(t, opts, tc.chunks, nil)
			rd, err := Open(bytes.NewReader(file), int64(len(file)))
			if err != nil {
				t.Fatal(err)
			}
			h, _ := rd.MetaHeader()
			if h.CICompressor != tc.want {
				t.Errorf("blob.meta stored as %v, want %v", h.CICompressor, tc.want)
			}
		})
	}
}

func TestWriterV5(t *testing.T) {
	chunks := sampleChunks(0x10000)
	for _, aligned := range []bool{false, true} {
		t.Run(fmt.Sprintf("aligned=%v", aligned), func(t *testing.T) {
			opts := WriterOptions{Compressor: rafs.CompressZstd, Digester: rafs.DigestSHA256, ChunkSize: 0x10000,
				Version: 5, AlignedChunk: aligned}
			file, recs, b := writeBlob(t, opts, chunks, nil)
			var data, uend uint64
			for i, c := range recs {
				if c.CompressedOffset != data {
					t.Errorf("chunk %d at %d, want %d (v5 blobs hold only chunk data)", i, c.CompressedOffset, data)
				}
				data += uint64(c.CompressedSize)
				if aligned {
					uend = roundUp4K(uend)
				}
				if c.UncompressedOffset != uend {
					t.Errorf("chunk %d uncompressed offset %d, want %d", i, c.UncompressedOffset, uend)
				}
				uend += uint64(c.UncompressedSize)
			}
			if aligned {
				uend = roundUp4K(uend)
			}
			wantFeatures := FeatureCapTarTOC
			if aligned {
				wantFeatures |= FeatureAligned
			}
			if uint64(len(file)) != data || b.CompressedSize != data || b.UncompressedSize != uend ||
				b.Features != wantFeatures || b.TOCSize != 0 || b.MetaOffset != 0 {
				t.Errorf("entry %+v for a %d-byte file of %d data bytes, view %d", *b, len(file), data, uend)
			}
			rd, err := Open(bytes.NewReader(file), int64(len(file)))
			if err != nil {
				t.Fatal(err)
			}
			if rd.HasTOC() {
				t.Error("v5 blob has a ToC")
			}
			if err := rd.Verify(b); err != nil {
				t.Errorf("Verify: %v", err)
			}
			for i := range recs {
				out, err := ReadChunk(bytes.NewReader(file), b.ID, &recs[i], opts.Compressor, opts.Digester, nil)
				if err != nil || !bytes.Equal(out, chunks[i]) {
					t.Errorf("ReadChunk %d: %v", i, err)
				}
			}
			w := NewWriter(&bytes.Buffer{}, opts)
			if _, err := w.Finish([]byte("boot")); err == nil {
				t.Error("a v5 blob accepted an inlined bootstrap")
			}
		})
	}
}

func TestWriterEmpty(t *testing.T) {
	for _, boot := range [][]byte{nil, textBytes(9000)} {
		file, _, b := writeBlob(t, WriterOptions{}, nil, boot)
		rd, err := Open(bytes.NewReader(file), int64(len(file)))
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range rd.TOC() {
			names = append(names, e.Name)
		}
		want := []string{NameBlobData}
		if boot != nil {
			want = append(want, NameBootstrap)
		}
		if fmt.Sprint(names) != fmt.Sprint(want) {
			t.Errorf("ToC names %v, want %v", names, want)
		}
		if infos, err := rd.ChunkInfos(); infos != nil || err != nil {
			t.Errorf("ChunkInfos() = %v, %v", infos, err)
		}
		if b.ChunkCount != 0 || b.UncompressedSize != 0 || b.MetaOffset != 0 {
			t.Errorf("entry %+v", *b)
		}
		if err := rd.Verify(b); err != nil {
			t.Errorf("Verify: %v", err)
		}
		if got, err := rd.Bootstrap(); boot != nil && (err != nil || !bytes.Equal(got, boot)) {
			t.Errorf("Bootstrap() = %d bytes, %v", len(got), err)
		}
	}
}

func TestWriterCRC32(t *testing.T) {
	opts := WriterOptions{Compressor: rafs.CompressLZ4Block, CRC32: true, ChunkSize: 0x10000}
	chunks := sampleChunks(0x10000)
	file, recs, b := writeBlob(t, opts, chunks, nil)
	for i := range recs {
		c := recs[i]
		if c.Flags&rafs.ChunkHasCRC32 == 0 || c.CRC32 == 0 {
			t.Fatalf("record %d has no CRC32: %+v", i, c)
		}
		if _, err := ReadChunk(bytes.NewReader(file), b.ID, &c, opts.Compressor, opts.Digester, nil); err != nil {
			t.Fatalf("ReadChunk %d: %v", i, err)
		}
		c.CRC32 ^= 1
		if _, err := ReadChunk(bytes.NewReader(file), b.ID, &c, opts.Compressor, opts.Digester, nil); !errors.Is(err, rafs.ErrCorrupt) {
			t.Errorf("ReadChunk %d with a wrong CRC32: %v, want ErrCorrupt", i, err)
		}
	}
}

type failWriter struct{ after int }

func (f *failWriter) Write(p []byte) (int, error) {
	if f.after < len(p) {
		n := max(f.after, 0)
		f.after = 0
		return n, errors.New("disk full")
	}
	f.after -= len(p)
	return len(p), nil
}

func TestWriterErrors(t *testing.T) {
	good := WriterOptions{ChunkSize: rafs.MinChunkSize}
	for _, tc := range []struct {
		name string
		run  func() error
	}{
		{"chunk size not a power of two", func() error {
			_, err := NewWriter(&bytes.Buffer{}, WriterOptions{ChunkSize: 5000}).AddChunk([]byte{1}, rafs.Digest{})
			return err
		}},
		{"chunk size too small", func() error { _, err := Prepare(WriterOptions{ChunkSize: 2048}, []byte{1}, rafs.Digest{}); return err }},
		{"unknown compressor", func() error {
			_, err := NewWriter(&bytes.Buffer{}, WriterOptions{Compressor: 9}).Finish(nil)
			return err
		}},
		{"RAFS version 4", func() error { _, err := NewWriter(&bytes.Buffer{}, WriterOptions{Version: 4}).Finish(nil); return err }},
		{"empty chunk", func() error { _, err := Prepare(good, nil, rafs.Digest{}); return err }},
		{"chunk over chunk size", func() error { _, err := Prepare(good, make([]byte, rafs.MinChunkSize+1), rafs.Digest{}); return err }},
		{"zero Prepared", func() error { _, err := NewWriter(&bytes.Buffer{}, good).AddPrepared(Prepared{}); return err }},
		{"compressor mismatch", func() error {
			p, err := Prepare(WriterOptions{Compressor: rafs.CompressZstd}, []byte{1}, rafs.Digest{})
			if err != nil {
				return nil
			}
			_, err = NewWriter(&bytes.Buffer{}, WriterOptions{Compressor: rafs.CompressGzip}).AddPrepared(p)
			return err
		}},
		{"prepared for a bigger chunk size", func() error {
			p, err := Prepare(WriterOptions{}, make([]byte, 2*rafs.MinChunkSize), rafs.Digest{})
			if err != nil {
				return nil
			}
			_, err = NewWriter(&bytes.Buffer{}, good).AddPrepared(p)
			return err
		}},
		{"empty bootstrap", func() error { _, err := NewWriter(&bytes.Buffer{}, good).Finish([]byte{}); return err }},
		{"write error is sticky", func() error {
			w := NewWriter(&failWriter{after: 10}, good)
			if _, err := w.AddChunk(randomBytes(3, 100), rafs.Digest{}); err == nil {
				return nil
			}
			_, err := w.Finish(nil)
			return err
		}},
		{"write error in Finish", func() error {
			w := NewWriter(&failWriter{after: 200}, good)
			if _, err := w.AddChunk(randomBytes(3, 100), rafs.Digest{}); err != nil {
				return nil
			}
			_, err := w.Finish(nil)
			return err
		}},
		{"add after Finish", func() error {
			w := NewWriter(&bytes.Buffer{}, good)
			if _, err := w.Finish(nil); err != nil {
				return nil
			}
			_, err := w.AddChunk([]byte{1}, rafs.Digest{})
			return err
		}},
	} {
		if err := tc.run(); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
}

// TestPrepareComputesDigest: a zero digest asks Prepare to compute it.
func TestPrepareComputesDigest(t *testing.T) {
	data := textBytes(1000)
	p, err := Prepare(WriterOptions{Digester: rafs.DigestSHA256}, data, rafs.Digest{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Digest() != digest.Sum(rafs.DigestSHA256, data) || p.Size() != 1000 || p.StoredSize() != 1000 {
		t.Errorf("Prepared digest %s size %d stored %d", p.Digest(), p.Size(), p.StoredSize())
	}
	data[0] ^= 0xff // Prepare must not keep a reference
	var buf bytes.Buffer
	w := NewWriter(&buf, WriterOptions{Digester: rafs.DigestSHA256})
	c, err := w.AddPrepared(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ReadChunk(bytes.NewReader(buf.Bytes()), "x", &c, rafs.CompressNone, rafs.DigestSHA256, nil); err != nil {
		t.Errorf("chunk changed after Prepare returned: %v", err)
	}
}
