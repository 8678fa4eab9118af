package format_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/dfnydus/dfnydus/internal/fstree"
	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/blob"
	"github.com/dfnydus/dfnydus/rafs/bootstrap"
	"github.com/dfnydus/dfnydus/test/internal/testenv"
)

// image is a build's output on disk.
type image struct {
	boot, blobs string
	summary     buildSummary
}

type buildSummary struct {
	Blobs    []string  `json:"blobs"`
	NewBlobs []*string `json:"layer_blobs"`
	Stats    struct {
		Files        int64 `json:"files"`
		BytesRead    int64 `json:"bytes_read"`
		StoredChunks int64 `json:"stored_chunks"`
		StoredBytes  int64 `json:"stored_bytes"`
		DedupChunks  int64 `json:"dedup_chunks"`
		DictChunks   int64 `json:"dict_chunks"`
	} `json:"stats"`
}

// build runs `dfnydus build` with extra flags over the sources (lowest layer first).
func build(t *testing.T, dir string, flags []string, sources ...string) image {
	t.Helper()
	img := image{boot: filepath.Join(dir, "image.boot"), blobs: filepath.Join(dir, "blobs")}
	js := filepath.Join(dir, "build.json")
	args := append([]string{"build", "--bootstrap", img.boot, "--blob-dir", img.blobs, "--output-json", js, "--log-level", "warn"}, flags...)
	testenv.MustRun(t, append(args, sources...)...)
	data, err := os.ReadFile(js)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &img.summary); err != nil {
		t.Fatal(err)
	}
	return img
}

// Build then unpack gives back the source tree, in content and metadata, for every fs-version and
// compressor (digesters alternate), on a debootstrap rootfs and on the Go toolchain's tree.
func TestRoundTripRealTrees(t *testing.T) {
	testenv.RequireRoot(t)
	trees := []struct{ name, path string }{
		{"debian-minbase", testenv.Rootfs(t)},
		{"goroot", testenv.GoRoot(t)},
	}
	for _, tr := range trees {
		want := testenv.Snapshot(t, tr.path)
		i := 0
		for _, fsv := range []string{"5", "6"} {
			for _, comp := range []string{"none", "lz4_block", "gzip", "zstd"} {
				dig := []string{"blake3", "sha256"}[i%2]
				i++
				t.Run(fmt.Sprintf("%s/v%s/%s/%s", tr.name, fsv, comp, dig), func(t *testing.T) {
					dir := testenv.TempDir(t)
					img := build(t, dir, []string{"--fs-version", fsv, "--compressor", comp, "--digester", dig}, tr.path)
					testenv.MustRun(t, "check", "--bootstrap", img.boot, "--blob-dir", img.blobs)
					out := filepath.Join(dir, "out")
					testenv.MustRun(t, "unpack", "--bootstrap", img.boot, "--blob-dir", img.blobs, "--output", out)
					testenv.AssertSameTree(t, want, testenv.Snapshot(t, out))
					if fsv == "6" && (tr.name == "debian-minbase" || comp == "zstd") {
						kernelOracle(t, img, dir, want)
					}
				})
			}
		}
	}
}

// kernelOracle checks a v6 image with tools that share no code with ours: fsck.erofs and dump.erofs
// from erofs-utils, and the Linux EROFS driver mounting the bootstrap over the blobs' uncompressed view.
func kernelOracle(t *testing.T, img image, dir string, want map[string]fstree.Entry) {
	t.Helper()
	_, parsed, err := bootstrap.Load(img.boot)
	if err != nil {
		t.Fatal(err)
	}
	views := uncompressedViews(t, parsed, img.blobs, dir)
	var devs []string
	for _, v := range views {
		devs = append(devs, "--device="+v)
	}
	if _, err := os.Stat("/usr/bin/fsck.erofs"); err == nil {
		testenv.MustExec(t, "fsck.erofs", append(devs, img.boot)...)
		ls := testenv.MustExec(t, "dump.erofs", append(devs, "--ls", "--path=/", img.boot)...)
		for p := range want {
			if strings.Count(p, "/") == 1 && p != "/" && !strings.Contains(ls, filepath.Base(p)) {
				t.Errorf("dump.erofs --ls / does not list %s", p)
			}
		}
	}
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	var opts []string
	for _, v := range views {
		opts = append(opts, "device="+v)
	}
	if err := unix.Mount(img.boot, mnt, "erofs", unix.MS_RDONLY, strings.Join(opts, ",")); err != nil {
		t.Fatalf("kernel EROFS mount: %v", err)
	}
	defer func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount: %v", err)
		}
	}()
	testenv.AssertSameTree(t, want, testenv.Snapshot(t, mnt))
}

// uncompressedViews writes each blob's uncompressed view (what EROFS reads at blk_addr) in blob order.
func uncompressedViews(t *testing.T, img *rafs.Image, blobDir, dir string) []string {
	t.Helper()
	chunks := make([][]rafs.Chunk, len(img.Blobs))
	seen := map[*rafs.Inode]bool{}
	_ = img.Walk(func(_ string, n *rafs.Node) error {
		if !seen[n.Inode] {
			seen[n.Inode] = true
			for _, c := range n.Inode.Chunks {
				chunks[c.BlobIndex] = append(chunks[c.BlobIndex], c)
			}
		}
		return nil
	})
	src := blob.NewDir(blobDir)
	defer src.Close()
	var out []string
	for i, b := range img.Blobs {
		p := filepath.Join(dir, b.ID+".view")
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := blob.WriteUncompressedView(f, src, b, chunks[i]); err != nil {
			t.Fatalf("uncompressed view of %s: %v", b.ID, err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

// Same input, same options: byte-identical bootstrap and blobs.
func TestReproducible(t *testing.T) {
	src := testenv.GoRoot(t) + "/src/net"
	var boots [2][]byte
	var blobs [2][]string
	for i := range 2 {
		dir := t.TempDir()
		img := build(t, dir, []string{"--workers", fmt.Sprint(1 + 3*i)}, src)
		var err error
		if boots[i], err = os.ReadFile(img.boot); err != nil {
			t.Fatal(err)
		}
		blobs[i] = img.summary.Blobs
	}
	if string(boots[0]) != string(boots[1]) {
		t.Error("two builds of the same tree gave different bootstraps")
	}
	if fmt.Sprint(blobs[0]) != fmt.Sprint(blobs[1]) || len(blobs[0]) != 1 {
		t.Errorf("blob ids differ or are missing: %v vs %v", blobs[0], blobs[1])
	}
}
