package kernelfs

import (
	"os"
	"path/filepath"
	"testing"
)

// writeTree makes a small tree with files spanning several chunks, a hole, a symlink and an
// empty file.
func writeTree(t testing.TB) string {
	t.Helper()
	src := t.TempDir()
	big := make([]byte, 300<<10+123)
	for i := range big {
		big[i] = byte(i*7 + i>>9)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(src, "big"), big, 0o644))
	must(os.WriteFile(filepath.Join(src, "small"), []byte("hello, kernel\n"), 0o600))
	must(os.WriteFile(filepath.Join(src, "empty"), nil, 0o644))
	must(os.MkdirAll(filepath.Join(src, "d/e"), 0o755))
	must(os.WriteFile(filepath.Join(src, "d/e/f"), big[:5000], 0o755))
	must(os.Symlink("../small", filepath.Join(src, "d/link")))
	return src
}

func TestMountedTreeEqualsSource(t *testing.T) {
	requireKernel(t)
	src := writeTree(t)
	b := buildV6(t, src, 64<<10)
	mnt, _ := mountKernel(t, b, dirReader(t, b.blobDir))
	assertSameTree(t, snapshot(t, src), snapshot(t, mnt))
}
