package unpack

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dfnydus/dfnydus/internal/fstree"
	"github.com/dfnydus/dfnydus/rafs"
	"golang.org/x/sys/unix"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates devices and sets owners and trusted.* xattrs")
	}
}

func TestToDirMaterialisesEveryFileType(t *testing.T) {
	requireRoot(t)
	img, src := buildModel(t, 4096, everyTypeSpecs()...)
	out := filepath.Join(t.TempDir(), "out") // absent: ToDir creates it
	if err := ToDir(context.Background(), img, src, out, Options{}); err != nil {
		t.Fatal(err)
	}
	got, err := fstree.Snapshot(out, fstree.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if d := fstree.Diff(expectTree(t, img, src), got); d != nil {
		t.Fatalf("unpacked tree differs from the model (a = model, b = disk):\n%s", strings.Join(d, "\n"))
	}
}

func TestToDirLeavesHolesSparse(t *testing.T) {
	requireRoot(t)
	img, src := buildModel(t, 4096, everyTypeSpecs()...)
	out := t.TempDir()
	if err := ToDir(context.Background(), img, src, out, Options{}); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(out, "bin/sparse"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Data at [0, 4K), hole at [4K, 12K), data at [12K, 16K+100), trailing hole to the end.
	hole, err := unix.Seek(int(f.Fd()), 0, unix.SEEK_HOLE)
	if err != nil {
		t.Fatal(err)
	}
	data, err := unix.Seek(int(f.Fd()), hole, unix.SEEK_DATA)
	if err != nil {
		t.Fatal(err)
	}
	if hole != 4096 || data != 3*4096 {
		t.Fatalf("first hole at %d, next data at %d; want a hole over [4096, 12288)", hole, data)
	}
}

func TestToDirOutputDirectoryRules(t *testing.T) {
	img, src := buildModel(t, 4096, spec{path: "/", mode: rafs.SIFDIR | 0o755})
	base := t.TempDir()
	nonEmpty := filepath.Join(base, "nonempty")
	if err := os.MkdirAll(filepath.Join(nonEmpty, "old"), 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(t.TempDir(), link); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, out, wantErr string
	}{
		{"absent, with absent parents", filepath.Join(base, "a/b/c"), ""},
		{"existing and empty", t.TempDir(), ""},
		{"not empty", nonEmpty, "not empty"},
		{"a regular file", file, "not a directory"},
		{"a symlink to a directory", link, "not a directory"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := ToDir(context.Background(), img, src, tc.out, Options{})
			if tc.wantErr == "" && err != nil {
				t.Fatalf("ToDir: %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("ToDir error = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
	if names, _ := os.ReadDir(nonEmpty); len(names) != 1 {
		t.Fatalf("the non-empty output was modified: %v", names)
	}
}

// slowReader serves chunks in random order with random delays and records the peak number of
// reads in flight.
type slowReader struct {
	*memReader
	inFlight, peak atomic.Int32
}

func (s *slowReader) ReadChunk(ctx context.Context, blob *rafs.Blob, c *rafs.Chunk, buf []byte) ([]byte, error) {
	n := s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	for {
		p := s.peak.Load()
		if n <= p || s.peak.CompareAndSwap(p, n) {
			break
		}
	}
	time.Sleep(time.Duration(rand.IntN(300)) * time.Microsecond)
	return s.memReader.ReadChunk(ctx, blob, c, buf)
}

func manyChunkSpecs() []spec {
	var b strings.Builder
	for i := range 300 * 512 { // 300 distinct 512-byte chunks
		b.WriteByte(byte('a' + i/512%26))
		b.WriteByte(byte(i))
	}
	return []spec{
		{path: "/", mode: rafs.SIFDIR | 0o755},
		{path: "/big", mode: rafs.SIFREG | 0o644, data: b.String()},
		{path: "/small", mode: rafs.SIFREG | 0o644, data: "x"},
		{path: "/z", mode: rafs.SIFREG | 0o644, data: b.String()[:5000]},
	}
}

func TestToDirReadsConcurrentlyButWritesInPlace(t *testing.T) {
	requireRoot(t)
	for _, conc := range []int{1, 3, 16} {
		img, mem := buildModel(t, 1024, manyChunkSpecs()...)
		src := &slowReader{memReader: mem}
		out := t.TempDir()
		if err := ToDir(context.Background(), img, src, out, Options{Concurrency: conc}); err != nil {
			t.Fatal(err)
		}
		got, err := fstree.Snapshot(out, fstree.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if d := fstree.Diff(expectTree(t, img, mem), got); d != nil {
			t.Fatalf("concurrency %d: %q", conc, d)
		}
		if p := src.peak.Load(); p > int32(conc) {
			t.Fatalf("concurrency %d: %d reads in flight at once", conc, p)
		}
		if conc > 1 && src.peak.Load() < 2 {
			t.Errorf("concurrency %d: reads never overlapped", conc)
		}
	}
}

func TestToDirHoleChunksAreNotRead(t *testing.T) {
	requireRoot(t)
	img, src := buildModel(t, 4096,
		spec{path: "/", mode: rafs.SIFDIR | 0o755},
		spec{path: "/f", mode: rafs.SIFREG | 0o644, data: "abc", size: 8192})
	f := img.Root.Child("f").Inode
	// A chunk flagged as a hole whose digest the reader does not have: reading it would fail.
	f.Chunks = append(f.Chunks, rafs.Chunk{Flags: rafs.ChunkHole, FileOffset: 4096, UncompressedSize: 4096, Digest: rafs.Digest{1}})
	out := t.TempDir()
	if err := ToDir(context.Background(), img, src, out, Options{}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(out, "f"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "abc" + strings.Repeat("\x00", 8189); string(got) != want {
		t.Fatalf("content %q..., want abc then zeros", got[:8])
	}
}

type failingReader struct{ err error }

func (f failingReader) ReadChunk(ctx context.Context, blob *rafs.Blob, c *rafs.Chunk, buf []byte) ([]byte, error) {
	return nil, f.err
}

type shortReader struct{}

func (shortReader) ReadChunk(ctx context.Context, blob *rafs.Blob, c *rafs.Chunk, buf []byte) ([]byte, error) {
	return buf[:len(buf)-1], nil
}

func TestToDirReportsChunkReaderFailures(t *testing.T) {
	requireRoot(t)
	img, _ := buildModel(t, 4096, spec{path: "/", mode: rafs.SIFDIR | 0o755},
		spec{path: "/d", mode: rafs.SIFDIR | 0o755}, spec{path: "/d/f", mode: rafs.SIFREG | 0o644, data: "data"})
	errBackend := errors.New("backend down")
	tests := []struct {
		name     string
		src      rafs.ChunkReader
		wantIs   error
		contains string
	}{
		{"reader error", failingReader{errBackend}, errBackend, "unpack /d/f: read chunk 0 (blob blob0"},
		{"short chunk", shortReader{}, rafs.ErrCorrupt, "read as 3 bytes, want 4"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for name, run := range map[string]func() error{
				"ToDir": func() error { return ToDir(context.Background(), img, tc.src, t.TempDir(), Options{}) },
				"ToTar": func() error { return ToTar(context.Background(), img, tc.src, discard{}, Options{}) },
			} {
				err := run()
				if !errors.Is(err, tc.wantIs) || !strings.Contains(err.Error(), tc.contains) {
					t.Errorf("%s error = %v, want %v containing %q", name, err, tc.wantIs, tc.contains)
				}
			}
		})
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// blockingReader returns nothing until its context is cancelled.
type blockingReader struct{ started chan struct{} }

func (b blockingReader) ReadChunk(ctx context.Context, blob *rafs.Blob, c *rafs.Chunk, buf []byte) ([]byte, error) {
	select {
	case b.started <- struct{}{}:
	default:
	}
	<-ctx.Done()
	return nil, ctx.Err()
}

func TestCancellationStopsPromptly(t *testing.T) {
	requireRoot(t)
	img, _ := buildModel(t, 1024, manyChunkSpecs()...)
	for name, run := range map[string]func(ctx context.Context, src rafs.ChunkReader) error{
		"ToDir": func(ctx context.Context, src rafs.ChunkReader) error {
			return ToDir(ctx, img, src, t.TempDir(), Options{})
		},
		"ToTar": func(ctx context.Context, src rafs.ChunkReader) error {
			return ToTar(ctx, img, src, discard{}, Options{})
		},
	} {
		t.Run(name, func(t *testing.T) {
			src := blockingReader{started: make(chan struct{}, 1)}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- run(ctx, src) }()
			<-src.started
			cancel()
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("error = %v, want context.Canceled", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("did not return after cancellation")
			}
		})
	}
}

func TestProgressCountsEntriesAndBytes(t *testing.T) {
	requireRoot(t)
	img, src := buildModel(t, 4096, everyTypeSpecs()...)
	var last Progress
	calls := 0
	opts := Options{Progress: func(p Progress) { last = p; calls++ }}
	if err := ToDir(context.Background(), img, src, t.TempDir(), opts); err != nil {
		t.Fatal(err)
	}
	want := Progress{Path: "/usr/sparse2", Entries: len(everyTypeSpecs()), Bytes: 7 + 4096 + 4096 + 100 + 19}
	if last != want || calls != want.Entries {
		t.Fatalf("last progress %+v after %d calls, want %+v after %d", last, calls, want, want.Entries)
	}
}
