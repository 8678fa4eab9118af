package blobstore

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestBudgetEviction(t *testing.T) {
	o := testOptions(t)
	o.Budget = 4 * segSize
	s := openT(t, t.TempDir(), o)
	id := testID(10)
	b := mustBlob(t, s, id, 16*segSize)
	write := func(seg int64) error {
		return b.WriteVerified(seg*segSize, pattern(id, seg*segSize, segSize))
	}
	// Segment 0 stays hot through reads; segment 1 is pinned by an open stream.
	for seg := range int64(2) {
		if err := write(seg); err != nil {
			t.Fatal(err)
		}
	}
	rc, err := b.OpenRange(segSize, segSize)
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 4096)
	for seg := int64(2); seg < 12; seg++ {
		if err := b.ReadAt(p, 0); err != nil {
			t.Fatalf("hot segment evicted before writing segment %d: %v", seg, err)
		}
		if err := write(seg); err != nil {
			t.Fatal(err)
		}
		if st := s.Stats(); st.VerifiedBytes+st.PendingBytes > o.Budget {
			t.Fatalf("over budget: %+v", st)
		}
	}
	if !b.Verified(0, segSize) || !b.Verified(segSize, segSize) || !b.Verified(11*segSize, segSize) {
		t.Fatalf("wrong segments evicted: %v", b.Ranges())
	}
	if b.Verified(5*segSize, 1) {
		t.Fatalf("old segment kept: %v", b.Ranges())
	}
	got, err := io.ReadAll(rc)
	if err != nil || !bytes.Equal(got, pattern(id, segSize, segSize)) {
		t.Fatalf("pinned stream: %v", err)
	}
	rc.Close()
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	if st.DiskBytes > o.Budget+segSize {
		t.Fatalf("disk %d bytes for a budget of %d", st.DiskBytes, o.Budget)
	}
	if st.Evicted != 8*segSize {
		t.Fatalf("evicted %d bytes", st.Evicted)
	}
	checkFile(t, s, b, false)

	// Everything pinned: no room.
	var rcs []io.ReadCloser
	for _, r := range b.Ranges() {
		rc, err := b.OpenRange(r.Off, r.Len)
		if err != nil {
			t.Fatal(err)
		}
		rcs = append(rcs, rc)
	}
	if err := write(13); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("write with everything pinned: %v", err)
	}
	if err := b.WriteVerified(0, make([]byte, 5*segSize)); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("write bigger than the budget: %v", err)
	}
	for _, rc := range rcs {
		rc.Close()
	}
	if err := write(13); err != nil {
		t.Fatalf("write after unpinning: %v", err)
	}

	// The index follows evictions: a restart shows the same ranges.
	want := b.Ranges()
	s.Close()
	s2 := openT(t, s.Dir(), o)
	b2, _ := s2.Lookup(id)
	if got := b2.Ranges(); len(got) != len(want) || b2.VerifiedBytes() != b.VerifiedBytes() {
		t.Fatalf("after restart %v, want %v", got, want)
	}
	checkFile(t, s2, b2, false)
}

// TestReadEvictRace hammers reads against writes, evictions, drops and removals: a read that
// succeeds must return exactly the written bytes, never punched zeros or pending junk.
func TestReadEvictRace(t *testing.T) {
	o := testOptions(t)
	o.Sync = false
	o.Budget = 3 * segSize
	s := openT(t, t.TempDir(), o)
	ids := []string{testID(20), testID(21)}
	const size = 6 * segSize
	for _, id := range ids {
		mustBlob(t, s, id, size)
	}
	const piece = 64 << 10
	deadline := time.Now().Add(1500 * time.Millisecond)
	var wg sync.WaitGroup
	var good, missing atomic.Int64
	run := func(seed uint64, fn func(r *rand.Rand, b *Blob, id string)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, 2))
			for time.Now().Before(deadline) {
				id := ids[r.IntN(len(ids))]
				b, err := s.Blob(id, size)
				if err != nil {
					t.Error(err)
					return
				}
				fn(r, b, id)
			}
		}()
	}
	for w := range 2 {
		run(uint64(w), func(r *rand.Rand, b *Blob, id string) {
			off := r.Int64N(size/piece) * piece
			if r.IntN(4) == 0 {
				b.WritePending(off, junk(off, piece), "peer")
				if r.IntN(2) == 0 {
					b.DropPending(off, piece)
				}
				return
			}
			if err := b.WriteVerified(off, pattern(id, off, piece)); err != nil && !errors.Is(err, ErrMissing) && !errors.Is(err, ErrNoSpace) {
				t.Error(err)
			}
		})
	}
	for rd := range 3 {
		run(uint64(10+rd), func(r *rand.Rand, b *Blob, id string) {
			off := r.Int64N(size - piece)
			n := r.Int64N(piece) + 1
			p := make([]byte, n)
			var err error
			if r.IntN(3) == 0 {
				var rc io.ReadCloser
				if rc, err = b.OpenRange(off, n); err == nil {
					_, err = io.ReadFull(rc, p)
					rc.Close()
				}
			} else {
				err = b.ReadAt(p, off)
			}
			switch {
			case err == nil:
				if !bytes.Equal(p, pattern(id, off, int(n))) {
					t.Errorf("read [%d,+%d) of %s returned wrong bytes", off, n, id[:8])
				}
				good.Add(1)
			case errors.Is(err, ErrMissing):
				missing.Add(1)
			default:
				t.Error(err)
			}
		})
	}
	run(99, func(r *rand.Rand, b *Blob, id string) {
		time.Sleep(50 * time.Millisecond)
		if r.IntN(5) == 0 {
			if err := s.Remove(id); err != nil {
				t.Error(err)
			}
		}
	})
	wg.Wait()
	t.Logf("%d good reads, %d missing, %d bytes evicted", good.Load(), missing.Load(), s.Stats().Evicted)
	if good.Load() == 0 {
		t.Fatal("no read succeeded")
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if b, ok := s.Lookup(id); ok {
			checkFile(t, s, b, true)
		}
	}
}
