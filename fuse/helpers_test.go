package fuse

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	gofuse "github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"

	"github.com/dfnydus/dfnydus/internal/fstree"
	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/blob"
	"github.com/dfnydus/dfnydus/rafs/bootstrap"
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

// built is an image made by the real builder and decoded back from its bootstrap, as a mount
// would see it, with the directory holding its blobs.
type built struct {
	img     *rafs.Image
	blobDir string
}

// buildImage builds src with the real builder at the given fs-version and chunk size.
func buildImage(t testing.TB, src string, fsVersion int, chunkSize uint32) built {
	t.Helper()
	opts := builder.DefaultOptions()
	opts.FSVersion = fsVersion
	opts.ChunkSize = chunkSize
	blobDir := filepath.Join(t.TempDir(), "blobs")
	res, err := builder.Build(context.Background(), opts, blobDir, []builder.Layer{builder.PathLayer(src)})
	if err != nil {
		t.Fatalf("build v%d image of %s: %v", fsVersion, src, err)
	}
	img, err := bootstrap.Decode(res.Bootstrap)
	if err != nil {
		t.Fatalf("decode v%d bootstrap: %v", fsVersion, err)
	}
	return built{img: img, blobDir: blobDir}
}

// dirReader is a blob.Dir closed when the test ends.
func dirReader(t testing.TB, dir string) *blob.Dir {
	d := blob.NewDir(dir)
	t.Cleanup(func() { d.Close() })
	return d
}

// mountImage mounts img over r in a fresh directory and unmounts it when the test ends.
func mountImage(t testing.TB, img *rafs.Image, r rafs.ChunkReader, opts Options) (string, *Server) {
	t.Helper()
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	srv, err := Mount(mnt, img, r, opts)
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	return mnt, srv
}

// snapshot records a tree for comparison; the root's own mtime is the mountpoint's business.
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

// countingReader counts the chunks read through it, by chunk digest.
type countingReader struct {
	r rafs.ChunkReader

	mu     sync.Mutex
	chunks map[rafs.Digest]int
	total  atomic.Int64
}

func newCountingReader(r rafs.ChunkReader) *countingReader {
	return &countingReader{r: r, chunks: map[rafs.Digest]int{}}
}

// reads returns how often the chunk with digest d was read.
func (c *countingReader) reads(d rafs.Digest) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.chunks[d]
}

func (c *countingReader) ReadChunk(ctx context.Context, b *rafs.Blob, ch *rafs.Chunk, buf []byte) ([]byte, error) {
	c.total.Add(1)
	c.mu.Lock()
	c.chunks[ch.Digest]++
	c.mu.Unlock()
	return c.r.ReadChunk(ctx, b, ch, buf)
}

// errInjected is what failingReader returns.
var errInjected = errors.New("injected chunk failure")

// failingReader fails for the chunks whose digest is in bad and serves the rest from r.
type failingReader struct {
	r   rafs.ChunkReader
	bad map[rafs.Digest]bool
}

func (f *failingReader) ReadChunk(ctx context.Context, b *rafs.Blob, c *rafs.Chunk, buf []byte) ([]byte, error) {
	if f.bad[c.Digest] {
		return nil, errInjected
	}
	return f.r.ReadChunk(ctx, b, c, buf)
}

// memReader serves chunks from memory, keyed by digest: the data already in memory, as in the
// peer's chunk cache.
type memReader map[rafs.Digest][]byte

func (m memReader) ReadChunk(ctx context.Context, b *rafs.Blob, c *rafs.Chunk, buf []byte) ([]byte, error) {
	if d, ok := m[c.Digest]; ok {
		return d, nil
	}
	return nil, errors.New("chunk not in memory")
}

// loadAll reads every chunk of img into memory.
func loadAll(t testing.TB, img *rafs.Image, r rafs.ChunkReader) memReader {
	t.Helper()
	m := memReader{}
	err := img.Walk(func(p string, n *rafs.Node) error {
		for i := range n.Inode.Chunks {
			c := &n.Inode.Chunks[i]
			if _, ok := m[c.Digest]; ok {
				continue
			}
			data, err := r.ReadChunk(context.Background(), img.Blobs[c.BlobIndex], c, nil)
			if err != nil {
				return err
			}
			m[c.Digest] = data
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// mountNewRoot mounts img the way a caller of NewRoot does, with GoFuseOptions and SetReadAhead;
// tweaks, if any, change the go-fuse options first.
func mountNewRoot(t testing.TB, img *rafs.Image, r rafs.ChunkReader, tweaks ...func(*gofuse.Options)) string {
	t.Helper()
	mnt := filepath.Join(t.TempDir(), "mnt-newroot")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	opts := GoFuseOptions(DefaultOptions())
	for _, tweak := range tweaks {
		tweak(opts)
	}
	srv, err := gofuse.Mount(mnt, NewRoot(img, r, DefaultOptions()), opts)
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	if err := SetReadAhead(mnt, DefaultOptions().MaxReadAhead); err != nil {
		t.Fatal(err)
	}
	return mnt
}

// withoutRO leaves out the "ro" mount option, so that requests the kernel would refuse reach the
// filesystem.
func withoutRO(o *gofuse.Options) {
	var mo []string
	for _, opt := range o.MountOptions.Options {
		if opt != "ro" {
			mo = append(mo, opt)
		}
	}
	o.MountOptions.Options = mo
	o.MountOptions.DirectMountFlags &^= unix.MS_RDONLY
}
