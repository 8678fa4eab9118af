package fuse

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/dfnydus/dfnydus/rafs"
)

// blockingReader never delivers a chunk: each read blocks until its context ends, then reports
// how it ended.
type blockingReader struct {
	entered chan struct{}
	ended   chan error
}

func newBlockingReader() *blockingReader {
	return &blockingReader{entered: make(chan struct{}, 64), ended: make(chan error, 64)}
}

func (b *blockingReader) ReadChunk(ctx context.Context, _ *rafs.Blob, _ *rafs.Chunk, _ []byte) ([]byte, error) {
	select {
	case b.entered <- struct{}{}:
	default:
	}
	<-ctx.Done()
	select {
	case b.ended <- ctx.Err():
	default:
	}
	return nil, ctx.Err()
}

// hangGuard bounds waits that only a bug would make long, so a regression fails instead of
// hanging the test binary. It is not a performance threshold.
const hangGuard = 60 * time.Second

func (b *blockingReader) waitEntered(t *testing.T) {
	t.Helper()
	select {
	case <-b.entered:
	case <-time.After(hangGuard):
		t.Fatal("no chunk read reached the reader")
	}
}

func (b *blockingReader) waitEnded(t *testing.T) error {
	t.Helper()
	select {
	case err := <-b.ended:
		return err
	case <-time.After(hangGuard):
		t.Fatal("the blocked chunk read never saw its context end")
		return nil
	}
}

// A process killed while its read waits for a chunk cancels the chunk fetch. Direct I/O reads are
// synchronous FUSE requests, which the kernel interrupts when their caller dies. (The kernel's
// asynchronous readahead requests carry no interrupt; their fetches end with the fetch itself or
// at unmount, see the next test.)
func TestKillingTheReaderCancelsTheFetch(t *testing.T) {
	requireFUSE(t)
	img, _, _ := modelImage(1<<20, []modelChunk{{off: 0, size: 4096}})
	br := newBlockingReader()
	mnt, _ := mountImage(t, img, br, DefaultOptions())
	cmd := exec.Command("dd", "if="+filepath.Join(mnt, "f"), "of=/dev/null", "bs=4096", "count=1", "iflag=direct")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	br.waitEntered(t)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := br.waitEnded(t); !errors.Is(err, context.Canceled) {
		t.Errorf("fetch ended with %v, want context.Canceled", err)
	}
	_ = cmd.Wait()
}

// Unmounting while a reader is blocked in a read (the mount is busy: the reader holds the file
// open) cancels the fetch, fails the read, and completes once the reader lets go.
func TestUnmountCancelsBlockedReads(t *testing.T) {
	requireFUSE(t)
	img, _, _ := modelImage(1<<20, []modelChunk{{off: 0, size: 4096}})
	br := newBlockingReader()
	mnt, srv := mountImage(t, img, br, DefaultOptions())
	cmd := exec.Command("cat", filepath.Join(mnt, "f"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	br.waitEntered(t)
	unmounted := make(chan error, 1)
	go func() { unmounted <- srv.Unmount() }()
	if err := br.waitEnded(t); !errors.Is(err, context.Canceled) {
		t.Errorf("fetch ended with %v, want context.Canceled", err)
	}
	if err := cmd.Wait(); err == nil {
		t.Error("cat of a file whose chunk never arrived succeeded")
	}
	select {
	case err := <-unmounted:
		if err != nil {
			t.Errorf("unmount: %v", err)
		}
	case <-time.After(hangGuard):
		t.Fatal("unmount did not return")
	}
}
