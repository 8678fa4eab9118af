package testenv

import (
	"testing"

	"github.com/dfnydus/dfnydus/internal/fstree"
)

// Snapshot records a tree for comparison. The root directory's own mtime is not compared: unpack and
// mounts create the root, and some sources (tars without "./") have none.
func Snapshot(t testing.TB, root string) map[string]fstree.Entry {
	t.Helper()
	s, err := fstree.Snapshot(root, fstree.Options{IgnoreRootMtime: true})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// AssertSameTree reports every difference between two snapshots (the first 30).
func AssertSameTree(t testing.TB, want, got map[string]fstree.Entry) {
	t.Helper()
	for i, d := range fstree.Diff(want, got) {
		if i == 30 {
			t.Error("... and more differences")
			break
		}
		t.Error(d)
	}
}
