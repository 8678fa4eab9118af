package blob

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/dfnydus/dfnydus/rafs"
)

// blobDir writes blobs into a temporary directory under their ids.
func blobDir(t *testing.T, blobs ...[]byte) string {
	t.Helper()
	dir := t.TempDir()
	for _, b := range blobs {
		id := sha256Hex(b)
		if err := os.WriteFile(filepath.Join(dir, id), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestDirConcurrentReads(t *testing.T) {
	type written struct {
		chunks [][]byte
		recs   []rafs.Chunk
		entry  *rafs.Blob
	}
	var blobs []written
	var files [][]byte
	for i, opts := range []WriterOptions{
		{Compressor: rafs.CompressZstd, ChunkSize: 0x10000},
		{Compressor: rafs.CompressLZ4Block, Digester: rafs.DigestSHA256, ChunkSize: 0x10000, Version: 5},
	} {
		chunks := sampleChunks(0x10000)
		chunks[3] = []byte{byte(i)} // make the blobs differ
		file, recs, b := writeBlob(t, opts, chunks, nil)
		blobs = append(blobs, written{chunks, recs, b})
		files = append(files, file)
	}
	d := NewDir(blobDir(t, files...))
	defer d.Close()

	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []byte
			for _, w := range blobs {
				for i := range w.recs {
					out, err := d.ReadChunk(context.Background(), w.entry, &w.recs[i], buf)
					if err != nil {
						errs <- err
						return
					}
					if !bytes.Equal(out, w.chunks[i]) {
						errs <- errors.New("wrong chunk bytes")
						return
					}
					buf = out
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := len(d.files); n != 2 {
		t.Errorf("Dir holds %d open files, want one per blob (2)", n)
	}

	b, c := blobs[0].entry, &blobs[0].recs[0]
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		blob *rafs.Blob
	}{
		{"cancelled context", ctx, b},
		{"id with a path", context.Background(), &rafs.Blob{ID: "../" + b.ID[3:]}},
		{"upper-case id", context.Background(), &rafs.Blob{ID: "ABCDEF" + b.ID[6:]}},
		{"missing blob", context.Background(), &rafs.Blob{ID: sha256Hex([]byte("nothing"))}},
	} {
		if _, err := d.ReadChunk(tc.ctx, tc.blob, c, nil); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.ReadChunk(context.Background(), b, c, nil); err == nil {
		t.Error("read after Close: no error")
	}
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// memWriterAt is an in-memory io.WriterAt without Truncate.
type memWriterAt struct{ b []byte }

func (m *memWriterAt) WriteAt(p []byte, off int64) (int, error) {
	if end := int(off) + len(p); end > len(m.b) {
		m.b = append(m.b, make([]byte, end-len(m.b))...)
	}
	return copy(m.b[off:], p), nil
}

func TestWriteUncompressedView(t *testing.T) {
	opts := WriterOptions{Compressor: rafs.CompressZstd, ChunkSize: 0x10000}
	chunks := sampleChunks(0x10000)
	file, recs, b := writeBlob(t, opts, chunks, nil)
	d := NewDir(blobDir(t, file))
	defer d.Close()

	want := make([]byte, b.UncompressedSize)
	for i, c := range recs {
		copy(want[c.UncompressedOffset:], chunks[i])
	}
	// Records as a bootstrap lists them: by file, with repeats (dedup), in no particular order.
	list := []rafs.Chunk{recs[3], recs[0], recs[1], recs[0], recs[6], recs[2], recs[5], recs[4]}
	list[3].FileOffset = 0x10000

	t.Run("file", func(t *testing.T) {
		f, err := os.Create(filepath.Join(t.TempDir(), "view"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.Write(bytes.Repeat([]byte{0xee}, len(want)+9999)); err != nil { // stale content
			t.Fatal(err)
		}
		if err := WriteUncompressedView(f, d, b, list); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(f.Name())
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("view file differs (%d bytes, want %d)", len(got), len(want))
		}
	})
	t.Run("writer without truncate", func(t *testing.T) {
		m := &memWriterAt{b: bytes.Repeat([]byte{0xee}, len(want))}
		if err := WriteUncompressedView(m, d, b, list); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(m.b, want) {
			t.Errorf("view differs (%d bytes, want %d)", len(m.b), len(want))
		}
	})

	overlap := recs[1]
	overlap.UncompressedOffset = recs[0].UncompressedOffset + 4096
	beyond := recs[1]
	beyond.UncompressedOffset = b.UncompressedSize
	badDigest := recs[2]
	badDigest.Digest[0] ^= 1
	for _, tc := range []struct {
		name   string
		chunks []rafs.Chunk
	}{
		{"overlapping chunks", []rafs.Chunk{recs[0], overlap}},
		{"chunk beyond the view", []rafs.Chunk{beyond}},
		{"chunk with a wrong digest", []rafs.Chunk{recs[0], badDigest}},
	} {
		err := WriteUncompressedView(&memWriterAt{}, d, b, tc.chunks)
		if !errors.Is(err, rafs.ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", tc.name, err)
		}
	}
}

// TestFixtureUncompressedView: the fixture's view is 0x9000 bytes with chunk 1 at 0x5000.
func TestFixtureUncompressedView(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, v6FixtureID), readFixture(t), 0o644); err != nil {
		t.Fatal(err)
	}
	data := readFixture(t)
	rd, err := Open(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	infos, _ := rd.ChunkInfos()
	ds, _ := rd.Digests()
	var recs []rafs.Chunk
	for i := range infos {
		recs = append(recs, infos[i].Chunk(uint32(i), ds[i]))
	}
	d := NewDir(dir)
	defer d.Close()
	m := &memWriterAt{}
	b := v6FixtureEntry(t)
	if err := WriteUncompressedView(m, d, b, recs); err != nil {
		t.Fatal(err)
	}
	if len(m.b) != 0x9000 {
		t.Fatalf("view is %#x bytes, want 0x9000", len(m.b))
	}
	c1, err := d.ReadChunk(context.Background(), b, &recs[1], nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m.b[0x5000:0x5000+len(c1)], c1) || !bytes.Equal(m.b[0x4223:0x5000], make([]byte, 0x5000-0x4223)) {
		t.Error("chunk 1 is not at 0x5000 after a zero gap")
	}
}
