package store

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/dfnydus/dfnydus/rafs"
	bolt "go.etcd.io/bbolt"
)

// damage functions change a stored chunk file the way a disk, a user or a bug might.
var (
	flipByte = func(t *testing.T, p string) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0x40
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	truncate = func(t *testing.T, p string) {
		if err := os.Truncate(p, 100); err != nil {
			t.Fatal(err)
		}
	}
	appendByte = func(t *testing.T, p string) {
		f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.Write([]byte{0})
		f.Close()
	}
	remove = func(t *testing.T, p string) {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	zeroFill = func(t *testing.T, p string) { // what a power loss without Sync can leave
		info, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, make([]byte, info.Size()), 0o600); err != nil {
			t.Fatal(err)
		}
	}
)

func TestDamagedChunkIsRepaired(t *testing.T) {
	tests := []struct {
		name        string
		damage      func(*testing.T, string)
		restart     bool // damage while closed, then Get from a fresh Store
		verifyReads bool // damage under a live Store that already served the chunk
	}{
		{"flipped byte, fresh store", flipByte, true, false},
		{"flipped byte, live store with VerifyReads", flipByte, false, true},
		{"zero-filled, fresh store", zeroFill, true, false},
		{"zero-filled, live store with VerifyReads", zeroFill, false, true},
		{"truncated, fresh store", truncate, true, false},
		{"truncated, live store", truncate, false, false},
		{"grown, live store", appendByte, false, false},
		{"deleted, fresh store", remove, true, false},
		{"deleted, live store", remove, false, false},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			opts := testOptions()
			opts.VerifyReads = tc.verifyReads
			s := openStore(t, dir, opts)
			victim := newChunk(rafs.DigestBlake3, uint64(i), 64<<10)
			bystander := newChunk(rafs.DigestSHA256, uint64(i), 64<<10)
			mustPut(t, s, victim)
			mustPut(t, s, bystander)
			wantHit(t, s, victim) // verified in this process from now on

			if tc.restart {
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				tc.damage(t, s.path(victim.key))
				s = openStore(t, dir, opts)
			} else {
				tc.damage(t, s.path(victim.key))
			}

			wantMiss(t, s, victim)
			if s.Has(victim.key) {
				t.Error("damaged chunk still indexed in memory")
			}
			if _, err := os.Stat(s.path(victim.key)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("damaged chunk file still there: %v", err)
			}
			if indexed(t, s, victim.key) {
				t.Error("damaged chunk still in the index")
			}
			if st := s.Stats(); st.Repaired != 1 {
				t.Errorf("Repaired = %d, want 1", st.Repaired)
			}
			wantHit(t, s, bystander)

			mustPut(t, s, victim) // the caller fetched it again
			wantHit(t, s, victim)
			checkConsistent(t, s)
		})
	}
}

// indexed reports whether k has a bbolt entry.
func indexed(t *testing.T, s *Store, k Key) bool {
	t.Helper()
	var found bool
	if err := s.db.View(func(tx *bolt.Tx) error {
		found = tx.Bucket(bucketChunks).Get(k.indexKey()) != nil
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return found
}

func TestReopenKeepsEverything(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, testOptions())
	var chunks []testChunk
	for i := range 40 {
		alg := rafs.DigestBlake3
		if i%2 == 1 {
			alg = rafs.DigestSHA256
		}
		c := newChunk(alg, uint64(i), 1+i*997)
		chunks = append(chunks, c)
		mustPut(t, s, c)
	}
	before := s.Stats()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dir, testOptions())
	after := s.Stats()
	if after.Chunks != before.Chunks || after.Bytes != before.Bytes || after.DiskBytes != before.DiskBytes {
		t.Errorf("after reopen %+v, before %+v", after, before)
	}
	for _, c := range chunks {
		wantHit(t, s, c)
	}
	checkConsistent(t, s)
}

func TestOpenCleansUp(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, testOptions())
	var chunks []testChunk
	for i := range 6 {
		c := newChunk(rafs.DigestBlake3, uint64(i), 8192)
		chunks = append(chunks, c)
		mustPut(t, s, c)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	truncate(t, s.path(chunks[0].key))
	remove(t, s.path(chunks[1].key))
	orphan := newChunk(rafs.DigestSHA256, 99, 4096) // renamed into place, killed before indexing
	writeFile(t, filepath.Join(dir, orphan.key.relPath()), orphan.data)
	writeFile(t, filepath.Join(dir, tmpDir, chunks[2].key.String()+".123"), chunks[2].data[:10]) // killed while writing
	writeFile(t, filepath.Join(dir, dataDir, "00", "junk"), []byte("x"))
	misplaced := newChunk(rafs.DigestBlake3, 98, 4096)
	writeFile(t, filepath.Join(dir, dataDir, "zz", misplaced.key.String()), misplaced.data)

	s = openStore(t, dir, testOptions())
	if st := s.Stats(); st.Chunks != 4 || st.Repaired != 2 {
		t.Errorf("Stats = %+v, want 4 chunks and 2 repaired", st)
	}
	for _, c := range chunks[:2] {
		wantMiss(t, s, c)
	}
	for _, c := range chunks[2:] {
		wantHit(t, s, c)
	}
	wantMiss(t, s, orphan)
	checkConsistent(t, s)
}

func TestOpenRefusesOtherIndexFormat(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, testOptions())
	s.Close()
	db, err := bolt.Open(filepath.Join(dir, indexFile), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(metaFormat, []byte{9, 0, 0, 0}) })
	db.Close()
	if s, err := Open(dir, testOptions()); err == nil {
		s.Close()
		t.Fatal("Open accepted an index of format 9")
	} else {
		t.Logf("Open: %v", err)
	}
}

func writeFile(t *testing.T, p string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
