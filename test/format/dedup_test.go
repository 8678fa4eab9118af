package format_test

import (
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/dfnydus/dfnydus/internal/progress"
	"github.com/dfnydus/dfnydus/test/internal/testenv"
)

// Version 2 of an image built with --chunk-dict pointing at version 1 stores only the chunks that
// are new: three new files and one changed file, 7 chunks of 1 MiB or less, out of thousands.
func TestChunkDictStoresOnlyNewChunks(t *testing.T) {
	testenv.RequireRoot(t)
	root := testenv.Rootfs(t)
	dir := testenv.TempDir(t)
	v1 := build(t, filepath.Join(dir, "v1"), nil, root)

	tree2 := filepath.Join(dir, "tree2")
	testenv.MustExec(t, "cp", "-a", root, tree2)
	newFiles := map[string]int{"opt/new-2.5M": 5 << 19, "opt/new-100K": 100 << 10, "opt/new-1M+1": 1<<20 + 1}
	for name, size := range newFiles {
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
	_, _ = f.WriteString("v2:x:999:999::/nonexistent:/usr/sbin/nologin\n")
	f.Close()
	if err := os.Remove(filepath.Join(tree2, "etc/hostname")); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	const wantNew = 3 + 1 + 2 + 1 // ceil(size/1MiB) per new file, one for the changed passwd

	plain := build(t, filepath.Join(dir, "v2-plain"), nil, tree2)
	dedup := build(t, filepath.Join(dir, "v2-dict"), []string{"--chunk-dict", "bootstrap=" + v1.boot}, tree2)
	if got := dedup.summary.Stats.StoredChunks; got != wantNew {
		t.Errorf("v2 with chunk dict stored %d chunks, want %d", got, wantNew)
	}
	if dedup.summary.Stats.DictChunks == 0 {
		t.Error("no chunk came from the dict")
	}
	// The new image references v1's blob and its own small one, and is complete.
	if len(dedup.summary.Blobs) != 2 || dedup.summary.Blobs[0] != v1.summary.Blobs[0] {
		t.Errorf("v2 blobs %v: want [v1's blob, new blob]", dedup.summary.Blobs)
	}
	both := filepath.Join(dir, "allblobs")
	testenv.MustExec(t, "sh", "-c", "mkdir -p "+both+" && cp "+v1.blobs+"/* "+dedup.blobs+"/* "+both)
	testenv.MustRun(t, "check", "--bootstrap", dedup.boot, "--blob-dir", both)
	out := filepath.Join(dir, "out")
	testenv.MustRun(t, "unpack", "--bootstrap", dedup.boot, "--blob-dir", both, "--output", out)
	testenv.AssertSameTree(t, testenv.Snapshot(t, tree2), testenv.Snapshot(t, out))

	t.Logf("debian minbase v2: new blob %s with --chunk-dict vs %s without (%d vs %d chunks stored)",
		progress.Bytes(dedup.summary.Stats.StoredBytes), progress.Bytes(plain.summary.Stats.StoredBytes),
		dedup.summary.Stats.StoredChunks, plain.summary.Stats.StoredChunks)
}
