package bootstrap

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"errors"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// allocated returns how many bytes f allocated on the heap.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// zstdFrame assembles a zstd frame (RFC 8878 3.1.1) by hand, so that its header can claim what
// no encoder would write: fhd is the frame header descriptor, then the window descriptor (when
// fhd has no Single_Segment flag), the content size field, and the blocks.
func zstdFrame(fhd byte, window []byte, fcs []byte, blocks ...[]byte) []byte {
	b := []byte{0x28, 0xb5, 0x2f, 0xfd, fhd}
	b = append(b, window...)
	b = append(b, fcs...)
	for _, blk := range blocks {
		b = append(b, blk...)
	}
	return b
}

// rawBlock and rleBlock encode zstd blocks (RFC 8878 3.1.1.2): a 3-byte header of last flag,
// type (0 raw, 1 RLE) and size, then the raw bytes or the one repeated byte.
func rawBlock(data []byte, last bool) []byte {
	return append(blockHeader(0, len(data), last), data...)
}

func rleBlock(c byte, n int, last bool) []byte {
	return append(blockHeader(1, n, last), c)
}

func blockHeader(typ, size int, last bool) []byte {
	h := uint32(size)<<3 | uint32(typ)<<1
	if last {
		h |= 1
	}
	return []byte{byte(h), byte(h >> 8), byte(h >> 16)}
}

// A single-segment frame sizes the decoder's history from its declared content size, up to the
// library's default cap of 64 GiB: these 17 bytes declaring 256 MiB used to make Extract allocate
// 257 MiB before the first block was decoded. The declared size is now checked against what the
// layer may yield.
func TestExtractZstdDeclaredContentSize(t *testing.T) {
	fcs := binary.LittleEndian.AppendUint64(nil, 256<<20)
	data := zstdFrame(0xe0, nil, fcs, rleBlock(0, 1<<10, true)) // FCS field of 8 bytes, single segment
	var err error
	n := allocated(func() { _, err = Extract(bytes.NewReader(data), int64(len(data))) })
	if !errors.Is(err, zstd.ErrDecoderSizeExceeded) {
		t.Errorf("error %v, want %v", err, zstd.ErrDecoderSizeExceeded)
	}
	if n > 16<<20 {
		t.Errorf("a %d-byte input made Extract allocate %d bytes", len(data), n)
	}
}

// The input the fuzzer found slow: a frame whose window descriptor (0x7f: 2^25 + 7*2^22 bytes)
// made the decoder allocate twice that, about 120 MiB, for 2 KiB of input. The window is now
// bounded by the layer's size.
func TestExtractZstdWindowFromFuzzer(t *testing.T) {
	data := mustRead(t, filepath.Join("testdata", "zstd-window-7f.bin")) // also in the fuzz corpus
	var err error
	n := allocated(func() { _, err = Extract(bytes.NewReader(data), int64(len(data))) })
	if !errors.Is(err, zstd.ErrWindowSizeExceeded) {
		t.Errorf("error %v, want %v", err, zstd.ErrWindowSizeExceeded)
	}
	if n > 16<<20 {
		t.Errorf("a %d-byte input made Extract allocate %d bytes", len(data), n)
	}
}

// The largest window a frame may declare (3.75 TB) is refused, not merely capped at the
// library's 512 MiB default.
func TestExtractZstdLargestWindow(t *testing.T) {
	data := zstdFrame(0x00, []byte{0xff}, nil, rleBlock(0, 1<<10, true))
	var err error
	n := allocated(func() { _, err = Extract(bytes.NewReader(data), int64(len(data))) })
	if !errors.Is(err, zstd.ErrWindowSizeExceeded) {
		t.Errorf("error %v, want %v", err, zstd.ErrWindowSizeExceeded)
	}
	if n > 16<<20 {
		t.Errorf("a %d-byte input made Extract allocate %d bytes", len(data), n)
	}
}

// countingReader counts the bytes a decoder pulls through it.
type countingReader struct {
	r interface {
		Read([]byte) (int, error)
	}
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// A zstd layer of RLE blocks expands 32768-fold. Here a tar entry claims 4 GiB before any
// image.boot and 4.5 KiB of input stand for 125 MiB of it, all of which the tar reader used to
// decode to skip the entry; a slightly larger input stands for the whole 4 GiB. Decoding now
// stops once the layer has yielded maxLayerRatio times its size.
func TestExtractZstdBombStops(t *testing.T) {
	var hdr bytes.Buffer
	tw := tar.NewWriter(&hdr)
	if err := tw.WriteHeader(&tar.Header{Name: "junk", Typeflag: tar.TypeReg, Mode: 0o644, Size: 4 << 30}); err != nil {
		t.Fatal(err)
	}
	blocks := [][]byte{rawBlock(hdr.Bytes()[:512], false)}
	const rle = 1000 // 4 bytes each, 128 KiB of zeros each: 125 MiB in all, of the 4 GiB claimed
	for i := range rle {
		blocks = append(blocks, rleBlock(0, 128<<10, i == rle-1))
	}
	data := zstdFrame(0x00, []byte{0x58}, nil, blocks...) // window 8 MiB
	var err error
	n := allocated(func() { _, err = Extract(bytes.NewReader(data), int64(len(data))) })
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("error %v, want %v", err, ErrTooLarge)
	}
	if n > 64<<20 {
		t.Errorf("a %d-byte input made Extract allocate %d bytes", len(data), n)
	}

	// What the cap lets through, measured at the decoder's output.
	zr, err := zstd.NewReader(bytes.NewReader(data), zstd.WithDecoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	limit := layerLimit(int64(len(data)))
	cr := &countingReader{r: zr}
	_, err = fromTar(&capReader{r: cr, left: limit, limit: limit})
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("error %v, want %v", err, ErrTooLarge)
	}
	if cr.n > limit+1 {
		t.Errorf("read %d decompressed bytes, more than the %d-byte limit", cr.n, limit)
	}
}

// A layer that fits its limit exactly is still read: the cap fails only on a byte beyond it.
func TestCapReaderExactFit(t *testing.T) {
	data := []byte("0123456789")
	cr := &capReader{r: bytes.NewReader(data), left: 10, limit: 10}
	var out bytes.Buffer
	if _, err := out.ReadFrom(cr); err != nil || out.Len() != 10 {
		t.Fatalf("read %d bytes, %v; want all 10", out.Len(), err)
	}
	cr = &capReader{r: bytes.NewReader(data), left: 9, limit: 9}
	if _, err := new(bytes.Buffer).ReadFrom(cr); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("error %v, want %v", err, ErrTooLarge)
	}
}
