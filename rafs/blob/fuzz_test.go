package blob

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"os"
	"testing"

	"github.com/dfnydus/dfnydus/rafs"
)

// fuzzSeeds are small blobs covering each layout and section kind.
func fuzzSeeds(t testing.TB) [][]byte {
	fixture := readFixture(t)
	small := func(opts WriterOptions, n int, boot []byte) []byte {
		chunks := make([][]byte, n)
		for i := range chunks {
			chunks[i] = textBytes(100 + 97*i)
		}
		file, _, _ := writeBlob(t, opts, chunks, boot)
		return file
	}
	// --blob-inline-meta without a ToC: raw bootstrap, then its tar header.
	boot := textBytes(700)
	hdr := tarHeader(NameBootstrap, uint64(len(boot)))
	inlineNoTOC := append(append(textBytes(300), boot...), hdr[:]...)
	inlineFixture, err := os.ReadFile(inlineFixturePath)
	if err != nil {
		t.Fatal(err)
	}
	return [][]byte{
		fixture,
		inlineFixture,
		fixture[len(fixture)-1024:],
		small(WriterOptions{Compressor: rafs.CompressZstd, ChunkSize: rafs.MinChunkSize}, 3, textBytes(2000)),
		small(WriterOptions{Compressor: rafs.CompressLZ4Block, ChunkSize: rafs.MinChunkSize}, 40, nil),
		small(WriterOptions{Compressor: rafs.CompressNone, Digester: rafs.DigestSHA256, ChunkSize: rafs.MinChunkSize}, 2, nil),
		small(WriterOptions{}, 0, nil),
		small(WriterOptions{Compressor: rafs.CompressGzip, ChunkSize: rafs.MinChunkSize, Version: 5}, 3, nil),
		inlineNoTOC,
	}
}

// FuzzOpen feeds arbitrary bytes to the ToC and blob.meta parsers and everything that reads the
// sections they describe. Nothing may panic, and since the input is in memory every error must be
// a format error (ErrCorrupt), or ErrNoBootstrap.
func FuzzOpen(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		corrupt := func(what string, err error) {
			if err != nil && !errors.Is(err, rafs.ErrCorrupt) {
				t.Fatalf("%s: error not wrapping ErrCorrupt: %v", what, err)
			}
		}
		rd, err := Open(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			corrupt("Open", err)
			return
		}
		_ = rd.TOC()
		_ = rd.TableEntry()
		_ = rd.DataSize()
		infos, err := rd.ChunkInfos()
		corrupt("ChunkInfos", err)
		ds, err := rd.Digests()
		corrupt("Digests", err)
		if _, err := rd.Bootstrap(); !errors.Is(err, ErrNoBootstrap) {
			corrupt("Bootstrap", err)
		}
		corrupt("Verify", rd.Verify(nil))
		corrupt("Verify(entry)", rd.Verify(rd.TableEntry()))
		for i := 0; i < len(infos) && i < len(ds) && i < 4; i++ {
			c := infos[i].Chunk(uint32(i), ds[i])
			if c.Flags&(rafs.ChunkEncrypted|rafs.ChunkBatch) != 0 {
				continue // unsupported, not corrupt
			}
			for _, comp := range []rafs.Compressor{rafs.CompressZstd, rafs.CompressLZ4Block, rafs.CompressGzip} {
				_, err := ReadChunk(bytes.NewReader(data), "fuzz", &c, comp, rafs.DigestBlake3, nil)
				corrupt("ReadChunk", err)
			}
		}
	})
}

// FuzzVerifyTail feeds arbitrary blobs to the tail check, with a bootstrap record whose ToC digest
// matches the input's last tocSize bytes (so that mutations reach the sections behind the ToC).
// Nothing may panic; every error is a format error or an unverifiable tail; a verified tail starts
// inside the blob.
func FuzzVerifyTail(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		rd, err := Open(bytes.NewReader(s), int64(len(s)))
		if err == nil && rd.hasTOC {
			f.Add(s, rd.tocSize)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, tocSize uint32) {
		rec := &rafs.Blob{TOCSize: tocSize}
		if tocSize > 0 && int64(tocSize) <= int64(len(data)) {
			rec.TOCDigest = sha256.Sum256(data[len(data)-int(tocSize):])
		} else {
			rec.TOCDigest[0] = 1
		}
		start, err := VerifyTail(bytes.NewReader(data), int64(len(data)), rec)
		if err != nil {
			if !errors.Is(err, rafs.ErrCorrupt) && !errors.Is(err, ErrTailUnverifiable) {
				t.Fatalf("error neither corrupt nor unverifiable: %v", err)
			}
			return
		}
		if start < 0 || start > int64(len(data)) {
			t.Fatalf("tail starts at %d in a %d-byte blob", start, len(data))
		}
	})
}
