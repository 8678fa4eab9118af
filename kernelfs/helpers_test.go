package kernelfs

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dfnydus/dfnydus/internal/fstree"
	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/blob"
	"github.com/dfnydus/dfnydus/rafs/bootstrap"
	"github.com/dfnydus/dfnydus/rafs/builder"
)

// requireKernel skips tests that mount when this process or kernel cannot.
func requireKernel(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no /dev/fuse: %v", err)
	}
	if err := Supported(); err != nil {
		t.Skipf("kernel: %v", err)
	}
}

// built is a v6 image made by the real builder: its raw bootstrap, its decoded model and the
// directory of its blobs.
type built struct {
	raw     []byte
	img     *rafs.Image
	blobDir string
}

func buildV6(t testing.TB, src string, chunkSize uint32) built {
	t.Helper()
	opts := builder.DefaultOptions()
	opts.FSVersion = 6
	if chunkSize != 0 {
		opts.ChunkSize = chunkSize
	}
	blobDir := filepath.Join(t.TempDir(), "blobs")
	res, err := builder.Build(context.Background(), opts, blobDir, []builder.Layer{builder.PathLayer(src)})
	if err != nil {
		t.Fatalf("build v6 image of %s: %v", src, err)
	}
	img, err := bootstrap.Decode(res.Bootstrap)
	if err != nil {
		t.Fatalf("decode v6 bootstrap: %v", err)
	}
	return built{raw: res.Bootstrap, img: img, blobDir: blobDir}
}

func dirReader(t testing.TB, dir string) *blob.Dir {
	d := blob.NewDir(dir)
	t.Cleanup(func() { d.Close() })
	return d
}

// mountKernel mounts b over r in fresh directories; the mount is unmounted when the test ends.
func mountKernel(t testing.TB, b built, r rafs.ChunkReader) (string, *Server) {
	t.Helper()
	dir := t.TempDir()
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := Mount(mnt, filepath.Join(dir, "work"), b.img, b.raw, r, Options{})
	if err != nil {
		t.Fatalf("kernel mount: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
			s.Detach()
		}
	})
	return mnt, s
}

func snapshot(t testing.TB, root string) map[string]fstree.Entry {
	t.Helper()
	s, err := fstree.Snapshot(root, fstree.Options{IgnoreRootMtime: true})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func assertSameTree(t testing.TB, want, got map[string]fstree.Entry) {
	t.Helper()
	diffs := fstree.Diff(want, got)
	for i, d := range diffs {
		if i == 30 {
			t.Errorf("... and %d more differences", len(diffs)-30)
			break
		}
		t.Error(d)
	}
}

// mountsUnder lists the mount table's entries whose mount point or source lies under dir.
func mountsUnder(t testing.TB, dir string) []string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		if strings.Contains(l, dir) {
			out = append(out, l)
		}
	}
	return out
}
