package source

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestValidateBlobID(t *testing.T) {
	good := strings.Repeat("0123456789abcdef", 4)
	for _, tc := range []struct {
		name, id string
		ok       bool
	}{
		{"64 lowercase hex", good, true},
		{"all zeros", strings.Repeat("0", 64), true},
		{"empty", "", false},
		{"short", good[:63], false},
		{"long", good + "a", false},
		{"uppercase", strings.ToUpper(good), false},
		{"digest prefix", "sha256:" + good[:57], false},
		{"slash", good[:10] + "/" + good[11:], false},
		{"dot dot", "../" + good[3:], false},
		{"NUL", good[:63] + "\x00", false},
		{"non-ASCII", good[:62] + "é", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateBlobID(tc.id)
			if tc.ok != (err == nil) {
				t.Fatalf("ValidateBlobID(%q) = %v, want ok=%v", tc.id, err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidBlobID) {
				t.Fatalf("error %v does not wrap ErrInvalidBlobID", err)
			}
		})
	}
}

// bodyOf is a body that yields data and then err (io.EOF for a clean end).
type bodyOf struct {
	data   []byte
	err    error
	closed bool
}

func (b *bodyOf) Read(p []byte) (int, error) {
	if len(b.data) == 0 {
		return 0, b.err
	}
	n := copy(p, b.data)
	b.data = b.data[n:]
	return n, nil
}

func (b *bodyOf) Close() error { b.closed = true; return nil }

// The rangeReader holds every Source to "exactly n bytes or an error".
func TestRangeReaderContract(t *testing.T) {
	what := func() string { return "test: blob x bytes 0-9" }
	for _, tc := range []struct {
		name    string
		body    []byte
		bodyErr error
		n       int64
		want    string
		wantErr error
	}{
		{"exact", []byte("0123456789"), io.EOF, 10, "0123456789", nil},
		{"longer body is cut at n", []byte("0123456789abc"), io.EOF, 10, "0123456789", nil},
		{"shorter body is an error", []byte("01234"), io.EOF, 10, "01234", io.ErrUnexpectedEOF},
		{"empty body is an error", nil, io.EOF, 10, "", io.ErrUnexpectedEOF},
		{"body error is passed on", []byte("012"), errors.New("boom"), 10, "012", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := &bodyOf{data: tc.body, err: tc.bodyErr}
			r := newRangeReader(context.Background(), body, tc.n, what, nil)
			got, err := io.ReadAll(r)
			if string(got) != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
			switch {
			case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
				t.Errorf("err = %v, want %v", err, tc.wantErr)
			case tc.wantErr == nil && int64(len(got)) == tc.n && err != nil:
				t.Errorf("err = %v after all bytes", err)
			case int64(len(got)) < tc.n && err == nil:
				t.Errorf("%d of %d bytes and no error", len(got), tc.n)
			}
			if err != nil && !strings.Contains(err.Error(), "blob x") {
				t.Errorf("error %q does not say what was read", err)
			}
			noErr(t, r.Close())
			if !body.closed {
				t.Error("Close did not close the body")
			}
		})
	}
}

func TestRangeReaderStopsWhenContextIsDone(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	r := newRangeReader(ctx, &bodyOf{data: make([]byte, 100), err: io.EOF}, 100, func() string { return "x" }, nil)
	p := make([]byte, 10)
	_, err := r.Read(p)
	noErr(t, err)
	cancel()
	if _, err := r.Read(p); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if _, err := r.Read(p); !errors.Is(err, context.Canceled) {
		t.Fatalf("second read after cancel: err = %v, want the same sticky error", err)
	}
}

func TestLocalEdgeCases(t *testing.T) {
	dir := t.TempDir()
	data := []byte("some blob bytes")
	id := idOf(data)
	noErr(t, os.WriteFile(filepath.Join(dir, id), data, 0o644))
	dirID := idOf([]byte("a directory"))
	noErr(t, os.Mkdir(filepath.Join(dir, dirID), 0o755))
	ctx := context.Background()

	for _, tc := range []struct {
		name    string
		src     Source
		id      string
		off, n  int64
		wantErr error
	}{
		{"missing directory", NewLocal(filepath.Join(dir, "nope")), id, 0, 1, ErrNotFound},
		{"a directory is not a blob", NewLocal(dir), dirID, 0, 1, ErrNotFound},
		{"range past the end", NewLocal(dir), id, 10, 6, ErrRange},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.src.ReadRange(ctx, tc.id, tc.off, tc.n)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
		})
	}

	t.Run("a file truncated while read is a short, transient read", func(t *testing.T) {
		rc, err := NewLocal(dir).ReadRange(ctx, id, 0, int64(len(data)))
		noErr(t, err)
		defer rc.Close()
		noErr(t, os.Truncate(filepath.Join(dir, id), 4))
		_, err = io.ReadAll(rc)
		if !errors.Is(err, io.ErrUnexpectedEOF) || !Transient(err) {
			t.Fatalf("err = %v, want a transient io.ErrUnexpectedEOF", err)
		}
	})
}

func idOf(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

func noErr(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
