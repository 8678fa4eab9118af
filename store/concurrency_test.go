package store

import (
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/dfnydus/dfnydus/rafs"
)

// TestConcurrentUse runs Gets, Puts, Pins and evictions from many goroutines over a small set of
// chunks and a budget that holds a third of them; run it with -race. Every hit must return the
// right bytes, and afterwards memory, index and disk must agree.
func TestConcurrentUse(t *testing.T) {
	for _, verifyReads := range []bool{false, true} {
		t.Run(map[bool]string{false: "verify once", true: "verify every read"}[verifyReads], func(t *testing.T) {
			testConcurrentUse(t, verifyReads)
		})
	}
}

func testConcurrentUse(t *testing.T, verifyReads bool) {
	const (
		workers = 8
		ops     = 400
	)
	var pool []testChunk
	var total int64
	for i := range 48 {
		alg := rafs.DigestBlake3
		if i%3 == 0 {
			alg = rafs.DigestSHA256
		}
		c := newChunk(alg, uint64(i), 1024+i*311)
		pool = append(pool, c)
		total += int64(len(c.data))
	}
	opts := testOptions()
	opts.Budget = total / 3
	opts.Sync = false // many Puts; durability is what TestCrashSafety is for
	opts.VerifyReads = verifyReads
	s := openStore(t, t.TempDir(), opts)

	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 1))
			buf := make([]byte, 0, 64<<10)
			for range ops {
				c := pool[r.IntN(len(pool))]
				switch r.IntN(5) {
				case 0, 1:
					if err := s.Put(t.Context(), c.key, c.data); err != nil {
						t.Errorf("Put: %v", err)
					}
				case 2, 3:
					got, ok, err := s.Get(t.Context(), c.key, uint32(len(c.data)), buf)
					if err != nil {
						t.Errorf("Get: %v", err)
					} else if ok && string(got) != string(c.data) {
						t.Errorf("Get(%s) returned other bytes", c.key)
					}
				case 4:
					unpin := s.Pin(c.key)
					if err := s.Put(t.Context(), c.key, c.data); err != nil {
						t.Errorf("Put: %v", err)
					}
					if !s.Has(c.key) {
						t.Errorf("pinned chunk %s evicted", c.key)
					}
					unpin()
				}
			}
		})
	}
	wg.Wait()
	settle(t, s)
	st := s.Stats()
	t.Logf("%+v", st)
	if st.Bytes > opts.Budget {
		t.Errorf("%d bytes stored, budget %d", st.Bytes, opts.Budget)
	}
	if st.Repaired != 0 {
		t.Errorf("Repaired = %d; nothing was damaged", st.Repaired)
	}
	checkConsistent(t, s)
}
