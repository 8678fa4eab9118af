package kernelfs

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/dfnydus/dfnydus/rafs"
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

// tamper flips a byte in the middle of the stored bytes of the second chunk of the file at
// name, behind the bootstrap's digests.
func tamper(t *testing.T, b built, name string) {
	t.Helper()
	var c *rafs.Chunk
	_ = b.img.Walk(func(p string, n *rafs.Node) error {
		if p == name && len(n.Inode.Chunks) > 1 {
			c = &n.Inode.Chunks[1]
		}
		return nil
	})
	if c == nil {
		t.Fatalf("%s has no second chunk", name)
	}
	p := filepath.Join(b.blobDir, b.img.Blobs[c.BlobIndex].ID)
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	data[c.CompressedOffset+uint64(c.CompressedSize)/2] ^= 0x5a
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// A blob whose bytes do not match the bootstrap's digests gives EIO, never its bytes.
func TestWrongBytesGiveEIO(t *testing.T) {
	requireKernel(t)
	src := writeTree(t)
	b := buildV6(t, src, 64<<10)
	tamper(t, b, "/big")
	mnt, _ := mountKernel(t, b, dirReader(t, b.blobDir))
	want, err := os.ReadFile(filepath.Join(src, "big"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(mnt, "big"))
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("read of a file with a tampered chunk: %v (%d bytes, equal %v), want EIO", err, len(got), bytes.Equal(got, want))
	}
	// Reads that avoid the tampered chunk still succeed, byte for byte.
	f, err := os.Open(filepath.Join(mnt, "big"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	okChunks := 0
	for off := int64(0); off < int64(len(want)); off += 64 << 10 {
		n, err := f.ReadAt(buf, off)
		if err != nil && !errors.Is(err, io.EOF) {
			if !errors.Is(err, syscall.EIO) {
				t.Fatalf("read at %d: %v, want EIO or data", off, err)
			}
			continue
		}
		if !bytes.Equal(buf[:n], want[off:off+int64(n)]) {
			t.Fatalf("read at %d returned wrong bytes", off)
		}
		okChunks++
	}
	if okChunks == 0 {
		t.Error("no chunk of the file was readable: the tamper hit more than one chunk")
	}
}

// blockingReader blocks every chunk read until its context ends, after reporting it.
type blockingReader struct{ started chan struct{} }

func (r *blockingReader) ReadChunk(ctx context.Context, b *rafs.Blob, c *rafs.Chunk, buf []byte) ([]byte, error) {
	select {
	case r.started <- struct{}{}:
	default:
	}
	<-ctx.Done()
	return nil, ctx.Err()
}

// When the views' FUSE connection dies under a read (as when the daemon is killed), the read
// fails instead of returning zeros, later reads fail too, and Detach clears the mounts.
func TestDeadViewsFailReads(t *testing.T) {
	requireKernel(t)
	src := writeTree(t)
	b := buildV6(t, src, 64<<10)
	dir := t.TempDir()
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	r := &blockingReader{started: make(chan struct{}, 1)}
	s, err := Mount(mnt, filepath.Join(dir, "work"), b.img, b.raw, r, Options{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := os.ReadFile(filepath.Join(mnt, "big"))
		done <- err
	}()
	<-r.started
	detachFUSE(filepath.Join(dir, "work", viewDirName), zap.NewNop()) // what the kernel does when /dev/fuse closes
	if err := <-done; err == nil {
		t.Fatal("a read in flight when the views died succeeded")
	} else {
		t.Logf("read in flight: %v", err)
	}
	if data, err := os.ReadFile(filepath.Join(mnt, "d/e/f")); err == nil {
		t.Fatalf("a read after the views died returned %d bytes", len(data))
	} else {
		t.Logf("read after: %v", err)
	}
	// Metadata stays in the kernel: the tree still lists.
	if _, err := os.Stat(filepath.Join(mnt, "d/link")); err != nil {
		t.Errorf("stat after the views died: %v", err)
	}
	s.Detach()
	if m := mountsUnder(t, dir); len(m) != 0 {
		t.Errorf("mounts left: %q", m)
	}
}

// An unmount from outside (umount(8)) ends the mount: Wait returns, the views go, the work
// directory is removed.
func TestOutsideUnmount(t *testing.T) {
	requireKernel(t)
	b := buildV6(t, writeTree(t), 64<<10)
	dir := t.TempDir()
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := Mount(mnt, filepath.Join(dir, "work"), b.img, b.raw, dirReader(t, b.blobDir), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Unmount(mnt, 0); err != nil {
		t.Fatal(err)
	}
	s.Wait()
	if m := mountsUnder(t, dir); len(m) != 0 {
		t.Errorf("mounts left: %q", m)
	}
	if _, err := os.Stat(filepath.Join(dir, "work")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("work dir: %v, want it removed", err)
	}
	if err := s.Unmount(); err != nil {
		t.Errorf("Unmount after an outside unmount: %v", err)
	}
}

// A busy mount stays mounted and serving on Unmount (EBUSY); Detach takes it away.
func TestBusyUnmount(t *testing.T) {
	requireKernel(t)
	src := writeTree(t)
	b := buildV6(t, src, 64<<10)
	dir := t.TempDir()
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := Mount(mnt, filepath.Join(dir, "work"), b.img, b.raw, dirReader(t, b.blobDir), Options{})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(mnt, "big"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Unmount(); !errors.Is(err, unix.EBUSY) {
		t.Errorf("Unmount of a busy mount: %v, want EBUSY", err)
	}
	want, _ := os.ReadFile(filepath.Join(src, "big"))
	got, err := io.ReadAll(f)
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("read after a refused unmount: %v, equal %v", err, bytes.Equal(got, want))
	}
	s.Detach()
	f.Close()
	if m := mountsUnder(t, dir); len(m) != 0 {
		t.Errorf("mounts left: %q", m)
	}
}
