package mount_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dfnydus/dfnydus/internal/fstree"
	"github.com/dfnydus/dfnydus/kernelfs"
	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/bootstrap"
	"github.com/dfnydus/dfnydus/test/internal/testenv"
)

// requireKernelMode skips when this kernel cannot serve kernel-mode mounts (no EROFS or FUSE).
func requireKernelMode(t *testing.T) {
	t.Helper()
	testenv.RequireRoot(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	if err := kernelfs.Supported(); err != nil {
		t.Skipf("kernel mode unavailable: %v", err)
	}
}

// builtImage is an image built by `dfnydus build` into a directory.
type builtImage struct{ boot, blobs string }

func buildLocal(t *testing.T, dir, tree string, fsVersion int) builtImage {
	t.Helper()
	img := builtImage{boot: filepath.Join(dir, fmt.Sprintf("v%d.boot", fsVersion)), blobs: filepath.Join(dir, fmt.Sprintf("v%d-blobs", fsVersion))}
	testenv.MustRun(t, "build", "--log-level", "warn", "--fs-version", fmt.Sprint(fsVersion), "--bootstrap", img.boot, "--blob-dir", img.blobs, tree)
	return img
}

func (i builtImage) args() []string { return []string{"--bootstrap", i.boot, "--blob-dir", i.blobs} }

// fsTypeAt is the type of the topmost mount at mp ("" when none).
func fsTypeAt(t *testing.T, mp string) string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	typ := ""
	for _, l := range strings.Split(string(data), "\n") {
		before, after, ok := strings.Cut(l, " - ")
		f, tail := strings.Fields(before), strings.Fields(after)
		if ok && len(f) > 4 && len(tail) > 0 && f[4] == mp {
			typ = tail[0]
		}
	}
	return typ
}

// mountsUnder lists the mount table's lines that name a path under dir.
func mountsUnder(dir string) []string {
	data, _ := os.ReadFile("/proc/self/mounts")
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		if strings.Contains(l, dir+"/") {
			out = append(out, l)
		}
	}
	return out
}

// detachAllUnder is the last resort of a failing test: nothing it mounted stays behind.
func detachAllUnder(t *testing.T, dir string) {
	t.Cleanup(func() {
		left := mountsUnder(dir)
		if len(left) == 0 {
			return
		}
		t.Errorf("mounts left behind: %q", left)
		for i := len(left) - 1; i >= 0; i-- {
			if f := strings.Fields(left[i]); len(f) > 1 {
				unix.Unmount(f[1], unix.MNT_DETACH)
			}
		}
	})
}

// Kernel mode end to end: `dfnydus mount --fs-driver erofs` of a Debian tree built by our
// builder, of the real nydus v6 fixtures, a killed daemon, a lying source, auto on v5.
func TestKernelMode(t *testing.T) {
	requireKernelMode(t)
	dir := testenv.TempDir(t)
	detachAllUnder(t, dir)
	tree := testenv.Rootfs(t)
	want := testenv.Snapshot(t, tree)
	img := buildLocal(t, dir, tree, 6)
	mp := filepath.Join(dir, "mnt")
	cache := filepath.Join(dir, "cache")

	t.Run("the mounted tree equals the source, served by the kernel's EROFS", func(t *testing.T) {
		m := startMount(t, cache, mp, append([]string{"--fs-driver", "erofs", "--prefetch", "off"}, img.args()...)...)
		if typ := fsTypeAt(t, mp); typ != "erofs" {
			t.Fatalf("mount type %q, want erofs", typ)
		}
		testenv.AssertSameTree(t, want, testenv.Snapshot(t, mp))
		s := m.stat(t)
		if s.ChunksCached == 0 || s.ReadErrors != 0 {
			t.Errorf("stat after reading everything: %d chunks cached, %d read errors", s.ChunksCached, s.ReadErrors)
		}
		if metrics := scrape(t, m); !strings.Contains(metrics, "dfnydus_mounts") {
			t.Error("the mount's API serves no metrics")
		}
		m.stop(t)
		if left := mountsUnder(dir); len(left) != 0 {
			t.Errorf("mounts left after umount: %q", left)
		}
	})

	t.Run("kill -9 mid-read: no reader gets wrong bytes, reads fail, the next start cleans up", func(t *testing.T) {
		kcache := filepath.Join(dir, "cache-kill")
		m := startMount(t, kcache, mp, append([]string{"--fs-driver", "erofs", "--prefetch", "off", "--memory-cache", "0"}, img.args()...)...)
		files := regularFiles(want)
		before, after := files[:len(files)/2], files[len(files)/2:]
		r := &readers{tree: tree, mp: mp}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := g; ; i = (i + 4) % len(before) {
					select {
					case <-stop:
						return
					default:
					}
					r.read(before[i])
				}
			}()
		}
		// Readers under way (a loaded machine may need more than a moment for their first reads).
		for deadline := time.Now().Add(30 * time.Second); r.ok.Load() < 8 && time.Now().Before(deadline); {
			time.Sleep(50 * time.Millisecond)
		}
		okBefore := r.ok.Load()
		m.kill9(t)
		time.Sleep(300 * time.Millisecond)
		close(stop)
		if !waitTimeout(&wg, 20*time.Second) {
			t.Fatal("readers hung after the daemon was killed")
		}
		failedAfterKill := r.failed.Load()
		// Files nobody read before the kill: their data is in no page cache.
		for _, p := range after[:min(len(after), 50)] {
			r.read(p)
		}
		t.Logf("%d reads ok before the kill, %d ok in all, %d failed (%d while readers ran); last error: %v",
			okBefore, r.ok.Load(), r.failed.Load(), failedAfterKill, r.lastErr.Load())
		if n := r.wrong.Load(); n != 0 {
			t.Fatalf("%d reads returned bytes that differ from the image (first: %s)", n, r.firstWrong.Load())
		}
		if okBefore == 0 {
			t.Error("no read succeeded before the kill")
		}
		if r.failed.Load() == 0 {
			t.Error("no read failed after the daemon was killed")
		}
		if fsTypeAt(t, mp) != "erofs" {
			t.Fatalf("the killed daemon's EROFS mount is not at %s any more: nothing to clean up", mp)
		}
		m2 := startMount(t, kcache, mp, append([]string{"--fs-driver", "erofs", "--prefetch", "off"}, img.args()...)...)
		if !strings.Contains(m2.log(), "killed process") {
			t.Errorf("the new mount did not say it cleared the stale mounts:\n%s", m2.log())
		}
		if views := grepLines(mountsUnder(dir), "dfnydus-view"); len(views) != 1 {
			t.Errorf("view mounts after the restart: %q, want the new one only", views)
		}
		testenv.AssertSameTree(t, want, testenv.Snapshot(t, mp))
		m2.stop(t)
		if left := mountsUnder(dir); len(left) != 0 {
			t.Errorf("mounts left after umount: %q", left)
		}
	})

	t.Run("a source serving wrong bytes gives EIO, never wrong data", func(t *testing.T) {
		bad := filepath.Join(dir, "bad-blobs")
		testenv.MustExec(t, "cp", "-a", img.blobs, bad)
		flipEveryChunk(t, img.boot, bad)
		m := startMount(t, filepath.Join(dir, "cache-bad"), mp, "--fs-driver", "erofs", "--prefetch", "off", "--source-retries", "1",
			"--bootstrap", img.boot, "--blob-dir", bad)
		data, err := os.ReadFile(filepath.Join(mp, "usr/lib/os-release"))
		if !errors.Is(err, syscall_EIO) {
			t.Errorf("read through a lying source: %v (%d bytes), want EIO", err, len(data))
		}
		m.stop(t)
		if !strings.Contains(m.log(), "failed verification") {
			t.Errorf("no clear log of the verification failure:\n%s", m.log())
		}
	})

	t.Run("auto on a v5 image uses FUSE and says why", func(t *testing.T) {
		small := filepath.Join(tree, "etc")
		v5 := buildLocal(t, dir, small, 5)
		m := startMount(t, filepath.Join(dir, "cache-v5"), mp, append([]string{"--fs-driver", "auto", "--prefetch", "off"}, v5.args()...)...)
		if typ := fsTypeAt(t, mp); typ != "fuse.rafs" {
			t.Errorf("mount type %q, want fuse.rafs", typ)
		}
		lines := grepLines(strings.Split(m.log(), "\n"), "why_not_erofs")
		if len(lines) != 1 || !strings.Contains(lines[0], "RAFS v5") {
			t.Errorf("want one log line saying why not EROFS (RAFS v5), have %q", lines)
		}
		testenv.AssertSameTree(t, testenv.Snapshot(t, small), testenv.Snapshot(t, mp))
		m.stop(t)
		r := testenv.Run(t, append([]string{"mount", "--foreground", "--fs-driver", "erofs", "--cache-dir", filepath.Join(dir, "cache-v5")}, append(v5.args(), mp)...)...)
		if r.Err == nil || !strings.Contains(r.Stderr, "RAFS v5") {
			t.Errorf("--fs-driver erofs of a v5 image: %v\n%s", r.Err, r.Stderr)
		}
	})
}

// The real nydus v6 images (made by upstream's nydus-image) through the kernel's EROFS: the tree
// equals what unpack writes.
func TestKernelModeFixtures(t *testing.T) {
	requireKernelMode(t)
	dir := testenv.TempDir(t)
	detachAllUnder(t, dir)
	fx := testenv.Fixtures()
	for _, tc := range []struct{ name, boot, blobs string }{
		{"v6 zstd blake3", filepath.Join(fx, "v6-zstd-blake3", "rafs-v6-2.2.boot"), filepath.Join(fx, "v6-zstd-blake3")},
		{"v6 blob with inlined bootstrap", filepath.Join(fx, "v6-inlined-bootstrap", "2fa78cad554b75ac91a4a125ed148d0ddeb25efa4aaa8bd80e5dc292690a4dca"),
			filepath.Join(fx, "v6-inlined-bootstrap")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := os.Stat(tc.boot); err != nil {
				t.Skipf("fixture missing: %v", err)
			}
			name := strings.ReplaceAll(tc.name, " ", "-")
			out := filepath.Join(dir, name+"-unpacked")
			testenv.MustRun(t, "unpack", "--bootstrap", tc.boot, "--blob-dir", tc.blobs, "--output", out)
			mp := filepath.Join(dir, name+"-mnt")
			m := startMount(t, filepath.Join(dir, name+"-cache"), mp, "--fs-driver", "erofs", "--prefetch", "off",
				"--bootstrap", tc.boot, "--blob-dir", tc.blobs)
			if typ := fsTypeAt(t, mp); typ != "erofs" {
				t.Fatalf("mount type %q, want erofs", typ)
			}
			got := testenv.Snapshot(t, mp)
			if len(got) < 2 {
				t.Fatalf("mount shows %d entries", len(got))
			}
			testenv.AssertSameTree(t, testenv.Snapshot(t, out), got)
			m.stop(t)
		})
	}
}

// flipEveryChunk flips a byte in the middle of every chunk's stored bytes in the blobs of dir,
// behind the bootstrap's digests.
func flipEveryChunk(t *testing.T, boot, dir string) {
	t.Helper()
	_, img, err := bootstrap.Load(boot)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]*os.File{}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	n := 0
	flipped := map[string]bool{}
	_ = img.Walk(func(_ string, nd *rafs.Node) error {
		for _, c := range nd.Inode.Chunks {
			id := img.Blobs[c.BlobIndex].ID
			f := files[id]
			if f == nil {
				if f, err = os.OpenFile(filepath.Join(dir, id), os.O_RDWR, 0); err != nil {
					t.Fatal(err)
				}
				files[id] = f
			}
			off := int64(c.CompressedOffset) + int64(c.CompressedSize)/2
			if key := fmt.Sprint(id, off); flipped[key] {
				continue // a chunk shared by files: flipping it again would restore it
			} else {
				flipped[key] = true
			}
			b := []byte{0}
			f.ReadAt(b, off)
			b[0] ^= 0xff
			if _, err := f.WriteAt(b, off); err != nil {
				t.Fatal(err)
			}
			n++
		}
		return nil
	})
	if n == 0 {
		t.Fatal("no chunk to tamper with")
	}
}

// readers read files through the mount and compare every byte they get with the source tree.
type readers struct {
	tree, mp            string
	ok, failed, wrong   atomic.Int64
	lastErr, firstWrong atomic.Value
	mu                  sync.Mutex
	srcCache            map[string][]byte
}

func (r *readers) source(p string) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.srcCache == nil {
		r.srcCache = map[string][]byte{}
	}
	if b, ok := r.srcCache[p]; ok {
		return b
	}
	b, _ := os.ReadFile(filepath.Join(r.tree, p))
	r.srcCache[p] = b
	return b
}

// read reads p from the mount with its page cache dropped first, so the bytes come from the
// daemon when it is alive.
func (r *readers) read(p string) {
	f, err := os.Open(filepath.Join(r.mp, p))
	if err != nil {
		r.failed.Add(1)
		r.lastErr.Store(err.Error())
		return
	}
	defer f.Close()
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	got, err := io.ReadAll(f)
	if err != nil {
		r.failed.Add(1)
		r.lastErr.Store(err.Error())
		return
	}
	if !bytes.Equal(got, r.source(p)) {
		if r.wrong.Add(1) == 1 {
			r.firstWrong.Store(p)
		}
		return
	}
	r.ok.Add(1)
}

// regularFiles lists the snapshot's non-empty regular files, sorted.
func regularFiles(s map[string]fstree.Entry) []string {
	var out []string
	for p, e := range s {
		if e.Type == fstree.TypeFile && e.Size > 0 {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}

func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

func grepLines(lines []string, s string) []string {
	var out []string
	for _, l := range lines {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return out
}
