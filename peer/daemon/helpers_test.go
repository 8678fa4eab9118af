package daemon

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"

	"github.com/dfnydus/dfnydus/peer/source"
	"github.com/dfnydus/dfnydus/rafs/builder"
)

// requireFUSE skips tests that mount when this process cannot.
func requireFUSE(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no /dev/fuse: %v", err)
	}
}

// shortTempDir is a fresh directory with a short path: unix socket paths hold at most 107 bytes,
// and t.TempDir() paths carry the test's name.
func shortTempDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "dfd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// testConfig is the default config with the cache and control socket in a fresh directory.
func testConfig(t testing.TB) Config {
	dir := shortTempDir(t)
	c := DefaultConfig()
	c.CacheDir = filepath.Join(dir, "cache")
	c.ControlSocket = filepath.Join(dir, "control.sock")
	c.Source.Retries = 1
	return c
}

// newTestDaemon starts a daemon over cfg and closes it when the test ends.
func newTestDaemon(t testing.TB, cfg Config, opts Options) *Daemon {
	t.Helper()
	if opts.Log == nil {
		opts.Log = zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel))
	}
	d, err := New(context.Background(), cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(context.Background()); err != nil {
			t.Errorf("close daemon: %v", err)
		}
	})
	return d
}

// testImage is an image built by the real builder into a directory: its bootstrap file, its blob
// directory and the files it holds.
type testImage struct {
	bootstrap, blobDir string
	files              map[string][]byte // path in the image -> content
	blobIDs            []string
}

// buildTestImage builds a small tree of random (incompressible) files with 64 KiB chunks.
func buildTestImage(t testing.TB, seed uint64) testImage {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	files := map[string][]byte{}
	rng := rand.New(rand.NewPCG(seed, seed))
	for i, size := range []int{12, 5000, 300000, 1 << 20} {
		data := make([]byte, size)
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		name := filepath.Join("d", string(rune('a'+i)))
		if err := os.MkdirAll(filepath.Join(src, "d"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
		files[name] = data
	}
	opts := builder.DefaultOptions()
	opts.ChunkSize = 0x10000
	img := testImage{blobDir: filepath.Join(dir, "blobs"), bootstrap: filepath.Join(dir, "image.boot"), files: files}
	res, err := builder.Build(context.Background(), opts, img.blobDir, []builder.Layer{builder.PathLayer(src)})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img.bootstrap, res.Bootstrap, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, b := range res.Image.Blobs {
		img.blobIDs = append(img.blobIDs, b.ID)
	}
	return img
}

// request is a local-source mount request of img at mp.
func (img testImage) request(mp string) MountRequest {
	return MountRequest{Mountpoint: mp, Bootstrap: img.bootstrap, BlobDir: img.blobDir, Prefetch: "off"}
}

// checkFiles reads every file of img through the mount at mp.
func (img testImage) checkFiles(t testing.TB, mp string) {
	t.Helper()
	for name, want := range img.files {
		got, err := os.ReadFile(filepath.Join(mp, name))
		if err != nil {
			t.Fatalf("read %s through the mount: %v", name, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: read %d bytes that differ from the %d written", name, len(got), len(want))
		}
	}
}

// newMountpoint is a fresh empty directory.
func newMountpoint(t testing.TB) string {
	t.Helper()
	mp := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mp, 0o755); err != nil {
		t.Fatal(err)
	}
	// Cleanups run last first: this one runs before the directory is removed, and before a
	// daemon made earlier in the test is closed (which then sees the mount go).
	t.Cleanup(func() {
		if mounted(t, mp) {
			_ = unix.Unmount(mp, unix.MNT_DETACH)
		}
	})
	return mp
}

// mounted reports whether mp is in this process's mount table.
func mounted(t testing.TB, mp string) bool {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// Fields: id parent major:minor root mountpoint ...; octal escapes for spaces.
		if fields := strings.Fields(sc.Text()); len(fields) > 4 && fields[4] == mp {
			return true
		}
	}
	return false
}

// assertNothingLeft checks that the daemon has no trace of a mount at mp: no entry, no kernel
// mount, no API socket.
func assertNothingLeft(t testing.TB, d *Daemon, mp string) {
	t.Helper()
	for _, m := range d.List() {
		if m.Mountpoint == mp {
			t.Errorf("the daemon still lists %s", mp)
		}
	}
	if mounted(t, mp) {
		t.Errorf("%s is still mounted", mp)
	}
	d.mu.Lock()
	pending := d.pending[mp]
	d.mu.Unlock()
	if pending {
		t.Errorf("%s is still reserved", mp)
	}
	if _, err := os.Stat(filepath.Join(d.cfg.CacheDir, "run")); err == nil {
		if ents, _ := os.ReadDir(filepath.Join(d.cfg.CacheDir, "run")); len(ents) > 0 {
			t.Errorf("API sockets left behind: %v", ents)
		}
	}
}

// fakeDistributor records what the daemon attaches and reads through the back-to-source reader
// it is given, counting reads; it can fail Attach or run a hook during it.
type fakeDistributor struct {
	mu        sync.Mutex
	attached  []AttachedImage
	sources   []*p2pSource
	preheats  []PreheatRequest
	attachErr error
	onAttach  func() // runs inside Attach
}

func (f *fakeDistributor) Attach(_ context.Context, img AttachedImage) (source.Source, error) {
	if f.onAttach != nil {
		f.onAttach()
	}
	if f.attachErr != nil {
		return nil, f.attachErr
	}
	s := &p2pSource{inner: img.Source}
	f.mu.Lock()
	f.attached = append(f.attached, img)
	f.sources = append(f.sources, s)
	f.mu.Unlock()
	return s, nil
}

func (f *fakeDistributor) Preheat(_ context.Context, req PreheatRequest) error {
	f.mu.Lock()
	f.preheats = append(f.preheats, req)
	f.mu.Unlock()
	return nil
}

// p2pSource stands for the piece manager's source: it reads through the back-to-source reader.
type p2pSource struct {
	inner  source.Source
	reads  atomic.Int64
	closes atomic.Int64
}

func (s *p2pSource) ReadRange(ctx context.Context, id string, off, n int64) (io.ReadCloser, error) {
	if s.closes.Load() > 0 {
		return nil, errors.New("read after detach")
	}
	s.reads.Add(1)
	return s.inner.ReadRange(ctx, id, off, n)
}
func (s *p2pSource) String() string { return "p2p" }
func (s *p2pSource) Close() error   { s.closes.Add(1); return nil }
