package store

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dfnydus/dfnydus/rafs"
)

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		alg  rafs.Digester
		size int
	}{
		{"blake3 4KiB", rafs.DigestBlake3, 4 << 10},
		{"sha256 4KiB", rafs.DigestSHA256, 4 << 10},
		{"blake3 1MiB", rafs.DigestBlake3, 1 << 20},
		{"sha256 1MiB", rafs.DigestSHA256, 1 << 20},
		{"blake3 one byte", rafs.DigestBlake3, 1},
		{"sha256 largest chunk", rafs.DigestSHA256, rafs.MaxChunkSize},
		{"blake3 odd size", rafs.DigestBlake3, 12345},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t, t.TempDir(), testOptions())
			c := newChunk(tc.alg, uint64(i), tc.size)
			if s.Has(c.key) {
				t.Fatal("Has before Put")
			}
			mustPut(t, s, c)
			if !s.Has(c.key) {
				t.Fatal("Has after Put = false")
			}
			wantHit(t, s, c) // first Get: hashes the file

			buf := make([]byte, 0, tc.size+10)
			got, ok, err := s.Get(t.Context(), c.key, uint32(tc.size), buf)
			if err != nil || !ok || string(got) != string(c.data) {
				t.Fatalf("Get into buf: hit %v err %v", ok, err)
			}
			if &got[0] != &buf[:1][0] {
				t.Error("Get did not use the caller's buffer although it had room")
			}
			if got, ok, err := s.Get(t.Context(), c.key, 0, nil); err != nil || !ok || len(got) != tc.size {
				t.Errorf("Get with size 0 (use the stored size) = %d bytes, hit %v, err %v", len(got), ok, err)
			}

			st := s.Stats()
			if st.Chunks != 1 || st.Bytes != int64(tc.size) || st.Hits != 3 || st.Misses != 0 || st.DiskBytes < st.Bytes {
				t.Errorf("Stats = %+v", st)
			}
			checkConsistent(t, s)
		})
	}
}

func TestGetAbsentIsMiss(t *testing.T) {
	s := openStore(t, t.TempDir(), testOptions())
	mustPut(t, s, newChunk(rafs.DigestBlake3, 1, 4096))
	for _, c := range []testChunk{newChunk(rafs.DigestBlake3, 2, 4096), newChunk(rafs.DigestSHA256, 1, 4096)} {
		wantMiss(t, s, c)
	}
	// The same digest under the other algorithm is another key.
	c := newChunk(rafs.DigestBlake3, 1, 4096)
	wantMiss(t, s, testChunk{key: Key{Alg: rafs.DigestSHA256, Digest: c.key.Digest}, data: c.data})
	if st := s.Stats(); st.Misses != 3 || st.Hits != 0 || st.Repaired != 0 {
		t.Errorf("Stats = %+v, want 3 misses", st)
	}
}

func TestSizeMismatchIsRepairedMiss(t *testing.T) {
	for _, delta := range []int{-1, +1} {
		s := openStore(t, t.TempDir(), testOptions())
		c := newChunk(rafs.DigestBlake3, 7, 8192)
		mustPut(t, s, c)
		got, ok, err := s.Get(t.Context(), c.key, uint32(len(c.data)+delta), nil)
		if err != nil || ok || got != nil {
			t.Fatalf("Get with size %+d = hit %v err %v, want a miss", delta, ok, err)
		}
		if s.Has(c.key) {
			t.Error("chunk still indexed after a size mismatch")
		}
		if _, err := os.Stat(s.path(c.key)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("chunk file still there: %v", err)
		}
		if st := s.Stats(); st.Repaired != 1 || st.Misses != 1 {
			t.Errorf("Stats = %+v, want 1 repaired miss", st)
		}
		mustPut(t, s, c)
		wantHit(t, s, c)
		checkConsistent(t, s)
	}
}

func TestInvalidArguments(t *testing.T) {
	s := openStore(t, t.TempDir(), testOptions())
	good := newChunk(rafs.DigestBlake3, 1, 4096)
	other := newChunk(rafs.DigestBlake3, 2, 4096)
	badAlg := Key{Alg: rafs.Digester(9), Digest: good.key.Digest}
	canceled, cancel := context.WithCancel(t.Context())
	cancel()

	tests := []struct {
		name string
		op   func() error
		want error
	}{
		{"put bytes of another chunk", func() error { return s.Put(t.Context(), good.key, other.data) }, rafs.ErrCorrupt},
		{"put under the other algorithm", func() error {
			return s.Put(t.Context(), Key{Alg: rafs.DigestSHA256, Digest: good.key.Digest}, good.data)
		}, rafs.ErrCorrupt},
		{"put empty chunk", func() error { return s.Put(t.Context(), KeyOf(rafs.DigestBlake3, nil), nil) }, ErrInvalid},
		{"put oversized chunk", func() error {
			d := make([]byte, rafs.MaxChunkSize+1)
			return s.Put(t.Context(), KeyOf(rafs.DigestBlake3, d), d)
		}, ErrInvalid},
		{"put unknown algorithm", func() error { return s.Put(t.Context(), badAlg, good.data) }, ErrInvalid},
		{"get unknown algorithm", func() error { _, _, err := s.Get(t.Context(), badAlg, 4096, nil); return err }, ErrInvalid},
		{"get oversized", func() error { _, _, err := s.Get(t.Context(), good.key, rafs.MaxChunkSize+1, nil); return err }, ErrInvalid},
		{"put canceled", func() error { return s.Put(canceled, good.key, good.data) }, context.Canceled},
		{"get canceled", func() error { _, _, err := s.Get(canceled, good.key, 4096, nil); return err }, context.Canceled},
		{"negative budget", func() error {
			o := testOptions()
			o.Budget = -1
			_, err := Open(t.TempDir(), o)
			return err
		}, ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.op(); !errors.Is(err, tc.want) {
				t.Errorf("error %v, want one wrapping %v", err, tc.want)
			}
		})
	}
	if st := s.Stats(); st.Chunks != 0 {
		t.Errorf("rejected Puts stored %d chunks", st.Chunks)
	}
	checkConsistent(t, s)
}

func TestPutIsIdempotent(t *testing.T) {
	s := openStore(t, t.TempDir(), testOptions())
	c := newChunk(rafs.DigestSHA256, 3, 64<<10)
	mustPut(t, s, c)
	mustPut(t, s, c) // the same chunk from a second image
	if st := s.Stats(); st.Chunks != 1 || st.Bytes != int64(len(c.data)) {
		t.Errorf("Stats = %+v, want one chunk", st)
	}
	checkConsistent(t, s)
}

func TestConcurrentPutOfOneKey(t *testing.T) {
	s := openStore(t, t.TempDir(), testOptions())
	c := newChunk(rafs.DigestBlake3, 4, 256<<10)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() { errs <- s.Put(t.Context(), c.key, c.data) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Put: %v", err)
		}
	}
	wantHit(t, s, c)
	if st := s.Stats(); st.Chunks != 1 {
		t.Errorf("Stats = %+v, want one chunk", st)
	}
	checkConsistent(t, s)
}

func TestClosedStore(t *testing.T) {
	s, err := Open(t.TempDir(), testOptions())
	if err != nil {
		t.Fatal(err)
	}
	c := newChunk(rafs.DigestBlake3, 5, 4096)
	mustPut(t, s, c)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, _, err := s.Get(t.Context(), c.key, 4096, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Get after Close: %v, want ErrClosed", err)
	}
	if err := s.Put(t.Context(), c.key, c.data); !errors.Is(err, ErrClosed) {
		t.Errorf("Put after Close: %v, want ErrClosed", err)
	}
	if s.Has(c.key) {
		t.Error("Has after Close = true")
	}
	s.Pin(c.key)() // harmless
}

func TestSecondOpenFails(t *testing.T) {
	dir := t.TempDir()
	first := openStore(t, dir, testOptions())
	o := testOptions()
	o.LockTimeout = 50 * time.Millisecond // the point is that Open gives up, not how fast
	second, err := Open(dir, o)
	if !errors.Is(err, ErrLocked) {
		if second != nil {
			second.Close()
		}
		t.Fatalf("second Open: %v, want an error wrapping ErrLocked", err)
	}
	if !strings.Contains(err.Error(), dir) {
		t.Errorf("error %q does not name the directory", err)
	}
	t.Logf("second Open: %v", err)
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	third := openStore(t, dir, o)
	third.Close()
}
