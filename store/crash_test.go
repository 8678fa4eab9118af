package store

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dfnydus/dfnydus/rafs"
	bolt "go.etcd.io/bbolt"
)

// envCrashDir makes the test binary a crash-test child that writes to the named store directory.
const envCrashDir = "DFNYDUS_STORE_CRASH_DIR"

// crashOptions are the options of the child; the parent opens with the same ones.
func crashOptions() Options {
	o := DefaultOptions()
	o.Budget = 96 * 8192 // small, so that evictions run all the time
	o.FlushInterval = 2 * time.Millisecond
	o.LockTimeout = 30 * time.Second
	return o
}

// TestCrashSafety kills a child process that Puts, Gets, pins and evicts chunks at random instants,
// many times over the same directory. After every kill, before any repair, every index entry must
// name an intact file; then Open must find nothing to drop, leave no temp or orphan files, and
// serve every indexed chunk.
func TestCrashSafety(t *testing.T) {
	if os.Getenv(envCrashDir) != "" {
		t.Skip("running as the crash-test child")
	}
	rounds := 30
	if testing.Short() {
		rounds = 8
	}
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0))
	most := 0
	for round := range rounds {
		child := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		child.Env = append(os.Environ(), envCrashDir+"="+dir)
		child.Stderr = os.Stderr
		if err := child.Start(); err != nil {
			t.Fatal(err)
		}
		stop := sync.OnceFunc(func() {
			child.Process.Signal(syscall.SIGKILL)
			child.Wait()
		})
		t.Cleanup(stop)
		// Sometimes during Open's recovery, mostly during the Put loop.
		time.Sleep(time.Duration(r.IntN(250)) * time.Millisecond)
		stop()
		if child.ProcessState.Success() {
			t.Fatalf("round %d: the child exited by itself", round)
		}

		n := checkIndexOnDisk(t, dir)
		s, err := Open(dir, crashOptions())
		if err != nil {
			t.Fatalf("round %d: Open after kill: %v", round, err)
		}
		// A kill between a Put and its eviction leaves the store over budget; Open evicts.
		if st := s.Stats(); st.Repaired != 0 || st.Chunks+int64(st.Evicted) != int64(n) {
			t.Errorf("round %d: Open found %+v, index had %d good entries", round, st, n)
		}
		checkConsistent(t, s)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d: killed after the child indexed %d chunks", round, n)
		most = max(most, n)
	}
	if most == 0 {
		t.Fatal("no child lived long enough to index a chunk; the test proved nothing")
	}
}

// checkIndexOnDisk reads the index a killed child left, before any Open can repair it, and checks
// that every entry names a file with exactly the indexed bytes. It returns the number of entries.
func checkIndexOnDisk(t *testing.T, dir string) int {
	t.Helper()
	if _, err := os.Stat(filepath.Join(dir, indexFile)); errors.Is(err, os.ErrNotExist) {
		return 0 // killed before it made one
	}
	db, err := bolt.Open(filepath.Join(dir, indexFile), 0o600, &bolt.Options{ReadOnly: true, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("opening the index a killed child left: %v", err)
	}
	defer db.Close()
	n := 0
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketChunks)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			r, err := decodeRecord(k, v)
			if err != nil {
				return err
			}
			n++
			data, err := os.ReadFile(filepath.Join(dir, r.key.relPath()))
			if err != nil {
				return fmt.Errorf("indexed chunk %s: %w", r.key, err)
			}
			if len(data) != int(r.size) || !r.key.matches(data) {
				return fmt.Errorf("indexed chunk %s (%d bytes): file holds %d bytes hashing to %s", r.key, r.size, len(data), KeyOf(r.key.Alg, data).Digest)
			}
			return nil
		})
	})
	if err != nil {
		t.Fatalf("index left by a killed child: %v", err)
	}
	return n
}

// TestCrashChild is the process TestCrashSafety kills: several goroutines Put new chunks, read and
// pin old ones, and so evict, until killed (or, should the parent vanish, for a minute).
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(envCrashDir)
	if dir == "" {
		t.Skip("helper process for TestCrashSafety")
	}
	s, err := Open(dir, crashOptions())
	if err != nil {
		t.Fatalf("child Open: %v", err)
	}
	deadline := time.Now().Add(time.Minute)
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(w)))
			var recent []testChunk
			for time.Now().Before(deadline) {
				alg := rafs.DigestBlake3
				if r.IntN(2) == 0 {
					alg = rafs.DigestSHA256
				}
				c := newChunk(alg, r.Uint64(), 1+r.IntN(16<<10))
				unpin := s.Pin(c.key)
				if err := s.Put(t.Context(), c.key, c.data); err != nil {
					t.Errorf("child Put: %v", err)
					return
				}
				unpin()
				recent = append(recent, c)
				if len(recent) > 32 {
					recent = recent[1:]
				}
				old := recent[r.IntN(len(recent))]
				if _, _, err := s.Get(t.Context(), old.key, uint32(len(old.data)), nil); err != nil {
					t.Errorf("child Get: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	s.Close()
}
