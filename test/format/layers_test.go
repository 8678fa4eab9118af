package format_test

import (
	"path/filepath"
	"testing"

	"github.com/dfnydus/dfnydus/test/internal/testenv"
)

// A multi-layer image made with umoci (deletions, replacements, hard links, xattrs) plus a hand-made
// layer with an opaque directory and explicit whiteouts: the merged nydus image unpacks to exactly what
// `umoci unpack` gives for the same layers, for both fs-versions.
func TestMultiLayerWhiteoutsMatchUmoci(t *testing.T) {
	dir := testenv.TempDir(t)
	layout := testenv.WhiteoutImage(t, dir)
	testenv.MustExec(t, "umoci", "unpack", "--image", layout+":img", filepath.Join(dir, "oracle"))
	layers := testenv.OCILayers(t, layout, "img")
	if len(layers) != 3 {
		t.Fatalf("umoci made %d layers, want 3", len(layers))
	}
	want := testenv.Snapshot(t, filepath.Join(dir, "oracle", "rootfs"))
	for _, p := range testenv.WhiteoutImageExpect.Present {
		if _, ok := want[p]; !ok {
			t.Fatalf("oracle lacks %s: the scenario did not build as intended", p)
		}
	}
	for _, p := range testenv.WhiteoutImageExpect.Absent {
		if _, ok := want[p]; ok {
			t.Fatalf("oracle still has %s: the scenario did not build as intended", p)
		}
	}
	for _, fsv := range []string{"5", "6"} {
		t.Run("v"+fsv, func(t *testing.T) {
			d := filepath.Join(dir, "v"+fsv)
			img := build(t, d, []string{"--fs-version", fsv}, layers...)
			if len(img.summary.NewBlobs) != 3 {
				t.Errorf("layer blobs %v: want one entry per layer", img.summary.NewBlobs)
			}
			testenv.MustRun(t, "check", "--bootstrap", img.boot, "--blob-dir", img.blobs)
			out := filepath.Join(d, "out")
			testenv.MustRun(t, "unpack", "--bootstrap", img.boot, "--blob-dir", img.blobs, "--output", out)
			testenv.AssertSameTree(t, want, testenv.Snapshot(t, out))
		})
	}
}
