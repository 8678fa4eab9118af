package blobstore

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// envCrashDir makes the test binary a crash-test child that works on the named store directory.
const envCrashDir = "DFNYDUS_BLOBSTORE_CRASH_DIR"

func crashOptions() Options {
	o := DefaultOptions()
	o.Budget = 3 * segSize // small, so that evictions (index change, then punch) run all the time
	o.LockTimeout = 30 * time.Second
	return o
}

var crashIDs = []string{testID(30), testID(31), testID(32)}

func crashSize(id string) int64 { return 2*segSize + int64(id[0]) }

// TestCrashSafety SIGKILLs a child that writes verified and pending bytes, promotes, drops,
// evicts and removes at random instants, many times over the same directory. After each kill,
// Open must show only verified ranges whose bytes on disk are the written ones, and nothing else
// on disk (pending bytes punched).
func TestCrashSafety(t *testing.T) {
	if os.Getenv(envCrashDir) != "" {
		t.Skip("running as the crash-test child")
	}
	rounds := 20
	if testing.Short() {
		rounds = 6
	}
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	for round := range rounds {
		child := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		child.Env = append(os.Environ(), envCrashDir+"="+dir, fmt.Sprintf("DFNYDUS_BLOBSTORE_CRASH_SEED=%d", r.Uint64()))
		child.Stderr = os.Stderr
		if err := child.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(50+r.IntN(400)) * time.Millisecond)
		child.Process.Signal(syscall.SIGKILL)
		child.Wait()
		if child.ProcessState.Success() {
			t.Fatalf("round %d: the child exited by itself", round)
		}
		o := crashOptions()
		o.Log = nil
		s, err := Open(dir, o)
		if err != nil {
			t.Fatalf("round %d: Open after kill: %v", round, err)
		}
		var verified int64
		for _, info := range s.List() {
			b, _ := s.Lookup(info.ID)
			if info.PendingBytes != 0 {
				t.Fatalf("round %d: pending bytes after Open", round)
			}
			checkFile(t, s, b, false)
			verified += info.VerifiedBytes
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d: %d blobs, %d verified bytes intact", round, len(s.List()), verified)
	}
}

// TestCrashChild is the child of TestCrashSafety; it runs until killed.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(envCrashDir)
	if dir == "" {
		t.Skip("only run by TestCrashSafety")
	}
	var seed uint64
	fmt.Sscan(os.Getenv("DFNYDUS_BLOBSTORE_CRASH_SEED"), &seed)
	r := rand.New(rand.NewPCG(seed, 4))
	s, err := Open(dir, crashOptions())
	if err != nil {
		t.Fatal(err)
	}
	for {
		id := crashIDs[r.IntN(len(crashIDs))]
		size := crashSize(id)
		b, err := s.Blob(id, size)
		if err != nil {
			t.Fatal(err)
		}
		off := r.Int64N(size)
		n := min(size-off, r.Int64N(300<<10)+1)
		switch k := r.IntN(20); {
		case k < 10:
			err = b.WriteVerified(off, pattern(id, off, int(n)))
		case k < 13:
			err = b.WritePending(off, junk(off, int(n)), "junk")
		case k < 14:
			b.DropPending(off, n)
		case k < 16:
			// A straddling chunk: two pending halves, then promoted.
			if err = b.WritePending(off, pattern(id, off, int(n)), "a"); err == nil {
				if err = b.Promote(off, n, b.PendingGen()); err != nil && b.Covered(off, n) && !errors.Is(err, ErrChanged) {
					t.Fatalf("promote: %v", err)
				}
				err = nil
			}
		case k < 17:
			err = s.Flush()
		case k < 18:
			if r.IntN(4) == 0 {
				err = s.Remove(id)
			}
		default:
			err = b.ReadAt(make([]byte, n), off)
		}
		if err != nil && !isExpected(err) {
			t.Fatal(err)
		}
	}
}

func isExpected(err error) bool {
	return errorsIs(err, ErrMissing) || errorsIs(err, ErrNoSpace)
}
