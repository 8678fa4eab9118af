package blobstore

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"
)

func TestWriteReadMissing(t *testing.T) {
	s := openT(t, t.TempDir(), testOptions(t))
	id := testID(1)
	const size = 100_000
	b := mustBlob(t, s, id, size)
	if _, err := os.Stat(s.blobPath(id)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("file exists before the first write: %v", err)
	}
	for _, r := range []Range{{5000, 1000}, {0, 100}, {5500, 1000}, {99_000, 1000}} {
		if err := b.WriteVerified(r.Off, pattern(id, r.Off, int(r.Len))); err != nil {
			t.Fatal(err)
		}
	}
	wantRanges := []Range{{0, 100}, {5000, 1500}, {99_000, 1000}}
	if got := b.Ranges(); !slices.Equal(got, wantRanges) {
		t.Fatalf("Ranges = %v, want %v", got, wantRanges)
	}
	if got := b.VerifiedBytes(); got != 2600 {
		t.Fatalf("VerifiedBytes = %d", got)
	}
	tests := []struct {
		off, n   int64
		verified bool
		missing  []Range
	}{
		{0, 100, true, nil},
		{0, 101, false, []Range{{100, 1}}},
		{5000, 1500, true, nil},
		{4000, 3000, false, []Range{{4000, 1000}, {6500, 500}}},
		{0, size, false, []Range{{100, 4900}, {6500, 92_500}}},
		{99_500, 500, true, nil},
	}
	for _, tt := range tests {
		if got := b.Verified(tt.off, tt.n); got != tt.verified {
			t.Errorf("Verified(%d,%d) = %v", tt.off, tt.n, got)
		}
		if got := b.Missing(tt.off, tt.n); !slices.Equal(got, tt.missing) {
			t.Errorf("Missing(%d,%d) = %v, want %v", tt.off, tt.n, got, tt.missing)
		}
		p := make([]byte, tt.n)
		err := b.ReadAt(p, tt.off)
		if tt.verified {
			if err != nil || !bytes.Equal(p, pattern(id, tt.off, int(tt.n))) {
				t.Errorf("ReadAt(%d,%d): %v or wrong bytes", tt.off, tt.n, err)
			}
		} else if !errors.Is(err, ErrMissing) {
			t.Errorf("ReadAt(%d,%d) = %v, want ErrMissing", tt.off, tt.n, err)
		}
	}
	if err := b.ReadAt(make([]byte, 10), size-5); !errors.Is(err, ErrInvalid) {
		t.Errorf("read past the end: %v", err)
	}
	if err := b.WriteVerified(size-5, make([]byte, 10)); !errors.Is(err, ErrInvalid) {
		t.Errorf("write past the end: %v", err)
	}
	st := s.Stats()
	if st.VerifiedBytes != 2600 || st.Blobs != 1 || st.Hits == 0 || st.Misses == 0 || st.DiskBytes == 0 {
		t.Errorf("stats %+v", st)
	}
	if l := s.List(); len(l) != 1 || l[0] != (BlobInfo{id, size, 2600, 0}) {
		t.Errorf("List = %+v", l)
	}
	if got, ok := s.Lookup(id); !ok || got != b {
		t.Error("Lookup did not find the blob")
	}
}

func TestPendingPromoteDrop(t *testing.T) {
	s := openT(t, t.TempDir(), testOptions(t))
	id := testID(2)
	const size = 1 << 20
	b := mustBlob(t, s, id, size)
	ch, cancel := b.Subscribe()
	defer cancel()

	// A chunk [60000, 80000) straddles two pieces: the halves arrive as pending.
	if err := b.WritePending(60000, pattern(id, 60000, 10000), "peer-a"); err != nil {
		t.Fatal(err)
	}
	if err := b.WritePending(70000, pattern(id, 70000, 10000), "peer-b"); err != nil {
		t.Fatal(err)
	}
	if b.Verified(60000, 1) || len(b.Ranges()) != 0 {
		t.Fatal("pending bytes reported verified")
	}
	if err := b.ReadAt(make([]byte, 10), 60000); !errors.Is(err, ErrMissing) {
		t.Fatalf("ReadAt of pending bytes: %v", err)
	}
	if !b.Covered(60000, 20000) || b.Covered(59999, 2) {
		t.Fatal("Covered wrong")
	}
	p := make([]byte, 20000)
	if err := b.ReadAny(p, 60000); err != nil || !bytes.Equal(p, pattern(id, 60000, 20000)) {
		t.Fatalf("ReadAny: %v", err)
	}
	want := []PendingRange{{Range{60000, 10000}, "peer-a"}, {Range{70000, 10000}, "peer-b"}}
	if got := b.Pending(); !slices.Equal(got, want) {
		t.Fatalf("Pending = %v", got)
	}
	gen := b.PendingGen()
	if err := b.Promote(59000, 2000, gen); !errors.Is(err, ErrMissing) {
		t.Fatalf("Promote over unwritten bytes: %v", err)
	}
	select {
	case <-ch:
		t.Fatal("notified before anything was verified")
	default:
	}
	if err := b.WritePending(90000, pattern(id, 90000, 100), "peer-c"); err != nil {
		t.Fatal(err)
	}
	if err := b.Promote(60000, 10000, gen); err != nil {
		t.Fatalf("Promote after pending bytes elsewhere were written: %v", err)
	}
	b.DropPending(90000, 100)
	if err := b.WritePending(70000, pattern(id, 70000, 100), "peer-c"); err != nil {
		t.Fatal(err)
	}
	if err := b.Promote(60000, 20000, gen); !errors.Is(err, ErrChanged) {
		t.Fatalf("Promote after the pending bytes were written again: %v, want ErrChanged", err)
	}
	if err := b.Promote(60000, 20000, b.PendingGen()); err != nil {
		t.Fatal(err)
	}
	<-ch
	if !b.Verified(60000, 20000) || len(b.Pending()) != 0 {
		t.Fatalf("after Promote: ranges %v pending %v", b.Ranges(), b.Pending())
	}
	if err := b.ReadAt(p, 60000); err != nil || !bytes.Equal(p, pattern(id, 60000, 20000)) {
		t.Fatalf("ReadAt after Promote: %v", err)
	}

	// Pending over verified bytes leaves them verified and unchanged.
	if err := b.WritePending(50000, junk(50000, 20000), "peer-c"); err != nil {
		t.Fatal(err)
	}
	if err := b.ReadAt(p, 60000); err != nil || !bytes.Equal(p, pattern(id, 60000, 20000)) {
		t.Fatalf("verified bytes changed by a pending write: %v", err)
	}
	if got := b.Pending(); !slices.Equal(got, []PendingRange{{Range{50000, 10000}, "peer-c"}}) {
		t.Fatalf("Pending = %v", got)
	}
	// WriteVerified over pending converts them.
	if err := b.WriteVerified(55000, pattern(id, 55000, 5000)); err != nil {
		t.Fatal(err)
	}
	if got := b.Pending(); !slices.Equal(got, []PendingRange{{Range{50000, 5000}, "peer-c"}}) {
		t.Fatalf("Pending = %v", got)
	}
	st := s.Stats()
	if st.VerifiedBytes != 25000 || st.PendingBytes != 5000 {
		t.Fatalf("stats %+v", st)
	}

	// Drop: a failed chunk check. Pending bytes far from anything, so whole blocks get punched.
	if err := b.WritePending(400_000, junk(400_000, 100_000), "peer-d"); err != nil {
		t.Fatal(err)
	}
	if err := b.WritePending(500_000, junk(500_000, 100_000), "peer-e"); err != nil {
		t.Fatal(err)
	}
	before := dataRanges(t, s.blobPath(id))
	origins := b.DropPending(300_000, 400_000)
	slices.Sort(origins)
	if !slices.Equal(origins, []string{"peer-d", "peer-e"}) {
		t.Fatalf("origins %v", origins)
	}
	if err := b.ReadAny(make([]byte, 10), 450_000); !errors.Is(err, ErrMissing) {
		t.Fatalf("ReadAny of dropped bytes: %v", err)
	}
	after := dataRanges(t, s.blobPath(id))
	for _, r := range after {
		if r.Off < 600_000-4096 && r.End() > 400_000+4096 {
			t.Fatalf("dropped bytes still allocated: %v (before %v)", after, before)
		}
	}
	if got := b.DropPending(0, size); !slices.Equal(got, []string{"peer-c"}) {
		t.Fatalf("origins %v", got)
	}
	if s.Stats().PendingBytes != 0 {
		t.Fatal("pending bytes left")
	}
	checkFile(t, s, b, false)
}

func TestRestart(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	id, id2 := testID(3), testID(4)
	b := mustBlob(t, s, id, 3<<20)
	mustBlob(t, s, id2, 1000) // never written: nothing on disk, forgotten on restart
	for _, r := range []Range{{0, 4096}, {1 << 20, 100_000}, {3<<20 - 10, 10}} {
		if err := b.WriteVerified(r.Off, pattern(id, r.Off, int(r.Len))); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.WritePending(2<<20, junk(2<<20, 300_000), "source"); err != nil {
		t.Fatal(err)
	}
	want := b.Ranges()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.WriteVerified(0, pattern(id, 0, 10)); !errors.Is(err, ErrClosed) {
		t.Fatalf("write after Close: %v", err)
	}
	s = openT(t, dir, testOptions(t))
	b2, ok := s.Lookup(id)
	if !ok {
		t.Fatal("blob lost")
	}
	if got := b2.Ranges(); !slices.Equal(got, want) {
		t.Fatalf("Ranges after restart %v, want %v", got, want)
	}
	if len(b2.Pending()) != 0 || s.Stats().PendingBytes != 0 {
		t.Fatal("pending bytes survived a restart")
	}
	if _, ok := s.Lookup(id2); ok {
		t.Fatal("unwritten blob survived a restart")
	}
	checkFile(t, s, b2, false)
	if _, err := s.Blob(id, 12345); !errors.Is(err, ErrSizeMismatch) {
		t.Fatalf("size mismatch after restart: %v", err)
	}

	// Remove: index first, then the file; a new handle starts empty.
	if err := s.Remove(id); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.blobPath(id)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("file left after Remove: %v", err)
	}
	if err := b2.ReadAt(make([]byte, 10), 0); !errors.Is(err, ErrMissing) {
		t.Fatalf("read of a removed blob: %v", err)
	}
	b3 := mustBlob(t, s, id, 5000)
	if b3.VerifiedBytes() != 0 || s.Stats().VerifiedBytes != 0 {
		t.Fatal("new handle not empty")
	}
	if err := b3.WriteVerified(0, pattern(id, 0, 5000)); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openT(t, dir, testOptions(t))
	if b4, ok := s.Lookup(id); !ok || b4.Size() != 5000 || !b4.Verified(0, 5000) {
		t.Fatal("re-created blob not recovered")
	}
}

func TestInvalid(t *testing.T) {
	s := openT(t, t.TempDir(), testOptions(t))
	for _, tt := range []struct {
		id   string
		size int64
		want error
	}{
		{"abc", 10, ErrInvalid},
		{strings.ToUpper(testID(1)), 10, ErrInvalid},
		{testID(1)[:63] + "g", 10, ErrInvalid},
		{testID(1), 0, ErrInvalid},
		{testID(1), MaxBlobSize + 1, ErrInvalid},
		{testID(1), 10, nil},
		{testID(1), 11, ErrSizeMismatch},
	} {
		if _, err := s.Blob(tt.id, tt.size); !errors.Is(err, tt.want) {
			t.Errorf("Blob(%q, %d) = %v, want %v", tt.id, tt.size, err, tt.want)
		}
	}
	if _, err := Open(t.TempDir(), Options{Budget: -1}); !errors.Is(err, ErrInvalid) {
		t.Errorf("negative budget: %v", err)
	}
}

func TestLocked(t *testing.T) {
	dir := t.TempDir()
	openT(t, dir, testOptions(t))
	o := testOptions(t)
	o.LockTimeout = 50 * 1e6
	// bbolt's flock is per open file description, so a second Open in this process conflicts too.
	if _, err := Open(dir, o); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v", err)
	}
}

func TestOldFormatWiped(t *testing.T) {
	dir := t.TempDir()
	db, err := bolt.Open(filepath.Join(dir, indexFile), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error {
		m, _ := tx.CreateBucket([]byte("meta"))
		m.Put([]byte("format"), []byte{1})
		c, _ := tx.CreateBucket([]byte("chunks"))
		return c.Put([]byte("k"), []byte("v"))
	})
	db.Close()
	os.MkdirAll(filepath.Join(dir, "data", "ab"), 0o700)
	os.WriteFile(filepath.Join(dir, "data", "ab", "chunk"), []byte("x"), 0o600)
	os.MkdirAll(filepath.Join(dir, "tmp"), 0o700)

	s := openT(t, dir, testOptions(t))
	for _, name := range []string{"data", "tmp"} {
		if _, err := os.Stat(filepath.Join(dir, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s survived: %v", name, err)
		}
	}
	if len(s.List()) != 0 {
		t.Fatal("not empty")
	}
	b := mustBlob(t, s, testID(1), 10)
	if err := b.WriteVerified(0, pattern(testID(1), 0, 10)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openT(t, dir, testOptions(t))
	if len(s.List()) != 1 {
		t.Fatal("store not usable after the wipe")
	}
}

func TestRecoverJunk(t *testing.T) {
	dir := t.TempDir()
	s, _ := Open(dir, testOptions(t))
	id, id2 := testID(5), testID(6)
	b := mustBlob(t, s, id, 10000)
	b.WriteVerified(0, pattern(id, 0, 10000))
	b2 := mustBlob(t, s, id2, 10000)
	b2.WriteVerified(0, pattern(id2, 0, 10000))
	s.Close()
	orphan := filepath.Join(dir, blobsDir, testID(7)[:2], testID(7))
	os.MkdirAll(filepath.Dir(orphan), 0o700)
	os.WriteFile(orphan, []byte("orphan"), 0o600)
	os.WriteFile(filepath.Join(dir, "x.tmp"), nil, 0o600)
	os.Truncate(filepath.Join(dir, blobsDir, id2[:2], id2), 5000) // wrong size: dropped
	s = openT(t, dir, testOptions(t))
	if _, err := os.Stat(orphan); !errors.Is(err, os.ErrNotExist) {
		t.Error("orphan file kept")
	}
	if _, err := os.Stat(filepath.Join(dir, "x.tmp")); !errors.Is(err, os.ErrNotExist) {
		t.Error("junk kept")
	}
	if _, ok := s.Lookup(id2); ok {
		t.Error("blob with a truncated file kept")
	}
	if b, ok := s.Lookup(id); !ok || !b.Verified(0, 10000) {
		t.Error("intact blob lost")
	}
}

func TestOpenRange(t *testing.T) {
	s := openT(t, t.TempDir(), testOptions(t))
	id := testID(8)
	b := mustBlob(t, s, id, 5<<20)
	if err := b.WriteVerified(0, pattern(id, 0, 4<<20)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.OpenRange(3<<20, 2<<20); !errors.Is(err, ErrMissing) {
		t.Fatalf("OpenRange over missing bytes: %v", err)
	}
	rc, err := b.OpenRange(1000, 3<<20)
	if err != nil {
		t.Fatal(err)
	}
	if s.lru.m[segKey{b, 2}].pins != 1 {
		t.Fatal("segment not pinned")
	}
	got, err := io.ReadAll(rc)
	if err != nil || !bytes.Equal(got, pattern(id, 1000, 3<<20)) {
		t.Fatalf("OpenRange streamed %d bytes, %v", len(got), err)
	}
	rc.Close()
	rc.Close()
	for k, seg := range s.lru.m {
		if seg.pins != 0 {
			t.Fatalf("segment %d still pinned after Close", k.idx)
		}
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	o := testOptions(t)
	o.Metrics = reg
	o.Budget = 1 << 30
	s := openT(t, t.TempDir(), o)
	b := mustBlob(t, s, testID(9), 100)
	b.WriteVerified(0, pattern(testID(9), 0, 100))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	vals := map[string]float64{}
	for _, mf := range mfs {
		m := mf.GetMetric()[0]
		if m.Gauge != nil {
			vals[mf.GetName()] = m.Gauge.GetValue()
		} else {
			vals[mf.GetName()] = m.Counter.GetValue()
		}
	}
	if vals["dfnydus_blobstore_verified_bytes"] != 100 || vals["dfnydus_blobstore_budget_bytes"] != 1<<30 || vals["dfnydus_blobstore_writes_total"] != 1 {
		t.Fatalf("metrics %v", vals)
	}
	s.Close()
	if mfs, _ := reg.Gather(); len(mfs) != 0 {
		t.Fatal("metrics not unregistered")
	}
}
