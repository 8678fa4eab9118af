package source_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/dfnydus/dfnydus/peer/source"
)

// Every Source implementation passes one suite: the contract of source.Source.
func TestSources(t *testing.T) {
	for _, tc := range []struct {
		name string
		make func(testing.TB) *backend
	}{
		{"local", localBackend},
		{"retrying+counting over local", wrappedBackend},
		{"registry", registryBackend},
		{"s3", s3Backend},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runSuite(t, tc.make(t))
		})
	}
}

// blobSize is not a multiple of any buffer size, so ends are exercised.
const blobSize = 3<<20 + 4567

func runSuite(t *testing.T, b *backend) {
	blob := randomBytes(1, blobSize)
	id := b.put(t, blob)
	small := []byte("a blob of a few bytes")
	smallID := b.put(t, small)
	size := int64(len(blob))

	t.Run("String is a bounded kind", func(t *testing.T) {
		if k := b.src.String(); k != "local" && k != "registry" && k != "s3" {
			t.Errorf("String() = %q, want local, registry or s3", k)
		}
	})

	t.Run("ranges read exactly the bytes asked for", func(t *testing.T) {
		for _, tc := range []struct {
			name   string
			off, n int64
		}{
			{"start", 0, 4096},
			{"middle", 1<<20 + 17, 300_001},
			{"end", size - 5000, 5000},
			{"last byte", size - 1, 1},
			{"whole blob", 0, size},
			{"unaligned tail", 4097, size - 4097},
		} {
			t.Run(tc.name, func(t *testing.T) {
				got, err := readRange(ctxT(t), b.src, id, tc.off, tc.n)
				noErr(t, err)
				if want := blob[tc.off : tc.off+tc.n]; !bytes.Equal(got, want) {
					t.Fatalf("read %d bytes at %d: got %d bytes, not the blob's", tc.n, tc.off, len(got))
				}
			})
		}
		got, err := readRange(ctxT(t), b.src, smallID, 0, int64(len(small)))
		noErr(t, err)
		if !bytes.Equal(got, small) {
			t.Fatalf("small blob: got %q", got)
		}
	})

	t.Run("zero-length reads are empty and need no request", func(t *testing.T) {
		for _, off := range []int64{0, size / 2, size} {
			before := b.count()
			got, err := readRange(ctxT(t), b.src, id, off, 0)
			noErr(t, err)
			if len(got) != 0 {
				t.Errorf("n=0 at %d: got %d bytes", off, len(got))
			}
			if after := b.count(); after != before {
				t.Errorf("n=0 at %d: %d requests", off, after-before)
			}
		}
	})

	t.Run("ranges outside the blob fail with ErrRange", func(t *testing.T) {
		for _, tc := range []struct {
			name   string
			off, n int64
		}{
			{"runs past the end", size - 10, 20},
			{"starts at the end", size, 1},
			{"starts past the end", size + 4096, 10},
			{"far past the end", 1 << 40, 1},
			{"negative offset", -1, 10},
			{"negative length", 0, -1},
		} {
			t.Run(tc.name, func(t *testing.T) {
				got, err := readRange(ctxT(t), b.src, id, tc.off, tc.n)
				if !errors.Is(err, source.ErrRange) {
					t.Fatalf("err = %v (%d bytes), want ErrRange", err, len(got))
				}
				if errors.Is(err, source.ErrNotFound) {
					t.Errorf("err = %v also matches ErrNotFound", err)
				}
			})
		}
	})

	t.Run("a missing blob is ErrNotFound", func(t *testing.T) {
		missing := blobID([]byte("never stored"))
		_, err := readRange(ctxT(t), b.src, missing, 0, 100)
		if !errors.Is(err, source.ErrNotFound) {
			t.Fatalf("err = %v, want ErrNotFound", err)
		}
		if !strings.Contains(err.Error(), missing) {
			t.Errorf("error %q does not name the blob", err)
		}
	})

	t.Run("invalid blob ids are rejected before any I/O", func(t *testing.T) {
		upper := strings.ToUpper(id)
		for _, tc := range []struct {
			name, id string
			plant    string // for the local source: a file at this name exists
		}{
			{"empty", "", ""},
			{"uppercase hex", upper, upper},
			{"63 digits", id[:63], id[:63]},
			{"65 digits", id + "0", id + "0"},
			{"digest form", "sha256:" + id, ""},
			{"parent directory", "../" + id[:61], "../" + id[:61]},
			{"absolute path", "/" + id[:63], ""},
			{"subdirectory", id[:32] + "/" + id[33:], id[:32] + "/" + id[33:]},
			{"non-hex letters", "g" + id[1:], "g" + id[1:]},
			{"NUL byte", id[:63] + "\x00", ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if tc.plant != "" && b.plant != nil {
					b.plant(t, tc.plant, small)
				}
				before := b.count()
				_, err := readRange(ctxT(t), b.src, tc.id, 0, 4)
				if !errors.Is(err, source.ErrInvalidBlobID) {
					t.Fatalf("ReadRange(%q): err = %v, want ErrInvalidBlobID", tc.id, err)
				}
				if after := b.count(); after != before {
					t.Errorf("ReadRange(%q) sent %d requests", tc.id, after-before)
				}
			})
		}
	})

	t.Run("a cancelled context stops a read midway", func(t *testing.T) {
		ctx, cancel := context.WithCancel(ctxT(t))
		defer cancel()
		rc, err := b.src.ReadRange(ctx, id, 0, size)
		noErr(t, err)
		defer rc.Close()
		head := make([]byte, 64<<10)
		_, err = io.ReadFull(rc, head)
		noErr(t, err)
		cancel()
		n, err := io.Copy(io.Discard, rc)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("after cancel: read %d more bytes, err = %v, want context.Canceled", n, err)
		}
		if int64(len(head))+n >= size {
			t.Fatalf("after cancel: the whole blob was delivered")
		}
	})

	t.Run("a done context fails before any request", func(t *testing.T) {
		ctx, cancel := context.WithCancel(ctxT(t))
		cancel()
		before := b.count()
		_, err := readRange(ctx, b.src, id, 0, 10)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		if after := b.count(); after != before {
			t.Errorf("%d requests with a done context", after-before)
		}
	})

	t.Run("concurrent reads each get their bytes", func(t *testing.T) {
		const readers, each = 8, 12
		ctx := ctxT(t)
		errs := make(chan error, readers)
		var wg sync.WaitGroup
		for g := range readers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewPCG(uint64(g), 7))
				for range each {
					off := r.Int64N(size)
					n := 1 + r.Int64N(min(size-off, 512<<10))
					got, err := readRange(ctx, b.src, id, off, n)
					if err != nil {
						errs <- err
						return
					}
					if !bytes.Equal(got, blob[off:off+n]) {
						errs <- fmt.Errorf("reader %d: %d bytes at %d differ from the blob", g, n, off)
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
}

// count is b.requests() or 0 for sources without a server.
func (b *backend) count() int {
	if b.requests == nil {
		return 0
	}
	return b.requests()
}

// readRange reads a whole range; the error is ReadRange's or the reader's.
func readRange(ctx context.Context, src source.Source, id string, off, n int64) ([]byte, error) {
	rc, err := src.ReadRange(ctx, id, off, n)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err == nil && int64(len(data)) != n {
		return data, fmt.Errorf("contract broken: %d bytes and io.EOF for a %d-byte range", len(data), n)
	}
	return data, err
}
