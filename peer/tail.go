package peer

import (
	"errors"
	"fmt"

	"go.uber.org/zap"

	"github.com/dfnydus/dfnydus/blobstore"
	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/blob"
)

// maybeCheckTail verifies the blob's tail once its ToC is here (blob.VerifyTail): its pending
// bytes become verified without waiting for the whole blob. A tail that fails is dropped and its
// senders blamed, as a chunk's bytes are; one the ToC cannot vouch for waits for the whole-blob
// check.
func (b *Blob) maybeCheckTail() {
	b.mu.Lock()
	t := &b.tail
	if t.rec == nil || t.done || t.fails >= maxWholeFailures {
		b.mu.Unlock()
		return
	}
	if t.running {
		t.again = true
		b.mu.Unlock()
		return
	}
	t.running = true
	rec := t.rec
	b.mu.Unlock()
	// A few passes at most: bytes that keep arriving elsewhere in the blob do not hold this caller
	// (often a reader's fetch) here; the next bytes to arrive try again.
	for pass := 1; ; pass++ {
		b.checkTail(rec)
		b.mu.Lock()
		if !t.again || t.done || t.fails >= maxWholeFailures || pass == 4 {
			t.running, t.again = false, false
			b.mu.Unlock()
			return
		}
		t.again = false
		b.mu.Unlock()
	}
}

// checkTail runs one tail check if the ToC is here.
func (b *Blob) checkTail(rec *rafs.Blob) {
	toc := int64(rec.TOCSize)
	if toc <= 0 || toc > b.size || !b.sb.Covered(b.size-toc, toc) {
		return
	}
	gen := b.sb.PendingGen()
	start, err := blob.VerifyTail(storeReader{b.sb}, b.size, rec)
	if err != nil && b.sb.PendingGen() != gen {
		b.tailAgain() // bytes arrived while it was checked: check what is there now
		return
	}
	switch {
	case err == nil:
		for _, p := range b.sb.Pending() {
			off, end := max(p.Off, start), min(p.Off+p.Len, b.size)
			if off >= end {
				continue
			}
			if err := b.sb.Promote(off, end-off, gen); err != nil {
				if errors.Is(err, blobstore.ErrChanged) {
					b.tailAgain()
				} else {
					b.log.Warn("promote the verified tail", zap.Int64("offset", off), zap.Error(err))
				}
				return
			}
		}
		b.mu.Lock()
		b.tail.done = true
		b.mu.Unlock()
		b.log.Debug("blob tail verified against the bootstrap's ToC digest", zap.Int64("from", start))
	case errors.Is(err, blob.ErrTailUnverifiable):
		b.mu.Lock()
		b.tail.done = true
		b.mu.Unlock()
		b.log.Debug("blob tail waits for the whole-blob check", zap.Error(err))
	case errors.Is(err, rafs.ErrCorrupt):
		// Which of the tail's bytes lied is not known: every pending byte after the chunk data
		// goes (chunk bytes are verified on their own), and whoever sent them is blamed.
		from := b.chunkDataEnd()
		var blame []blobstore.PendingRange
		for _, p := range b.sb.Pending() {
			if p.Off+p.Len > from {
				blame = append(blame, p)
			}
		}
		origins := b.sb.DropPending(from, b.size-from)
		b.mu.Lock()
		b.tail.fails++
		b.tail.err = fmt.Errorf("blob %s: tail: %w", b.id, err)
		b.mu.Unlock()
		b.f.m.verifyFailed.WithLabelValues("peer").Inc()
		b.log.Warn("blob tail failed verification against the bootstrap's ToC digest: its bytes are dropped",
			zap.Strings("from", origins), zap.Error(err))
		for _, p := range blame {
			b.blamed([]string{p.Origin}, max(p.Off, from), p.Off+p.Len-max(p.Off, from))
		}
	default:
		// Some of the tail is not here yet: the next bytes to arrive try again.
	}
}

// tailAgain asks the running tail check for one more pass.
func (b *Blob) tailAgain() {
	b.mu.Lock()
	b.tail.again = true
	b.mu.Unlock()
}

// chunkDataEnd is where the last known chunk's bytes end.
func (b *Blob) chunkDataEnd() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	var end int64
	for i := range b.chunks {
		end = max(end, int64(b.chunks[i].CompressedOffset)+int64(b.chunks[i].CompressedSize))
	}
	return end
}

// storeReader reads a blob's bytes that are here, verified or pending.
type storeReader struct{ sb *blobstore.Blob }

func (r storeReader) ReadAt(p []byte, off int64) (int, error) {
	if err := r.sb.ReadAny(p, off); err != nil {
		return 0, err
	}
	return len(p), nil
}
