package bootstrap

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/blob"
	"github.com/dfnydus/dfnydus/rafs/builder"
	"github.com/dfnydus/dfnydus/rafs/check"
)

var fixtures = filepath.Join("..", "..", "testdata", "fixtures", "nydus")

func layerTar(t testing.TB, name string, boot []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range []string{"image/"} {
		tw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755})
	}
	tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(boot))})
	tw.Write(boot)
	tw.Close()
	return buf.Bytes()
}

func gz(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func zst(b []byte) []byte {
	var buf bytes.Buffer
	w, _ := zstd.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

// Chunk contents for blobWithBootstrap: rawChunk does not shrink under zstd, so the writer
// stores it raw; zstdChunk does, so the blob starts with the zstd magic, as blobs from
// nydus-image (whose default compressor is zstd) do.
var (
	rawChunk  = []byte("some chunk data")
	zstdChunk = bytes.Repeat([]byte("compressible chunk data "), 1000)
)

// blobWithBootstrap makes a nydus blob whose ToC carries the bootstrap inline, after one chunk
// (rawChunk unless given).
func blobWithBootstrap(t testing.TB, boot []byte, chunk ...[]byte) []byte {
	t.Helper()
	data := rawChunk
	if len(chunk) > 0 {
		data = chunk[0]
	}
	var buf bytes.Buffer
	w := blob.NewWriter(&buf, blob.WriterOptions{Compressor: rafs.CompressZstd, Digester: rafs.DigestBlake3})
	if _, err := w.AddChunk(data, rafs.Digest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Finish(boot); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// Every form a user may hand to --bootstrap yields the same bootstrap bytes.
func TestLoadAcceptsEveryForm(t *testing.T) {
	for _, fix := range []struct{ name, path string }{
		{"v6", filepath.Join(fixtures, "v6-zstd-blake3", "rafs-v6-2.2.boot")},
		{"v5", filepath.Join(fixtures, "v5-repeatable", "sha256-nocompress-repeatable")},
	} {
		boot, err := os.ReadFile(fix.path)
		if err != nil {
			t.Fatal(err)
		}
		forms := map[string][]byte{
			"bare":                   boot,
			"layer tar":              layerTar(t, "image/image.boot", boot),
			"layer tar ./ prefix":    layerTar(t, "./image/image.boot", boot),
			"layer tar.gz":           gz(layerTar(t, "image/image.boot", boot)),
			"layer tar.zst":          zst(layerTar(t, "image/image.boot", boot)),
			"blob with inlined boot": blobWithBootstrap(t, boot),
			"blob with inlined boot, zstd first chunk": blobWithBootstrap(t, boot, zstdChunk),
			"blob tail without ToC":                    withTarHeader(t, append(bytes.Repeat([]byte{7}, 4096), boot...), "image.boot", len(boot)),
		}
		for form, data := range forms {
			t.Run(fix.name+"/"+form, func(t *testing.T) {
				p := filepath.Join(t.TempDir(), "input")
				if err := os.WriteFile(p, data, 0o644); err != nil {
					t.Fatal(err)
				}
				got, img, err := Load(p)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, boot) {
					t.Errorf("extracted %d bytes, want the %d-byte bootstrap", len(got), len(boot))
				}
				if want := map[string]int{"v5": 5, "v6": 6}[fix.name]; img.Version != want {
					t.Errorf("version %d, want %d", img.Version, want)
				}
			})
		}
	}
}

func TestLoadRejects(t *testing.T) {
	boot, _ := os.ReadFile(filepath.Join(fixtures, "v6-zstd-blake3", "rafs-v6-2.2.boot"))
	tests := map[string][]byte{
		"empty":                   nil,
		"garbage":                 bytes.Repeat([]byte("x"), 5000),
		"tar without image.boot":  layerTar(t, "image/other", boot),
		"tar with garbage boot":   layerTar(t, "image/image.boot", []byte("not a bootstrap")),
		"truncated gzip":          gz(layerTar(t, "image/image.boot", boot))[:100],
		"blob without bootstrap":  blobWithBootstrap(t, nil),
		"zstd blob without boot":  blobWithBootstrap(t, nil, zstdChunk),
		"bootstrap cut in half":   boot[:len(boot)/2],
		"a blob of the v5 images": mustRead(t, filepath.Join(fixtures, "v5-repeatable", "blobs", "7334a2594e133cf8ae364189c2276b090fc490c627bcc3fb1077f0419a538e00")),
	}
	for name, data := range tests {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "input")
			if err := os.WriteFile(p, data, 0o644); err != nil {
				t.Fatal(err)
			}
			_, _, err := Load(p)
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrNotBootstrap) && !errors.Is(err, rafs.ErrCorrupt) && !errors.Is(err, blob.ErrNoBootstrap) &&
				!errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("error %q wraps none of the expected causes", err)
			}
		})
	}
}

func mustRead(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A blob that inlines its bootstrap and starts with a zstd-compressed chunk is read through its
// ToC. Sniffing its first bytes alone took it for a zstd-compressed bootstrap layer and failed
// with "archive/tar: invalid tar header".
func TestExtractBlobStartingWithZstd(t *testing.T) {
	boot := mustRead(t, filepath.Join(fixtures, "v6-zstd-blake3", "rafs-v6-2.2.boot"))
	data := blobWithBootstrap(t, boot, zstdChunk)
	if !bytes.HasPrefix(data, []byte{0x28, 0xb5, 0x2f, 0xfd}) {
		t.Fatalf("blob starts with % x, not the zstd magic: the test would prove nothing", data[:4])
	}
	got, err := Extract(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, boot) {
		t.Errorf("extracted %d bytes, want the %d-byte bootstrap", len(got), len(boot))
	}
	// The same blob with its ToC damaged reports the blob's error, not a tar one.
	bad := bytes.Clone(data)
	bad[len(bad)-512-128] ^= 0xff // the last ToC entry's flags
	if _, err := Extract(bytes.NewReader(bad), int64(len(bad))); !errors.Is(err, rafs.ErrCorrupt) {
		t.Errorf("damaged ToC: error %v, want one wrapping %v", err, rafs.ErrCorrupt)
	}
}

// withTarHeader appends the GNU tar header that nydus-image writes after a section (the entry's
// data precedes it), naming the last size bytes of data: what a blob built without a ToC but with
// an inlined bootstrap ends in (builder/src/lib.rs dump_bootstrap).
func withTarHeader(t testing.TB, data []byte, name string, size int) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o444, Size: int64(size), Format: tar.FormatGNU}); err != nil {
		t.Fatal(err)
	}
	return append(bytes.Clone(data), buf.Bytes()[:512]...)
}

// A blob that inlines its own image's bootstrap (builder.Options.InlineBootstrap, as nydus-image
// --blob-inline-meta lays it out) is read through its tail whatever its first chunk looks like,
// and names itself: the bootstrap's placeholder entry gets the blob's id (from its name, or its
// sha256 when the name is not an id), size and ToC, so every chunk reads back and verifies.
func TestLoadInlinedBootstrapEveryCompressor(t *testing.T) {
	// The first file's chunk comes first in the blob: with no compressor it is stored as is, so
	// a bootstrap layer tar holding another image's bootstrap is what sniffing would find.
	decoy := layerTar(t, LayerPath, mustRead(t, filepath.Join(fixtures, "v5-repeatable", "sha256-nocompress-repeatable")))
	src := t.TempDir()
	for name, body := range map[string][]byte{
		"a-first":   decoy,
		"b/text":    bytes.Repeat([]byte("compressible file data\n"), 4000),
		"b/another": []byte("small"),
	} {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		comp rafs.Compressor
		head []byte // how the blob starts: what sniffing the first bytes alone would see
	}{
		{rafs.CompressNone, decoy[:512]},                    // a tar
		{rafs.CompressZstd, []byte{0x28, 0xb5, 0x2f, 0xfd}}, // a zstd frame, as nydus-image's default makes
		{rafs.CompressGzip, []byte{0x1f, 0x8b}},             // a gzip member
		{rafs.CompressLZ4Block, nil},                        // a raw LZ4 block has no magic
	}
	for _, tc := range tests {
		t.Run(tc.comp.String(), func(t *testing.T) {
			opts := builder.DefaultOptions()
			opts.Compressor, opts.InlineBootstrap = tc.comp, true
			dir := t.TempDir()
			res, err := builder.Build(context.Background(), opts, dir, []builder.Layer{builder.PathLayer(src)})
			if err != nil {
				t.Fatal(err)
			}
			want := res.LayerBlobs[0]
			p := filepath.Join(dir, want.ID)
			if head := mustRead(t, p); !bytes.HasPrefix(head, tc.head) {
				t.Fatalf("blob starts with % x, want % x: the case would prove nothing", head[:8], tc.head)
			}
			renamed := filepath.Join(t.TempDir(), "layer.blob")
			if err := os.Link(p, renamed); err != nil {
				t.Fatal(err)
			}
			for _, path := range []string{p, renamed} {
				data, img, err := Load(path)
				if err != nil {
					t.Fatalf("%s: %v", filepath.Base(path), err)
				}
				if !bytes.Equal(data, res.Bootstrap) {
					t.Fatalf("%s: extracted %d bytes, want the %d-byte bootstrap", filepath.Base(path), len(data), len(res.Bootstrap))
				}
				if len(img.Blobs) != 1 {
					t.Fatalf("%d blobs, want 1", len(img.Blobs))
				}
				if got := img.Blobs[0]; got.ID != want.ID || got.CompressedSize != want.CompressedSize ||
					got.TOCSize != want.TOCSize || got.TOCDigest != want.TOCDigest {
					t.Errorf("%s: blob named %s (%d bytes, ToC %d %s), want %s (%d bytes, ToC %d %s)", filepath.Base(path),
						got.ID, got.CompressedSize, got.TOCSize, got.TOCDigest, want.ID, want.CompressedSize, want.TOCSize, want.TOCDigest)
				}
				rep, err := check.Image(context.Background(), img, dir)
				if err != nil {
					t.Fatalf("%s: check: %v", filepath.Base(path), err)
				}
				if rep.Chunks == 0 {
					t.Errorf("%s: check read no chunks", filepath.Base(path))
				}
			}
		})
	}
}

// The blob with an inlined bootstrap that upstream's own ToC tests use, made by nydus-image:
// it starts with a zstd chunk, and its bootstrap names it by an id that is not its sha256
// (built before INLINED_FS_META existed); read through --bootstrap it names itself and checks.
func TestLoadUpstreamInlinedBootstrap(t *testing.T) {
	const id = "2fa78cad554b75ac91a4a125ed148d0ddeb25efa4aaa8bd80e5dc292690a4dca"
	dir := filepath.Join(fixtures, "v6-inlined-bootstrap")
	p := filepath.Join(dir, id)
	if head := mustRead(t, p); !bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}) {
		t.Fatalf("fixture starts with % x, not the zstd magic", head[:4])
	}
	_, img, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if img.Version != 6 || len(img.Blobs) != 1 || img.Blobs[0].ID != id {
		t.Fatalf("v%d image with blobs %v, want v6 naming %s", img.Version, img.Blobs, id)
	}
	var files []string
	for _, c := range img.Root.Children {
		files = append(files, c.Name)
	}
	if got := strings.Join(files, " "); got != "error.rs lib.rs logger.rs" {
		t.Errorf("files %s, want error.rs lib.rs logger.rs", got)
	}
	if _, err := check.Image(context.Background(), img, dir); err != nil {
		t.Errorf("check: %v", err)
	}
}
