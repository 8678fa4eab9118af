package p2p_test

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dfnydus/dfnydus/test/internal/testenv"
)

// largeBlobTarget is how many file bytes the large image holds: its one blob (stored without
// compression) must pass 500 x 16 MiB = 8.39 GB, where Dragonfly's piece-length rule (size / 500
// rounded up to a power of two) gives 32 MiB pieces.
const largeBlobTarget = 9.2e9

// largeFreeDisk is what the large scenario needs free under /var/tmp: the tar and its gzip layer,
// the registry's copy of both images, and two peers' stores of the ~9 GB blob.
const largeFreeDisk = 50 << 30

// TestP2PLarge (h) is `make bench-p2p-large`: an image whose one blob is over 8.4 GB, so its pieces
// are 32 MiB without forcing, read through P2P by two peers. The link is left unshaped (veth,
// ~0.5 GB/s) so it finishes in minutes; the byte ratio, not the time, is what it checks. Every file
// it makes is removed at the end. It runs only with DFNYDUS_BENCH_P2P_LARGE=1.
func TestP2PLarge(t *testing.T) {
	if os.Getenv("DFNYDUS_BENCH_P2P_LARGE") != "1" {
		t.Skip("set DFNYDUS_BENCH_P2P_LARGE=1 (make bench-p2p-large)")
	}
	requireTools(t)
	var st unix.Statfs_t
	if err := unix.Statfs("/var/tmp", &st); err != nil {
		t.Fatal(err)
	}
	if free := int64(st.Bavail) * int64(st.Bsize); free < largeFreeDisk {
		t.Skipf("/var/tmp has %.1f GB free, the large blob needs %.1f GB", float64(free)/1e9, float64(largeFreeDisk)/1e9)
	}
	pair := names("p", 2)
	layout := largeLayout(t)
	c := newCluster(t, clusterOpts{layout: layout, peers: pair, convert: []string{"--compressor", "none"}})
	os.RemoveAll(layout) // the registry has it now; the disk is needed for the peers' stores
	rep := newReport(t, c.title("make bench-p2p-large (one blob over 8.4 GB, chunks stored uncompressed)"))
	var blob int64
	for _, n := range c.blobSizes {
		blob += n
	}
	if blob < 500*16<<20 {
		t.Fatalf("the blob is %.2f GB: raise largeBlobTarget so it passes 8.39 GB", float64(blob)/1e9)
	}

	w := c.wholeImage(t)
	var runs []run
	var peers []*peerProc
	for _, n := range pair {
		ps := c.startPeers(t, []string{n}, peerOpts{p2p: true, prefetch: "all"})
		runs = append(runs, c.mountAndRead(t, ps, w))
		peers = append(peers, ps...)
	}
	defer stopAll(t, peers)
	if runs[1].sums[0] != runs[0].sums[0] {
		t.Fatalf("the second peer read md5 %s, the first %s", runs[1].sums[0], runs[0].sums[0])
	}
	rep.add("h. first peer (from the source)", runs[0])
	rep.add("h. second peer (from the first)", runs[1])

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	obs := c.observer(t, ctx)
	defer obs.Close(context.Background())
	for _, u := range c.blobs {
		task, err := obs.StatTask(ctx, taskID(u))
		if err != nil {
			t.Fatalf("StatTask of %s: %v", u, err)
		}
		pieces := uint32(math.Ceil(float64(task.GetContentLength()) / (32 << 20)))
		rep.note("h. task of %.2f GB: %d pieces (32 MiB pieces make %d)", float64(task.GetContentLength())/1e9, task.GetPieceCount(), pieces)
		if task.GetPieceCount() != pieces {
			t.Errorf("the %d-byte blob has %d pieces at the scheduler, want %d (32 MiB each)", task.GetContentLength(), task.GetPieceCount(), pieces)
		}
	}
	if ratio := float64(c.blobBytes(runs[0])+c.blobBytes(runs[1])) / float64(blob); ratio > 1.05 {
		t.Errorf("two peers made the registry send %.2fx the blob, want <= 1.05", ratio)
	}
}

// largeLayout writes (into a temporary directory, removed when t ends) an OCI layout of one layer
// holding the Go toolchain tree copied until the files sum to largeBlobTarget: real files, each
// MiB of each copy's files starting with a line naming the copy, so no chunk of one copy repeats
// another's (files repeated inside the tree still share chunks: the blob is ~5% under the target).
func largeLayout(t *testing.T) string {
	t.Helper()
	work := testenv.TempDir(t)
	layout := filepath.Join(work, "layout")
	tarball := filepath.Join(work, "layer.tar")
	writeCopiesTar(t, tarball, testenv.GoRoot(t), largeBlobTarget)
	testenv.MustExec(t, "umoci", "init", "--layout", layout)
	testenv.MustExec(t, "umoci", "new", "--image", layout+":img")
	testenv.MustExec(t, "umoci", "raw", "add-layer", "--image", layout+":img", tarball)
	os.Remove(tarball)
	return layout
}

// writeCopiesTar writes a tar of copies of the tree under data/copy-NN/ until target file bytes.
func writeCopiesTar(t *testing.T, dst, tree string, target float64) {
	t.Helper()
	type entry struct {
		rel  string
		dir  bool
		size int64
	}
	var entries []entry
	var treeBytes int64
	err := filepath.WalkDir(tree, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(tree, p)
		switch {
		case d.IsDir():
			entries = append(entries, entry{rel: rel, dir: true})
		case d.Type().IsRegular():
			info, err := d.Info()
			if err != nil {
				return err
			}
			entries = append(entries, entry{rel: rel, size: info.Size()})
			treeBytes += info.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "data/", Mode: 0o755}); err != nil {
		t.Fatal(err)
	}
	copies := int(math.Ceil(target / float64(treeBytes)))
	for i := 0; i < copies; i++ {
		mark := fmt.Sprintf("dfnydus large-blob copy %02d\n", i)
		base := fmt.Sprintf("data/copy-%02d", i)
		for _, e := range entries {
			name := filepath.ToSlash(filepath.Join(base, e.rel))
			if e.dir {
				if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: 0o755}); err != nil {
					t.Fatal(err)
				}
				continue
			}
			src, err := os.Open(filepath.Join(tree, e.rel))
			if err != nil {
				t.Fatal(err)
			}
			// The mark starts every 1 MiB chunk (the default chunk size), not only the first: a
			// copy's later chunks would otherwise equal every other copy's and dedup away.
			block := int64(1<<20 - len(mark))
			blocks := max(1, (e.size+block-1)/block)
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: blocks*int64(len(mark)) + e.size}); err != nil {
				t.Fatal(err)
			}
			for b := int64(0); b < blocks && err == nil; b++ {
				_, err = io.Copy(tw, io.MultiReader(strings.NewReader(mark), io.LimitReader(src, block)))
			}
			src.Close()
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
}
