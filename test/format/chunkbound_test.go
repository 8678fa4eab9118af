package format_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/builder"
	"github.com/dfnydus/dfnydus/test/internal/testenv"
)

// A bootstrap whose chunk record claims a ~4 GiB compressed size would make one FUSE read allocate
// 4 GiB. inspect and mount must refuse it up front, naming the file and chunk, like check does.
func TestHugeChunkSizeRefused(t *testing.T) {
	for _, version := range []int{5, 6} {
		t.Run(map[int]string{5: "v5", 6: "v6"}[version], func(t *testing.T) {
			dir := t.TempDir()
			src, blobs := filepath.Join(dir, "src"), filepath.Join(dir, "blobs")
			for _, d := range []string{src, blobs} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(filepath.Join(src, "f"), bytes.Repeat([]byte("hostile "), 4096), 0o644); err != nil {
				t.Fatal(err)
			}
			opts := builder.DefaultOptions()
			opts.FSVersion = version
			res, err := builder.Build(context.Background(), opts, blobs, []builder.Layer{builder.PathLayer(src)})
			if err != nil {
				t.Fatalf("build: %v", err)
			}
			boot := patchCompressedSize(t, res.Bootstrap, res.Image.Lookup("/f").Inode.Chunks[0], 0xffff_f000)
			p := filepath.Join(dir, "boot")
			if err := os.WriteFile(p, boot, 0o644); err != nil {
				t.Fatal(err)
			}
			for _, args := range [][]string{
				{"inspect", "--bootstrap", p},
				{"check", "--bootstrap", p, "--blob-dir", blobs},
				{"mount", "--foreground", "--cache-dir", filepath.Join(dir, "cache"), "--bootstrap", p, "--blob-dir", blobs, filepath.Join(dir, "mnt")},
			} {
				if args[0] == "mount" {
					if err := os.Mkdir(filepath.Join(dir, "mnt"), 0o755); err != nil {
						t.Fatal(err)
					}
				}
				r := runBounded(t, args...)
				if r.Err == nil {
					t.Fatalf("dfnydus %s accepted a chunk claiming 4 GiB", args[0])
				}
				if !strings.Contains(r.Stderr, "compressed size 4294963200 exceeds") || !strings.Contains(r.Stderr, "chunk 0") {
					t.Errorf("dfnydus %s: no clear message naming the chunk:\n%s", args[0], r.Stderr)
				}
			}
		})
	}
}

// runBounded runs dfnydus for at most a minute: a mount that wrongly accepted the image would serve
// until killed.
func runBounded(t *testing.T, args ...string) testenv.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, testenv.Binary(t), args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("dfnydus %s still ran after a minute", args[0])
	}
	return testenv.Result{Stdout: stdout.String(), Stderr: stderr.String(), Err: err}
}

// patchCompressedSize sets the compressed size of every chunk record of c (found by its digest, which
// starts the 80-byte record in v5 and v6 alike; the size is at byte 40).
func patchCompressedSize(t *testing.T, boot []byte, c rafs.Chunk, size uint32) []byte {
	t.Helper()
	out, n := bytes.Clone(boot), 0
	for i := 0; ; n++ {
		j := bytes.Index(out[i:], c.Digest[:])
		if j < 0 {
			break
		}
		binary.LittleEndian.PutUint32(out[i+j+40:], size)
		i += j + 1
	}
	if n == 0 {
		t.Fatal("no chunk record to patch")
	}
	return out
}
