package convert_test

import (
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/dfnydus/dfnydus/test/internal/registrytest"
	"github.com/dfnydus/dfnydus/test/internal/testenv"
)

// layoutFromTree makes an OCI layout whose tag holds one layer: the whole tree (umoci raw add-layer
// of a tar of it).
func layoutFromTree(t *testing.T, dir, tree, tag string) string {
	t.Helper()
	layout := filepath.Join(dir, "layout")
	if _, err := os.Stat(layout); err != nil {
		testenv.MustExec(t, "umoci", "init", "--layout", layout)
	}
	testenv.MustExec(t, "umoci", "new", "--image", layout+":"+tag)
	tarball := filepath.Join(dir, tag+".tar")
	testenv.MustExec(t, "tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-C", tree, "-cf", tarball, ".")
	testenv.MustExec(t, "umoci", "raw", "add-layer", "--image", layout+":"+tag, tarball)
	return layout
}

// Version 2 of an image (a rebuilt single layer: three new files, one changed, one removed)
// converted with --chunk-dict pointing at version 1's nydus image uploads only its new chunks (plus
// the bootstrap layer and config), measured at the registry's door, and is still a complete image.
func TestConvertChunkDictUploadsOnlyNewChunks(t *testing.T) {
	e := newEnv(t)
	root := testenv.Rootfs(t)
	dir := testenv.TempDir(t)
	tree2 := filepath.Join(dir, "tree2")
	testenv.MustExec(t, "cp", "-a", root, tree2)
	for name, size := range map[string]int{"opt/new-2.5M": 5 << 19, "opt/new-100K": 100 << 10, "opt/new-1M+1": 1<<20 + 1} {
		data := make([]byte, size)
		_, _ = rand.Read(data)
		if err := os.WriteFile(filepath.Join(tree2, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.OpenFile(filepath.Join(tree2, "etc/passwd"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("v2:x:999:999::/nonexistent:/usr/sbin/nologin\n")
	f.Close()
	os.Remove(filepath.Join(tree2, "etc/hostname"))

	layoutFromTree(t, dir, root, "v1")
	layout := layoutFromTree(t, dir, tree2, "v2")
	srcV1 := e.pushLayout(t, layout, "v1", "os")
	srcV2 := e.pushLayout(t, layout, "v2", "os")

	uploaded := func(args ...string) int64 {
		before := e.proxy.Counts(registrytest.KindBlobUpload).BytesIn
		e.mustRun(t, args...)
		return e.proxy.Counts(registrytest.KindBlobUpload).BytesIn - before
	}
	v1 := uploaded("convert", srcV1, e.ref("os-nydus", "v1"))
	plain := uploaded("convert", srcV2, e.ref("os-nydus-plain", "v2"))
	// v2 goes to another repository: v1's blob must be mounted across, not uploaded again.
	dedup := uploaded("convert", "--chunk-dict", e.ref("os-nydus", "v1"), srcV2, e.ref("os-nydus-v2", "v2"))

	// What the dedup run must upload: its own small blob, the bootstrap layer and the config. Their
	// sizes are in its manifest; v1's blob is referenced and mounted from v1's repository.
	m, _ := e.manifest(t, e.ref("os-nydus-v2", "v2"))
	mv1, _ := e.manifest(t, e.ref("os-nydus", "v1"))
	if len(m.Layers) != 3 || m.Layers[0].Digest != mv1.Layers[0].Digest {
		t.Fatalf("v2 layers %v: want [v1's blob, new blob, bootstrap]", m.Layers)
	}
	want := m.Layers[1].Size + m.Layers[2].Size + m.Config.Size
	if dedup != want {
		t.Errorf("dedup convert uploaded %d bytes, want exactly the new blob + bootstrap + config = %d", dedup, want)
	}
	if !sawMount(e.proxy) {
		t.Error("no cross-repository mount was made for v1's blob")
	}
	if m.Layers[1].Size > 4<<20 {
		t.Errorf("new blob is %d bytes: more than the ~3.6 MiB of new chunks", m.Layers[1].Size)
	}
	out := filepath.Join(dir, "out")
	e.mustRun(t, "unpack", "--image", e.ref("os-nydus-v2", "v2"), "--output", out)
	testenv.AssertSameTree(t, testenv.Snapshot(t, tree2), testenv.Snapshot(t, out))
	t.Logf("uploaded: v1 %d bytes; v2 without dict %d; v2 with --chunk-dict v1 %d (%.1f%% of a plain convert)",
		v1, plain, dedup, 100*float64(dedup)/float64(plain))
}

// sawMount reports whether a cross-repository mount succeeded (POST ...?mount= answered 201).
func sawMount(p *registrytest.Proxy) bool {
	for _, r := range p.Requests() {
		if r.Method == "POST" && r.Status == 201 {
			return true
		}
	}
	return false
}
