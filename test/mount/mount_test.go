package mount_test

import (
	"context"
	"crypto/rand"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dfnydus/dfnydus/oci"
	"github.com/dfnydus/dfnydus/peer"
	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/registry"
	"github.com/dfnydus/dfnydus/test/internal/registrytest"
	"github.com/dfnydus/dfnydus/test/internal/testenv"
)

// bigTree is a Debian minbase rootfs plus 140 MB of incompressible data: an image over 300 MB
// where a program touches a few percent.
func bigTree(t *testing.T, dir string) string {
	t.Helper()
	tree := filepath.Join(dir, "tree")
	testenv.MustExec(t, "cp", "-a", testenv.Rootfs(t), tree)
	f, err := os.Create(filepath.Join(tree, "opt", "big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for i := 0; i < 140; i++ {
		rand.Read(buf)
		f.Write(buf)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return tree
}

// fileChunksBytes is the compressed size of the chunks holding path in the image at ref.
func fileChunksBytes(t *testing.T, ref, path string) int64 {
	t.Helper()
	r, err := registry.ParseRef(ref)
	if err != nil {
		t.Fatal(err)
	}
	c, err := registry.New(registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	img, err := oci.Open(context.Background(), c, r, registry.HostPlatform())
	if err != nil {
		t.Fatal(err)
	}
	n := img.RAFS.Lookup(path)
	if n == nil {
		t.Fatalf("%s not in the image", path)
	}
	var sum int64
	for _, ch := range n.Inode.Chunks {
		sum += int64(ch.CompressedSize)
	}
	return sum
}

// The lazy mount, as a user lives it, step by step on one >= 300 MB image.
func TestLazyMountScenario(t *testing.T) {
	e := newEnv(t)
	tree := bigTree(t, e.dir)
	want := testenv.Snapshot(t, tree)
	ref := e.convertTree(t, tree, "debian")
	mp := filepath.Join(e.dir, "mnt")

	m := startMount(t, e.cache, mp, "--prefetch", "off", ref)
	t.Run("walking the whole tree fetches no blob bytes", func(t *testing.T) {
		before := blobBytes(e.proxy)
		testenv.MustExec(t, "ls", "-lRa", mp)
		testenv.MustExec(t, "find", mp, "-xdev", "-printf", "%p %s %m %u %g %T@\n")
		if got := blobBytes(e.proxy) - before; got != 0 {
			t.Errorf("ls -lR + find fetched %d blob bytes, want 0", got)
		}
	})
	t.Run("reading one small file fetches its chunks and at most the read window after them", func(t *testing.T) {
		before := blobBytes(e.proxy)
		data, err := os.ReadFile(filepath.Join(mp, "usr/lib/os-release"))
		if err != nil || !strings.Contains(string(data), "Debian") {
			t.Fatalf("read os-release: %v %q", err, data)
		}
		got, chunks := blobBytes(e.proxy)-before, fileChunksBytes(t, ref, "/usr/lib/os-release")
		if got < chunks || got > chunks+peer.DefaultReadWindow {
			t.Errorf("reading /usr/lib/os-release fetched %d bytes; its chunks hold %d, the read window is %d", got, chunks, peer.DefaultReadWindow)
		}
	})
	t.Run("a program runs from the mount (chroot)", func(t *testing.T) {
		out := testenv.MustExec(t, "chroot", mp, "/usr/bin/dpkg-query", "-W", "-f", "${Package} ${Status}\n", "coreutils")
		if !strings.Contains(out, "coreutils install ok installed") {
			t.Errorf("dpkg-query in the chroot printed %q", out)
		}
		before := blobBytes(e.proxy)
		testenv.MustExec(t, "chroot", mp, "/bin/bash", "-c", "echo hello from nydus")
		t.Logf("running bash fetched %d more bytes", blobBytes(e.proxy)-before)
	})
	t.Run("the mount equals the source tree", func(t *testing.T) {
		testenv.AssertSameTree(t, want, testenv.Snapshot(t, mp))
		testenv.MustExec(t, "diff", "-r", "--no-dereference", "--exclude=dev", tree, mp) // diff cannot compare device nodes
	})
	t.Run("after kill -9 a new mount serves everything from the store", func(t *testing.T) {
		m.kill9(t)
		m = startMount(t, e.cache, mp, "--prefetch", "off", ref)
		before := blobBytes(e.proxy)
		testenv.AssertSameTree(t, want, testenv.Snapshot(t, mp))
		if got := blobBytes(e.proxy) - before; got != 0 {
			t.Errorf("re-reading after a restart fetched %d bytes from the registry, want 0", got)
		}
	})
	t.Run("tampered cache files are repaired, contents stay correct", func(t *testing.T) {
		m.stop(t)
		flipped := tamper(t, filepath.Join(e.cache, "store"), 25)
		m = startMount(t, e.cache, mp, "--prefetch", "off", ref)
		testenv.AssertSameTree(t, want, testenv.Snapshot(t, mp))
		if s := m.stat(t); s.StoreRepairedEver < int64(flipped) {
			t.Errorf("store repaired %d chunks, want >= %d tampered", s.StoreRepairedEver, flipped)
		}
		metrics := scrape(t, m)
		if !strings.Contains(metrics, "dfnydus_store_repaired_total") {
			t.Error("no repair metric exported")
		}
		m.stop(t)
	})
	t.Run("a source serving wrong bytes gives EIO, never wrong data", func(t *testing.T) {
		cache := filepath.Join(e.dir, "cache-corrupt")
		cm := startMount(t, cache, mp, "--prefetch", "off", "--source-retries", "1", ref)
		// From now on (the bootstrap layer is already read) every blob byte comes back altered.
		e.proxy.Inject(registrytest.Fault{Match: `^GET /v2/debian-nydus/blobs/sha256:`, Times: -1, Corrupt: true})
		defer e.proxy.ClearFaults()
		_, err := os.ReadFile(filepath.Join(mp, "usr/lib/os-release"))
		if !errors.Is(err, syscall_EIO) {
			t.Errorf("read through a lying source: %v, want EIO", err)
		}
		cm.stop(t)
		if !strings.Contains(cm.log(), "failed verification") {
			t.Errorf("no clear log of the verification failure:\n%s", cm.log())
		}
	})
	t.Run("once prefetch is done the registry can go away", func(t *testing.T) {
		cache := filepath.Join(e.dir, "cache-offline")
		om := startMount(t, cache, mp, "--prefetch", "all", ref)
		s := om.waitPrefetch(t)
		if s.Prefetch.State != "done" || s.ChunksCached != s.Chunks {
			t.Fatalf("prefetch %+v, %d/%d chunks cached", s.Prefetch, s.ChunksCached, s.Chunks)
		}
		e.proxy.Inject(registrytest.Fault{Match: `.`, Times: -1, Status: 503})
		defer e.proxy.ClearFaults()
		testenv.AssertSameTree(t, want, testenv.Snapshot(t, mp))
		om.stop(t)
	})
	t.Run("a cache budget smaller than the image is respected", func(t *testing.T) {
		cache := filepath.Join(e.dir, "cache-budget")
		const budget = 64 << 20
		bm := startMount(t, cache, mp, "--prefetch", "off", "--cache-budget", "67108864", "--memory-cache", "0", ref)
		testenv.AssertSameTree(t, want, testenv.Snapshot(t, mp))
		// Measured once the mount stopped: an eviction's bytes are punched out of the file right
		// after the index forgets them, so a busy machine can see them on disk a moment longer.
		bm.stop(t)
		if used := dataBytes(t, filepath.Join(cache, "store")); used > budget+(2<<20) {
			t.Errorf("store holds %d bytes of chunk files, budget %d", used, budget)
		}
	})
}

// tamper flips a byte in up to n chunk files of the store (everything but its index database).
func tamper(t *testing.T, dir string, n int) int {
	t.Helper()
	count := 0
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || count >= n || strings.HasSuffix(p, ".db") || strings.Contains(d.Name(), "lock") {
			return err
		}
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			return nil
		}
		defer f.Close()
		fi, _ := f.Stat()
		if fi.Size() < 2 {
			return nil
		}
		b := []byte{0}
		f.ReadAt(b, fi.Size()/2)
		b[0] ^= 0xff
		f.WriteAt(b, fi.Size()/2)
		count++
		return nil
	})
	if count == 0 {
		t.Fatal("no chunk files found to tamper with")
	}
	return count
}

// dataBytes sums the space the store's files other than its index occupy on disk (blob files are
// sparse: their length is the blob's, their blocks what is kept).
func dataBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var sum int64
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !strings.HasSuffix(p, ".db") {
			if fi, err := d.Info(); err == nil {
				if st, ok := fi.Sys().(*syscall.Stat_t); ok {
					sum += st.Blocks * 512
				}
			}
		}
		return nil
	})
	return sum
}

// scrape reads the mount's Prometheus metrics through its API socket.
func scrape(t *testing.T, m *mount) string {
	t.Helper()
	out, err := exec.Command("curl", "-s", "--unix-socket", peerSocket(m), "http://dfnydus/metrics").Output()
	if err != nil {
		t.Fatalf("scrape metrics: %v", err)
	}
	return string(out)
}

var _ = time.Second
var _ = rafs.ErrCorrupt
