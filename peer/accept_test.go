package peer

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/dfnydus/dfnydus/blobstore"
	"github.com/dfnydus/dfnydus/rafs"
)

// blobFixture is the test image's one blob: its bytes, its chunks, and the node's handle of it.
type blobFixture struct {
	data   []byte
	chunks []rafs.Chunk
	bl     *Blob
	st     *blobstore.Store
	f      *Fetcher
	im     *Image
}

func newBlobFixture(t *testing.T) *blobFixture {
	t.Helper()
	img, src, _ := testImage(t)
	f, st := newTestFetcher(t, 0)
	im := mustImage(t, f, img, src)
	b := img.Blobs[0]
	data, err := os.ReadFile(filepath.Join(src.dir, b.ID))
	if err != nil {
		t.Fatal(err)
	}
	bl := im.blobs[0]
	bl.mu.Lock()
	chunks := append([]rafs.Chunk(nil), bl.chunks...)
	bl.mu.Unlock()
	return &blobFixture{data: data, chunks: chunks, bl: bl, st: st, f: f, im: im}
}

// tailStart is where the blob's chunk data ends (its tail: tar headers, blob.meta, the ToC).
func (fx *blobFixture) tailStart(t *testing.T) int64 {
	t.Helper()
	last := fx.chunks[len(fx.chunks)-1]
	tail := int64(last.CompressedOffset) + int64(last.CompressedSize)
	if tail >= int64(len(fx.data)) {
		t.Fatal("the test blob has no tail")
	}
	return tail
}

func (fx *blobFixture) verified(t *testing.T) []blobstore.Range {
	t.Helper()
	return fx.bl.Store().Ranges()
}

// The one verification point, case by case.
func TestAccept(t *testing.T) {
	t.Run("chunks wholly inside are verified and kept, the rest waits", func(t *testing.T) {
		fx := newBlobFixture(t)
		c := fx.chunks[2]
		off := int64(c.CompressedOffset) - 100 // starts inside chunk 1
		end := int64(c.CompressedOffset) + int64(c.CompressedSize) + 100
		res, err := fx.bl.Accept(off, fx.data[off:end], OriginSource)
		if err != nil || res.Verified != 1 || len(res.Bad) != 0 {
			t.Fatalf("Accept = %+v, %v; want chunk 2 verified", res, err)
		}
		want := []blobstore.Range{{Off: int64(c.CompressedOffset), Len: int64(c.CompressedSize)}}
		if got := fx.verified(t); !equalRanges(got, want) {
			t.Errorf("verified %v, want %v", got, want)
		}
		if p := fx.bl.Store().Pending(); len(p) != 2 {
			t.Errorf("pending %v, want the two edges", p)
		}
	})
	t.Run("a chunk across two writes is verified when its second half arrives", func(t *testing.T) {
		fx := newBlobFixture(t)
		c := fx.chunks[3]
		mid := int64(c.CompressedOffset) + int64(c.CompressedSize)/2
		end := int64(c.CompressedOffset) + int64(c.CompressedSize)
		if _, err := fx.bl.Accept(int64(c.CompressedOffset), fx.data[c.CompressedOffset:mid], "peer-a"); err != nil {
			t.Fatal(err)
		}
		if fx.bl.Store().Verified(int64(c.CompressedOffset), int64(c.CompressedSize)) {
			t.Fatal("half a chunk counted as verified")
		}
		res, err := fx.bl.Accept(mid, fx.data[mid:end], "peer-b")
		if err != nil || res.Verified != 1 {
			t.Fatalf("second half: %+v, %v", res, err)
		}
		if !fx.bl.Store().Verified(int64(c.CompressedOffset), int64(c.CompressedSize)) {
			t.Error("the whole chunk is not verified")
		}
	})
	t.Run("a bad half is dropped and its sender named", func(t *testing.T) {
		fx := newBlobFixture(t)
		var blamed []string
		stop := fx.bl.OnBlame(func(origin string, off, n int64) { blamed = append(blamed, origin) })
		defer stop()
		c := fx.chunks[3]
		mid := int64(c.CompressedOffset) + int64(c.CompressedSize)/2
		end := int64(c.CompressedOffset) + int64(c.CompressedSize)
		bad := bytes.Clone(fx.data[c.CompressedOffset:mid])
		bad[1] ^= 0xff
		if _, err := fx.bl.Accept(int64(c.CompressedOffset), bad, "liar"); err != nil {
			t.Fatal(err)
		}
		res, err := fx.bl.Accept(mid, fx.data[mid:end], "honest")
		if err != nil || len(res.Bad) != 1 {
			t.Fatalf("Accept = %+v, %v; want the chunk reported bad", res, err)
		}
		if fx.bl.Store().Covered(int64(c.CompressedOffset), int64(c.CompressedSize)) {
			t.Error("bytes of a chunk that failed are still kept")
		}
		if len(blamed) == 0 {
			t.Error("nobody blamed")
		}
		// One refetch heals it.
		if res, err := fx.bl.Accept(int64(c.CompressedOffset), fx.data[c.CompressedOffset:end], OriginSource); err != nil || res.Verified != 1 {
			t.Errorf("refetch: %+v, %v", res, err)
		}
	})
	t.Run("wrong bytes are never kept", func(t *testing.T) {
		fx := newBlobFixture(t)
		c := fx.chunks[1]
		bad := bytes.Clone(fx.data[c.CompressedOffset : c.CompressedOffset+uint64(c.CompressedSize)])
		bad[len(bad)/2] ^= 1
		res, err := fx.bl.Accept(int64(c.CompressedOffset), bad, "liar")
		if err != nil || len(res.Bad) != 1 || res.Bad[0].Origins[0] != "liar" {
			t.Fatalf("Accept = %+v, %v", res, err)
		}
		if s := fx.st.Stats(); s.VerifiedBytes != 0 || s.PendingBytes != 0 {
			t.Errorf("store after a bad chunk: %+v", s)
		}
	})
	t.Run("bytes no chunk covers are verified once the whole blob is here", func(t *testing.T) {
		fx := newBlobFixture(t)
		size := int64(len(fx.data))
		half := size / 2
		if _, err := fx.bl.Accept(0, fx.data[:half], OriginSource); err != nil {
			t.Fatal(err)
		}
		if _, err := fx.bl.Accept(half, fx.data[half:], OriginSource); err != nil {
			t.Fatal(err)
		}
		if err := fx.bl.CheckWhole(context.Background()); err != nil {
			t.Fatal(err)
		}
		if !fx.bl.Store().Verified(0, size) {
			t.Errorf("the whole blob is not verified: %v", fx.verified(t))
		}
	})
	t.Run("a blob whose bytes do not hash to its id keeps nothing unverified", func(t *testing.T) {
		fx := newBlobFixture(t)
		size := int64(len(fx.data))
		last := fx.chunks[len(fx.chunks)-1]
		tail := int64(last.CompressedOffset) + int64(last.CompressedSize)
		if tail >= size {
			t.Skip("no bytes after the last chunk")
		}
		bad := bytes.Clone(fx.data)
		bad[size-2] ^= 0xff // in the ToC, which no chunk covers
		if _, err := fx.bl.Accept(0, bad, "liar"); err != nil {
			t.Fatal(err)
		}
		// The ToC no longer matches the bootstrap's digest: the tail check (or, for a blob
		// without one, the whole-blob check) drops it.
		err := fx.bl.CheckWhole(context.Background())
		if !errors.Is(err, ErrWholeBlob) && !errors.Is(err, rafs.ErrCorrupt) {
			t.Fatalf("CheckWhole = %v, want ErrWholeBlob or a corrupt tail", err)
		}
		if p := fx.bl.Store().Pending(); len(p) != 0 {
			t.Errorf("pending after a failed check: %v", p)
		}
		if !fx.bl.ChunksVerified() {
			t.Error("the chunks, which verified on their own, were dropped too")
		}
	})
	t.Run("the tail first, the chunks after: the check runs in the background and Drain waits for it", func(t *testing.T) {
		fx := newBlobFixture(t)
		size := int64(len(fx.data))
		last := fx.chunks[len(fx.chunks)-1]
		tail := int64(last.CompressedOffset) + int64(last.CompressedSize)
		if tail >= size {
			t.Skip("no bytes after the last chunk")
		}
		// As a mount does: the blob's tail (ToC, blob.meta) first, pending; then every chunk,
		// each verified on its own; the read that completes the blob settles it.
		if _, err := fx.bl.Accept(tail, fx.data[tail:], OriginSource); err != nil {
			t.Fatal(err)
		}
		for _, c := range fx.chunks {
			if _, err := fx.bl.Accept(int64(c.CompressedOffset), fx.data[c.CompressedOffset:c.CompressedOffset+uint64(c.CompressedSize)], OriginSource); err != nil {
				t.Fatal(err)
			}
		}
		fx.bl.Settle(0, size)
		if err := fx.f.Drain(context.Background()); err != nil {
			t.Fatal(err)
		}
		if !fx.bl.Store().Verified(0, size) {
			t.Errorf("after Drain the blob is not verified whole: verified %v, pending %v", fx.verified(t), fx.bl.Store().Pending())
		}
	})
	t.Run("the tail is verified as soon as it is here, before any chunk", func(t *testing.T) {
		fx := newBlobFixture(t)
		size := int64(len(fx.data))
		tail := fx.tailStart(t)
		if _, err := fx.bl.Accept(tail, fx.data[tail:], "peer-a"); err != nil {
			t.Fatal(err)
		}
		if !fx.bl.Store().Verified(tail, size-tail) {
			t.Errorf("tail [%d, %d) not verified: verified %v, pending %v", tail, size, fx.verified(t), fx.bl.Store().Pending())
		}
		if p := fx.bl.Store().Pending(); len(p) != 0 {
			t.Errorf("pending %v, want none", p)
		}
	})
	t.Run("a tail that arrives in pieces is verified when its last byte is here", func(t *testing.T) {
		fx := newBlobFixture(t)
		size := int64(len(fx.data))
		tail := fx.tailStart(t)
		mid := size - 700 // inside the ToC
		if _, err := fx.bl.Accept(mid, fx.data[mid:], "peer-a"); err != nil {
			t.Fatal(err)
		}
		if fx.bl.Store().Verified(mid, size-mid) {
			t.Fatal("part of a tail verified before the rest of it is here")
		}
		if _, err := fx.bl.Accept(tail, fx.data[tail:mid], "peer-b"); err != nil {
			t.Fatal(err)
		}
		if !fx.bl.Store().Verified(tail, size-tail) {
			t.Errorf("tail not verified once whole: pending %v", fx.bl.Store().Pending())
		}
	})
	t.Run("a lying tail is dropped and its sender blamed; the honest one heals it", func(t *testing.T) {
		for _, at := range []string{"blob.meta", "ToC"} {
			t.Run(at, func(t *testing.T) {
				fx := newBlobFixture(t)
				var blamed []string
				stop := fx.bl.OnBlame(func(origin string, off, n int64) { blamed = append(blamed, origin) })
				defer stop()
				size := int64(len(fx.data))
				tail := fx.tailStart(t)
				bad := bytes.Clone(fx.data[tail:])
				if at == "ToC" {
					bad[len(bad)-600] ^= 0xff
				} else {
					bad[512+16] ^= 0xff // past image.blob's tar header
				}
				if _, err := fx.bl.Accept(tail, bad, "liar"); err != nil {
					t.Fatal(err)
				}
				if fx.bl.Store().Covered(tail, size-tail) {
					t.Error("a tail that failed is still kept")
				}
				if len(blamed) == 0 || blamed[0] != "liar" {
					t.Errorf("blamed %v, want the liar", blamed)
				}
				if _, err := fx.bl.Accept(tail, fx.data[tail:], OriginSource); err != nil {
					t.Fatal(err)
				}
				if !fx.bl.Store().Verified(tail, size-tail) {
					t.Error("the honest tail is not verified")
				}
			})
		}
	})
	t.Run("outside the blob", func(t *testing.T) {
		fx := newBlobFixture(t)
		if _, err := fx.bl.Accept(int64(len(fx.data))-1, []byte{1, 2}, OriginSource); err == nil {
			t.Error("bytes past the end accepted")
		}
	})
}

// A chunk kept by an earlier process is hashed on its first read; one whose bytes rotted on disk
// is dropped and fetched again, never served.
func TestStoredChunkThatRottedIsFetchedAgain(t *testing.T) {
	img, src, files := testImage(t)
	dir := t.TempDir()
	open := func() (*Fetcher, *blobstore.Store, *Image) {
		st, err := blobstore.Open(dir, blobstore.DefaultOptions())
		if err != nil {
			t.Fatal(err)
		}
		f := NewFetcher(Options{Store: st})
		im, err := f.NewImage("t", img, src)
		if err != nil {
			t.Fatal(err)
		}
		return f, st, im
	}
	_, st, im := open()
	want := files["/d/e"]
	if got, err := readFile(t, im, img, "/d/e"); err != nil || !bytes.Equal(got, want) {
		t.Fatal(err)
	}
	im.Close()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	// Damage one stored chunk of /d/e.
	c := img.Lookup("/d/e").Inode.Chunks[2]
	path := filepath.Join(dir, "blobs", img.Blobs[0].ID[:2], img.Blobs[0].ID)
	fh, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fh.WriteAt([]byte{0xde, 0xad}, int64(c.CompressedOffset)+10); err != nil {
		t.Fatal(err)
	}
	fh.Close()
	f, st, im := open()
	defer st.Close()
	defer im.Close()
	before := src.requests.Load()
	got, err := readFile(t, im, img, "/d/e")
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read after damage: %v (equal %v)", err, bytes.Equal(got, want))
	}
	if src.requests.Load() == before {
		t.Error("the damaged chunk was not fetched again")
	}
	if f.repaired.Load() == 0 {
		t.Error("the repair is not counted")
	}
}

func equalRanges(a, b []blobstore.Range) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
