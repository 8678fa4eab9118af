package builder

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/blob"
	v5 "github.com/dfnydus/dfnydus/rafs/v5"
	v6 "github.com/dfnydus/dfnydus/rafs/v6"
)

func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, body := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// A build decodes back to the same tree with every file's bytes reachable through its chunks, for
// both fs-versions; prefetch paths survive, and unknown ones are reported, not fatal.
func TestBuildDecodesToTheSameTree(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 1<<14) // 256 KiB: 4 chunks of 64 KiB
	files := map[string]string{"etc/conf": "x=1\n", "usr/bin/tool": big, "usr/share/copy": big, "empty": ""}
	src := writeTree(t, files)
	for _, fsv := range []int{5, 6} {
		t.Run(map[int]string{5: "v5", 6: "v6"}[fsv], func(t *testing.T) {
			opts := DefaultOptions()
			opts.FSVersion, opts.ChunkSize = fsv, 0x10000
			opts.Prefetch = []string{"/usr/bin", "/missing"}
			blobDir := t.TempDir()
			res, err := Build(context.Background(), opts, blobDir, []Layer{PathLayer(src)})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "/missing") {
				t.Errorf("warnings %v, want one about /missing", res.Warnings)
			}
			// 4 chunks of "big" (identical content repeats every 16 bytes, so all 4 chunks are
			// equal: 1 stored, 7 deduped across both files) and one for conf.
			if res.Stats.StoredChunks != 2 || res.Stats.DedupChunks != 7 {
				t.Errorf("stored %d deduped %d chunks, want 2 and 7", res.Stats.StoredChunks, res.Stats.DedupChunks)
			}
			var img *rafs.Image
			if fsv == 5 {
				img, err = v5.Decode(res.Bootstrap)
			} else {
				img, err = v6.Decode(res.Bootstrap)
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(img.Prefetch) != 1 || img.Prefetch[0] != "/usr/bin" {
				t.Errorf("prefetch %v, want [/usr/bin]", img.Prefetch)
			}
			dir := blob.NewDir(blobDir)
			defer dir.Close()
			for p, body := range files {
				n := img.Lookup(p)
				if n == nil {
					t.Fatalf("%s missing", p)
				}
				var got []byte
				for _, c := range n.Inode.Chunks {
					data, err := dir.ReadChunk(context.Background(), img.Blobs[c.BlobIndex], &c, nil)
					if err != nil {
						t.Fatal(err)
					}
					got = append(got, data...)
				}
				if string(got) != body || n.Inode.Size != uint64(len(body)) {
					t.Errorf("%s: %d bytes read back, want %d", p, len(got), len(body))
				}
			}
		})
	}
}

// A failing source leaves neither blob nor temp file behind, and the error names the layer.
func TestBuildFailureLeavesNothing(t *testing.T) {
	blobDir := t.TempDir()
	_, err := Build(context.Background(), DefaultOptions(), blobDir, []Layer{PathLayer(writeTree(t, map[string]string{"a": "1"})), PathLayer("/nonexistent/layer")})
	if err == nil || !strings.Contains(err.Error(), "layer 1") {
		t.Fatalf("err = %v, want one naming layer 1", err)
	}
	left, _ := os.ReadDir(blobDir)
	for _, e := range left {
		if strings.HasPrefix(e.Name(), ".blob-") {
			t.Errorf("temp file %s left behind", e.Name())
		}
	}
}

func TestOptionsValidate(t *testing.T) {
	dict := &rafs.Image{Digester: rafs.DigestSHA256, ChunkSize: rafs.DefaultChunkSize}
	tests := []struct {
		name string
		mod  func(*Options)
		want string
	}{
		{"fs-version 4", func(o *Options) { o.FSVersion = 4 }, "fs-version"},
		{"chunk size not a power of two", func(o *Options) { o.ChunkSize = 0x3000 }, "chunk size"},
		{"chunk size too large", func(o *Options) { o.ChunkSize = 0x2000000 }, "chunk size"},
		{"dict with another digester", func(o *Options) { o.ChunkDict = dict }, "digester"},
		{"inline bootstrap in a v5 blob", func(o *Options) { o.FSVersion, o.InlineBootstrap = 5, true }, "inline bootstrap"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := DefaultOptions()
			tc.mod(&o)
			if err := o.validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("validate = %v, want an error about %s", err, tc.want)
			}
		})
	}
}

// errAtEOF is a stream whose last Read reports an error, as a digest-verifying download does.
type errAtEOF struct {
	r   io.Reader
	err error
}

func (e *errAtEOF) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err == io.EOF {
		return n, e.err
	}
	return n, err
}
func (e *errAtEOF) Close() error { return nil }

// A layer stream that only fails at its very end (after the tar's end-of-archive marker) still fails
// the build: the stream is drained so its verification runs.
func TestStreamLayerErrorAtEOFFailsBuild(t *testing.T) {
	data := tarBytes(t, []tar.Header{{Name: "f", Typeflag: tar.TypeReg, Mode: 0o644}}, "hello")
	data = append(data, make([]byte, 4096)...) // padding after the end-of-archive marker
	bad := errors.New("digest mismatch")
	layer := StreamLayer("remote", func() (io.ReadCloser, error) { return &errAtEOF{r: bytes.NewReader(data), err: bad}, nil })
	_, err := Build(context.Background(), DefaultOptions(), t.TempDir(), []Layer{layer})
	if !errors.Is(err, bad) {
		t.Fatalf("err = %v, want the stream's error", err)
	}
}

// With InlineBootstrap the last layer's blob holds the bootstrap, which names that blob as
// nydus-image --blob-inline-meta does (placeholder id, the size before the bootstrap, no ToC
// yet), while Result.Image names it by its real id and size; a last layer without chunks of its
// own still gets a blob, and earlier layers' blobs are written as usual.
func TestBuildInlineBootstrap(t *testing.T) {
	lower := writeTree(t, map[string]string{"a": strings.Repeat("lower layer data ", 1000)})
	tests := []struct {
		name       string
		upper      map[string]string
		upperBlobs int // blobs the bootstrap's table has for the upper layer
	}{
		{"upper layer with data", map[string]string{"b": strings.Repeat("upper layer data ", 1000)}, 1},
		// Its blob holds only the bootstrap; no chunk names it, so the table does not either.
		{"upper layer without data", map[string]string{"dir/empty": ""}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := DefaultOptions()
			opts.InlineBootstrap = true
			blobDir := t.TempDir()
			res, err := Build(context.Background(), opts, blobDir, []Layer{PathLayer(lower), PathLayer(writeTree(t, tc.upper))})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.LayerBlobs) != 2 || res.LayerBlobs[0] == nil || res.LayerBlobs[1] == nil {
				t.Fatalf("layer blobs %v, want one per layer", res.LayerBlobs)
			}
			if res.LayerBlobs[0].Features&blob.FeatureInlinedFSMeta != 0 {
				t.Error("the lower layer's blob says it inlines the bootstrap")
			}
			top := res.LayerBlobs[1]
			file, err := os.ReadFile(filepath.Join(blobDir, top.ID))
			if err != nil {
				t.Fatal(err)
			}
			rd, err := blob.Open(bytes.NewReader(file), int64(len(file)))
			if err != nil {
				t.Fatal(err)
			}
			boot, err := rd.Bootstrap()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(boot, res.Bootstrap) {
				t.Fatal("the blob inlines another bootstrap than Result.Bootstrap")
			}
			if err := rd.Verify(top); err != nil {
				t.Errorf("the blob does not match its entry: %v", err)
			}
			img, err := v6.Decode(boot)
			if err != nil {
				t.Fatal(err)
			}
			if len(img.Blobs) != 1+tc.upperBlobs || len(res.Image.Blobs) != len(img.Blobs) {
				t.Fatalf("bootstrap names %d blobs, Result.Image %d, want %d", len(img.Blobs), len(res.Image.Blobs), 1+tc.upperBlobs)
			}
			if img.Blobs[0].ID != res.LayerBlobs[0].ID {
				t.Errorf("lower blob named %s, want its id %s", img.Blobs[0].ID, res.LayerBlobs[0].ID)
			}
			if tc.upperBlobs == 0 {
				return
			}
			self, want := img.Blobs[1], rd.TOC()
			bootOff := want[len(want)-1].CompressedOffset // image.boot is the last section before the ToC
			if self.ID != blob.InlinedBlobID || self.CompressedSize != bootOff || self.TOCSize != 0 ||
				self.Features&blob.FeatureInlinedFSMeta == 0 {
				t.Errorf("bootstrap names its own blob %s, %d bytes, ToC %d, features %#x; want the placeholder, %d bytes, no ToC, INLINED_FS_META",
					self.ID, self.CompressedSize, self.TOCSize, self.Features, bootOff)
			}
			if got := res.Image.Blobs[1]; got.ID != top.ID || got.CompressedSize != uint64(len(file)) {
				t.Errorf("Result.Image names the blob %s (%d bytes), want %s (%d bytes)", got.ID, got.CompressedSize, top.ID, len(file))
			}
		})
	}
}
