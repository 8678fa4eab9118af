package kernelfs

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"go.uber.org/zap"

	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/blob"
)

// Reads of the view at any offset and size give exactly the bytes the view writer puts in a
// whole view file (which the kernel's EROFS mounts in the format tests), padding included.
func TestViewReadsMatchWrittenView(t *testing.T) {
	src := writeTree(t)
	b := buildV6(t, src, 16<<10)
	r := dirReader(t, b.blobDir)
	views, err := newViews(b.img)
	if err != nil {
		t.Fatal(err)
	}
	if len(views) != 1 {
		t.Fatalf("%d views, want 1", len(views))
	}
	v := views[0]
	f, err := os.Create(filepath.Join(t.TempDir(), "view"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunks := make([]rafs.Chunk, 0, len(v.chunks))
	for _, c := range v.chunks {
		chunks = append(chunks, *c)
	}
	if err := blob.WriteUncompressedView(f, r, v.blob, chunks); err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if uint64(len(want)) != v.size {
		t.Fatalf("view size %d, written view %d bytes", v.size, len(want))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 500 {
		off := rng.Int64N(int64(v.size) + 100)
		size := 1 + rng.IntN(300<<10)
		dest := bytes.Repeat([]byte{0xaa}, size) // stale bytes the read must overwrite
		n, err := v.readAt(context.Background(), r, dest, off)
		if err != nil {
			t.Fatalf("read [%d, +%d): %v", off, size, err)
		}
		exp := []byte{}
		if off < int64(len(want)) {
			exp = want[off:min(int(off)+size, len(want))]
		}
		if !bytes.Equal(dest[:n], exp) {
			t.Fatalf("read [%d, +%d): %d bytes differ from the written view (%d bytes)", off, size, n, len(exp))
		}
	}
}

// A view read the kernel interrupts (the reader got a signal: go-fuse cancels the request's
// context) still answers with the bytes: EROFS would turn an error into EIO for the page, failing
// a process for being signalled. The end of the mount still fails reads.
func TestViewReadIgnoresInterrupts(t *testing.T) {
	src := writeTree(t)
	b := buildV6(t, src, 16<<10)
	r := dirReader(t, b.blobDir)
	views, err := newViews(b.img)
	if err != nil {
		t.Fatal(err)
	}
	fs := newViewFS(views, r, nil)
	fs.log = zap.NewNop()
	f := &viewFile{fs: fs, v: views[0]}
	want := make([]byte, 64<<10)
	n, err := views[0].readAt(context.Background(), r, want, 0)
	if err != nil || n == 0 {
		t.Fatalf("reading the view directly: %d bytes, %v", n, err)
	}
	interrupted, cancel := context.WithCancel(context.Background())
	cancel()
	dest := make([]byte, len(want))
	res, errno := f.Read(interrupted, nil, dest, 0)
	if errno != 0 {
		t.Fatalf("interrupted read: %v, want the bytes", errno)
	}
	got, _ := res.Bytes(nil)
	if !bytes.Equal(got, want[:n]) {
		t.Errorf("interrupted read gave %d bytes that differ from the view's", len(got))
	}
	fs.stop()
	if _, errno := f.Read(context.Background(), nil, dest, 0); errno != syscall.EIO {
		t.Errorf("read after the mount's end: %v, want EIO", errno)
	}
}
