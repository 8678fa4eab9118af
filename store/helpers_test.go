package store

import (
	"encoding/binary"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dfnydus/dfnydus/rafs"
	bolt "go.etcd.io/bbolt"
)

// chunkData returns size pseudo-random bytes determined by seed.
func chunkData(seed uint64, size int) []byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	binary.LittleEndian.PutUint64(s[8:], uint64(size))
	b := make([]byte, size)
	rand.NewChaCha8(s).Read(b)
	return b
}

// testChunk is a chunk and its key.
type testChunk struct {
	key  Key
	data []byte
}

func newChunk(alg rafs.Digester, seed uint64, size int) testChunk {
	d := chunkData(seed, size)
	return testChunk{key: KeyOf(alg, d), data: d}
}

// testOptions are DefaultOptions with a short lock timeout, so that a test that leaks a Store fails
// fast instead of hanging.
func testOptions() Options {
	o := DefaultOptions()
	o.LockTimeout = 5 * time.Second
	return o
}

// openStore opens a Store in dir and closes it when the test ends.
func openStore(t testing.TB, dir string, opts Options) *Store {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func mustPut(t testing.TB, s *Store, c testChunk) {
	t.Helper()
	if err := s.Put(t.Context(), c.key, c.data); err != nil {
		t.Fatalf("Put(%s): %v", c.key, err)
	}
}

// wantHit asserts that Get returns c's bytes.
func wantHit(t testing.TB, s *Store, c testChunk) {
	t.Helper()
	got, ok, err := s.Get(t.Context(), c.key, uint32(len(c.data)), nil)
	if err != nil || !ok {
		t.Fatalf("Get(%s) = hit %v, err %v; want a hit", c.key, ok, err)
	}
	if string(got) != string(c.data) {
		t.Fatalf("Get(%s) returned other bytes", c.key)
	}
}

// wantMiss asserts that Get reports a miss.
func wantMiss(t testing.TB, s *Store, c testChunk) {
	t.Helper()
	got, ok, err := s.Get(t.Context(), c.key, uint32(len(c.data)), nil)
	if err != nil || ok || got != nil {
		t.Fatalf("Get(%s) = %d bytes, hit %v, err %v; want a miss", c.key, len(got), ok, err)
	}
}

// settle runs eviction to completion, as the background goroutine eventually would, and waits
// for its index commits and file removals.
func settle(t testing.TB, s *Store) {
	t.Helper()
	s.evict(true)
	if err := s.Flush(); err != nil {
		t.Fatalf("Flush: %v", err)
	}
}

// checkConsistent asserts that memory, index and disk agree: every entry has its index record and
// an intact file, there are no other chunk files, tmp/ is empty and the counters add up. The store
// must be quiescent.
func checkConsistent(t testing.TB, s *Store) {
	t.Helper()
	if err := s.Flush(); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	s.mu.Lock()
	mem := make(map[Key]uint32, len(s.entries))
	var bytes int64
	for k, e := range s.entries {
		mem[k] = e.size
		bytes += int64(e.size)
	}
	listed := 0
	for e := s.lru.front; e != nil; e = e.next {
		listed++
	}
	s.mu.Unlock()
	if listed != len(mem) {
		t.Errorf("LRU list has %d entries, map %d", listed, len(mem))
	}
	if st := s.Stats(); st.Chunks != int64(len(mem)) || st.Bytes != bytes {
		t.Errorf("Stats = %d chunks %d bytes; entries hold %d chunks %d bytes", st.Chunks, st.Bytes, len(mem), bytes)
	}

	idx := map[Key]uint32{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketChunks).ForEach(func(k, v []byte) error {
			r, err := decodeRecord(k, v)
			if err != nil {
				return err
			}
			idx[r.key] = r.size
			return nil
		})
	})
	if err != nil {
		t.Fatalf("reading index: %v", err)
	}
	if len(idx) != len(mem) {
		t.Errorf("index has %d entries, memory %d", len(idx), len(mem))
	}
	for k, size := range mem {
		if idx[k] != size {
			t.Errorf("%s: index size %d, memory %d", k, idx[k], size)
		}
	}
	checkFiles(t, s.dir, mem)
}

// checkFiles asserts that data/ holds exactly one intact file per chunk in want and tmp/ is empty.
func checkFiles(t testing.TB, dir string, want map[Key]uint32) {
	t.Helper()
	found := 0
	err := filepath.WalkDir(filepath.Join(dir, dataDir), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		k, err := parseFileName(d.Name())
		if err != nil {
			t.Errorf("stray file %s", p)
			return nil
		}
		size, ok := want[k]
		if !ok {
			t.Errorf("orphan chunk file %s", p)
			return nil
		}
		found++
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if len(b) != int(size) || !k.matches(b) {
			t.Errorf("chunk file %s: %d bytes that hash to %s; index says %d bytes of %s", p, len(b), KeyOf(k.Alg, b).Digest, size, k.Digest)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walking data: %v", err)
	}
	if found != len(want) {
		t.Errorf("%d chunk files for %d entries", found, len(want))
	}
	if ents, err := os.ReadDir(filepath.Join(dir, tmpDir)); err != nil || len(ents) != 0 {
		t.Errorf("tmp/ holds %d entries (err %v), want none", len(ents), err)
	}
}

// putSeed makes data unique to seed by overwriting its first 8 bytes.
func putSeed(data []byte, seed uint64) { binary.LittleEndian.PutUint64(data, seed) }

// atomicSeed hands out distinct seeds to parallel benchmark goroutines.
type atomicSeed struct{ n atomic.Uint64 }

func (a *atomicSeed) next() uint64 { return a.n.Add(1) }
