package blob

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/digest"
)

const (
	v6FixtureID   = "be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef"
	v5FixtureID   = "7334a2594e133cf8ae364189c2276b090fc490c627bcc3fb1077f0419a538e00"
	v5FixturePath = "../../testdata/fixtures/nydus/v5-repeatable/blobs/" + v5FixtureID
	// inlineFixturePath is a blob with an inlined bootstrap made by nydus-image (upstream
	// tests/texture/toc), named by its sha256.
	inlineFixturePath = "../../testdata/fixtures/nydus/v6-inlined-bootstrap/2fa78cad554b75ac91a4a125ed148d0ddeb25efa4aaa8bd80e5dc292690a4dca"
)

func hexDigest(t testing.TB, s string) rafs.Digest {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 {
		t.Fatalf("bad hex digest %q", s)
	}
	return rafs.Digest(b)
}

func readFixture(t testing.TB) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", v6FixtureID))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// v6FixtureEntry is the blob-table entry of the fixture blob as recorded in its bootstrap
// (tests/texture/bootstrap/rafs-v6-2.2.boot, blob table at 4096).
func v6FixtureEntry(t testing.TB) *rafs.Blob {
	return &rafs.Blob{
		ID:                   v6FixtureID,
		ChunkSize:            0x100000,
		ChunkCount:           2,
		Compressor:           rafs.CompressZstd,
		Digester:             rafs.DigestBlake3,
		Features:             0x7000_0021,
		CompressedSize:       0x38da,
		UncompressedSize:     0x9000,
		MetaCompressor:       rafs.CompressNone,
		MetaOffset:           0x207a,
		MetaCompressedSize:   0x20,
		MetaUncompressedSize: 0x20,
		TOCSize:              0x400,
		TOCDigest:            hexDigest(t, "cfc89ed0739aef4eb1bf0904f0dfdb1c857134eca7319465baae95a99b84acde"),
	}
}

func TestFixtureV6(t *testing.T) {
	data := readFixture(t)
	rd, err := Open(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if !rd.HasTOC() {
		t.Fatal("HasTOC() = false for a 2.2 blob")
	}

	// nydus-image 2.2 recorded image.blob's offset as the end of the chunk data (see TOCEntry.start).
	wantTOC := []TOCEntry{
		{NameBlobData, TOCCompressNone, hexDigest(t, "632d11c76e652544684d73053a4656d3cca2c693539bd4bae5ea226355cfdd1d"), 0x1e7a, 0x1e7a, 0x9000},
		{NameMeta, TOCCompressNone, hexDigest(t, "cae7cc4bc024ca68bd0c4f5c9cdf612d6cb9622271d787c8c79ccba91852b6b1"), 0x207a, 0x20, 0x20},
		{NameMetaHeader, TOCCompressNone, hexDigest(t, "1a4559316dbcfca5ff8cd1f005172a429a9e9f6b885bfda6a43cf4098a4f8db1"), 0x209a, 0x1000, 0x1000},
		{NameDigest, TOCCompressNone, hexDigest(t, "910f7305f347bacd48d1221e0fb91c6af903f34eddcfc124004f3c5ff7e8bfdd"), 0x329a, 0x40, 0x40},
	}
	got := rd.TOC()
	if len(got) != len(wantTOC) {
		t.Fatalf("ToC has %d entries, want %d: %+v", len(got), len(wantTOC), got)
	}
	for i := range wantTOC {
		if got[i] != wantTOC[i] {
			t.Errorf("ToC[%d] = %+v\nwant      %+v", i, got[i], wantTOC[i])
		}
	}
	want := v6FixtureEntry(t)
	if rd.TOCSize() != want.TOCSize || rd.TOCDigest() != want.TOCDigest {
		t.Errorf("ToC size/digest = %d/%s, want %d/%s", rd.TOCSize(), rd.TOCDigest(), want.TOCSize, want.TOCDigest)
	}

	h, ok := rd.MetaHeader()
	wantH := MetaHeader{
		Features:           FeatureAligned | FeatureInlinedChunkDigest | FeatureHasTarHeader | FeatureHasTOC | FeatureCapTarTOC,
		CICompressor:       rafs.CompressNone,
		CIEntries:          2,
		CIOffset:           0x207a,
		CICompressedSize:   0x20,
		CIUncompressedSize: 0x20,
	}
	if !ok || h != wantH {
		t.Errorf("MetaHeader() = %+v, %v\nwant          %+v", h, ok, wantH)
	}
	if rd.DataSize() != 0x1e7a {
		t.Errorf("DataSize() = %#x, want 0x1e7a", rd.DataSize())
	}

	infos, err := rd.ChunkInfos()
	if err != nil {
		t.Fatal(err)
	}
	wantInfos := []ChunkInfo{
		{CompressedOffset: 0, CompressedSize: 0x12dc, UncompressedOffset: 0, UncompressedSize: 0x4223, Compressed: true},
		{CompressedOffset: 0x12dc, CompressedSize: 0xb9e, UncompressedOffset: 0x5000, UncompressedSize: 0x3458, Compressed: true},
	}
	if len(infos) != len(wantInfos) || infos[0] != wantInfos[0] || infos[1] != wantInfos[1] {
		t.Errorf("ChunkInfos() = %+v\nwant         %+v", infos, wantInfos)
	}
	ds, err := rd.Digests()
	if err != nil {
		t.Fatal(err)
	}
	wantDs := []rafs.Digest{
		hexDigest(t, "f7e2735f1c6ae9cde91e537416b09d8bb71b306a421d19cc1012a51f93a7fe69"),
		hexDigest(t, "812465bcc9e88393598311dc5fc93abaeccef0185bcd99f9701d17ebdf9adc3f"),
	}
	if len(ds) != 2 || ds[0] != wantDs[0] || ds[1] != wantDs[1] {
		t.Errorf("Digests() = %v, want %v", ds, wantDs)
	}

	for i := range infos {
		c := infos[i].Chunk(uint32(i), ds[i])
		out, err := ReadChunk(bytes.NewReader(data), v6FixtureID, &c, rafs.CompressZstd, rafs.DigestBlake3, nil)
		if err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
		if len(out) != int(infos[i].UncompressedSize) || digest.Sum(rafs.DigestBlake3, out) != ds[i] {
			t.Errorf("chunk %d: %d bytes with blake3 %s, want %d bytes with %s", i, len(out),
				digest.Sum(rafs.DigestBlake3, out), infos[i].UncompressedSize, ds[i])
		}
	}

	if err := rd.Verify(nil); err != nil {
		t.Errorf("Verify(nil): %v", err)
	}
	if err := rd.Verify(want); err != nil {
		t.Errorf("Verify(bootstrap's entry): %v", err)
	}
	if te := rd.TableEntry(); te.Features != want.Features || te.CompressedSize != want.CompressedSize ||
		te.UncompressedSize != want.UncompressedSize || te.ChunkCount != want.ChunkCount ||
		te.MetaOffset != want.MetaOffset || te.MetaCompressedSize != want.MetaCompressedSize ||
		te.TOCSize != want.TOCSize || te.TOCDigest != want.TOCDigest {
		t.Errorf("TableEntry() = %+v\nbootstrap says %+v", te, want)
	}
	if _, err := rd.Bootstrap(); err == nil || !errors.Is(err, ErrNoBootstrap) {
		t.Errorf("Bootstrap() error = %v, want ErrNoBootstrap", err)
	}
}

// TestTarHeadersMatchFixture checks our tar headers byte for byte against those nydus-image wrote.
func TestTarHeadersMatchFixture(t *testing.T) {
	data := readFixture(t)
	for _, tc := range []struct {
		name string
		at   int
		size uint64
	}{
		{NameBlobData, 0x1e7a, 0x1e7a},
		{NameMeta, 0x209a + 0x1000, 0x1020},
		{NameDigest, 0x329a + 0x40, 0x40},
		{NameTOC, len(data) - 512, 512},
	} {
		h := tarHeader(tc.name, tc.size)
		if !bytes.Equal(h[:], data[tc.at:tc.at+512]) {
			t.Errorf("tarHeader(%q, %d) differs from the fixture's header at %#x", tc.name, tc.size, tc.at)
		}
		name, size, err := parseTarHeader(data[tc.at : tc.at+512])
		if err != nil || name != tc.name || size != tc.size {
			t.Errorf("parseTarHeader at %#x = %q, %d, %v", tc.at, name, size, err)
		}
	}
}

func TestTarHeaderLargeSize(t *testing.T) {
	for _, size := range []uint64{0, 1, tarMaxOctal, tarMaxOctal + 1, 1 << 40} {
		h := tarHeader(NameBlobData, size)
		name, got, err := parseTarHeader(h[:])
		if err != nil || name != NameBlobData || got != size {
			t.Errorf("size %d: parsed %q, %d, %v", size, name, got, err)
		}
	}
}

func TestFixtureV5Raw(t *testing.T) {
	f, err := os.Open(v5FixturePath)
	if err != nil {
		t.Skipf("v5 fixture blob not available: %v", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	rd, err := Open(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	if rd.HasTOC() || rd.TOC() != nil {
		t.Error("a pre-2.2 raw blob reports a ToC")
	}
	if infos, err := rd.ChunkInfos(); infos != nil || err != nil {
		t.Errorf("ChunkInfos() = %v, %v; want nothing", infos, err)
	}
	if rd.DataSize() != uint64(st.Size()) {
		t.Errorf("DataSize() = %d, want the file size %d", rd.DataSize(), st.Size())
	}
	// The v5 bootstrap's extended blob table: 23 chunks, compressed = uncompressed = file size.
	entry := &rafs.Blob{ID: v5FixtureID, ChunkCount: 23, CompressedSize: 3508766, UncompressedSize: 3508766}
	if err := rd.Verify(entry); err != nil {
		t.Errorf("Verify: %v", err)
	}
	h := sha256.New()
	if _, err := f.Seek(0, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != v5FixtureID {
		t.Errorf("sha256(blob) = %s, want its name %s", got, v5FixtureID)
	}
}

// TestTarChainReadableByArchiveTar walks a written blob from its end the way nydus-snapshotter
// finds sections (seekFileByTarHeader): each header, parsed by archive/tar, names the section
// before it, and the chain ends exactly at the start of the file.
func TestTarChainReadableByArchiveTar(t *testing.T) {
	for _, boot := range [][]byte{nil, textBytes(5000)} {
		file, _, _ := writeBlob(t, WriterOptions{ChunkSize: rafs.MinChunkSize}, sampleChunks(rafs.MinChunkSize), boot)
		var names []string
		end := int64(len(file))
		for end > 0 {
			hdr, err := tar.NewReader(bytes.NewReader(file[end-512 : end])).Next()
			if err != nil {
				t.Fatalf("archive/tar at %d: %v", end-512, err)
			}
			if hdr.Typeflag != tar.TypeReg || hdr.Size > end-512 {
				t.Fatalf("header at %d: %+v", end-512, hdr)
			}
			names = append(names, hdr.Name)
			end -= 512 + hdr.Size
		}
		want := []string{NameTOC, NameDigest, NameMeta, NameBlobData}
		if boot != nil {
			want = []string{NameTOC, NameBootstrap, NameDigest, NameMeta, NameBlobData}
		}
		if fmt.Sprint(names) != fmt.Sprint(want) {
			t.Errorf("sections from the end: %v, want %v", names, want)
		}
	}
}

// The blob with an inlined bootstrap that upstream's ToC tests read (storage/src/meta/toc.rs
// test_read_toc_list): four sections, a 1024-byte ToC with the digest upstream pins, blob.meta of
// 0x30 bytes, a zstd image.boot; it verifies although its blob.meta header predates the
// HAS_TAR_HEADER bit that its tar headers would set today.
func TestFixtureInlinedBootstrap(t *testing.T) {
	data, err := os.ReadFile(inlineFixturePath)
	if err != nil {
		t.Fatal(err)
	}
	rd, err := Open(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range rd.TOC() {
		names = append(names, e.Name)
	}
	if got := fmt.Sprint(names); got != "[image.blob blob.meta blob.meta.header image.boot]" {
		t.Errorf("ToC names %s", got)
	}
	if rd.TOCSize() != 1024 || rd.TOCDigest() != hexDigest(t, "4fdfbb36ef74a3c63a28e2abafa54044c7594155beb6ddad9f36825cfe58286c") {
		t.Errorf("ToC of %d bytes, digest %s; upstream pins 1024 bytes, 4fdfbb36…", rd.TOCSize(), rd.TOCDigest())
	}
	if e := rd.entry(NameMeta); e == nil || e.UncompressedSize != 0x30 {
		t.Errorf("blob.meta entry %+v, want 0x30 bytes", e)
	}
	if h, ok := rd.MetaHeader(); !ok || h.Features&FeatureHasTarHeader != 0 {
		t.Errorf("blob.meta header %+v: the case wants one without HAS_TAR_HEADER", h)
	}
	if e := rd.entry(NameBootstrap); e == nil || e.Flags != TOCCompressZstd {
		t.Errorf("image.boot entry %+v, want a zstd one", e)
	}
	if err := rd.Verify(nil); err != nil {
		t.Errorf("Verify: %v", err)
	}
	if _, err := rd.Bootstrap(); err != nil {
		t.Errorf("Bootstrap: %v", err)
	}
}
