package peer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"

	"go.uber.org/zap"

	"github.com/dfnydus/dfnydus/blobstore"
	"github.com/dfnydus/dfnydus/rafs"
)

// Origins of bytes, for blame. A peer's bytes are named by its peer id.
const OriginSource = "source"

// AcceptResult says what one Accept did.
type AcceptResult struct {
	// Verified counts the chunks this call verified (and kept).
	Verified int
	// Bad lists the chunks whose bytes failed their digest; nothing of them was kept.
	Bad []BadChunk
}

// BadChunk is a chunk whose bytes failed verification, and who sent them.
type BadChunk struct {
	Index   uint32
	Off     int64
	Size    int64
	Origins []string
	Err     error
}

// Accept is where bytes of the blob enter the node: data holds the blob's bytes [off,
// off+len(data)) as origin sent them. Every chunk lying wholly inside is checked against its digest
// and, if it matches, written to the store as verified and handed to readers waiting for it;
// a chunk that fails is reported in the result and nothing of it is kept. Bytes of chunks that
// straddle the edge of data, and bytes no chunk covers (tar headers, blob.meta, the ToC, or a whole
// blob no mounted image describes), are kept pending: never served, never persisted as held. A
// straddling chunk is checked as soon as all its bytes are here; uncovered bytes are checked against
// the blob's own digest (its id) once the whole blob is here. Chunks already verified are skipped
// without a look. The error is for bad arguments or a store that cannot write.
func (b *Blob) Accept(off int64, data []byte, origin string) (AcceptResult, error) {
	var res AcceptResult
	end := off + int64(len(data))
	if off < 0 || end > b.size {
		return res, fmt.Errorf("blob %s: accept [%d, %d) outside the blob's %d bytes", b.id, off, end, b.size)
	}
	if len(data) == 0 {
		return res, nil
	}
	b.mu.Lock()
	lo, hi := b.overlappingLocked(off, end)
	chunks := append([]rafs.Chunk(nil), b.chunks[lo:hi]...)
	b.mu.Unlock()

	type span struct{ off, end int64 }
	var verified []span // runs of verified chunk bytes to write
	type landing struct {
		off uint64
		fl  *flight
	}
	var delivered []landing // flights ended before their bytes are written (see landed)
	var pending []span
	var straddling []rafs.Chunk
	addRun := func(s *[]span, o, e int64) {
		if e <= o {
			return
		}
		if n := len(*s); n > 0 && (*s)[n-1].end == o {
			(*s)[n-1].end = e
			return
		}
		*s = append(*s, span{o, e})
	}
	cursor := off
	for i := range chunks {
		c := &chunks[i]
		co, ce := int64(c.CompressedOffset), int64(c.CompressedOffset)+int64(c.CompressedSize)
		if co > cursor {
			addRun(&pending, cursor, co)
		}
		cursor = max(cursor, ce)
		if co < off || ce > end {
			if !b.sb.Verified(co, ce-co) {
				addRun(&pending, max(co, off), min(ce, end))
				straddling = append(straddling, *c)
			}
			continue
		}
		if b.sb.Verified(co, ce-co) {
			continue
		}
		// Most chunks that enter the node have no reader waiting (prefetch, the rest of a piece):
		// their data is only hashed, so it is decoded into scratch memory that is reused.
		var scratch *[]byte
		if len(b.Awaited(co, ce-co)) == 0 {
			scratch = decodeScratch.Get().(*[]byte)
		}
		var buf []byte
		if scratch != nil {
			buf = *scratch
		}
		out, err := b.decode(data[co-off:ce-off], c, buf, true)
		if err != nil {
			if scratch != nil {
				decodeScratch.Put(scratch)
			}
			b.f.m.verifyFailed.WithLabelValues(originKind(origin)).Inc()
			res.Bad = append(res.Bad, BadChunk{Index: c.Index, Off: co, Size: ce - co, Origins: []string{origin}, Err: err})
			b.failFlight(c.CompressedOffset, err)
			continue
		}
		res.Verified++
		addRun(&verified, co, ce)
		b.markChecked(c.CompressedOffset)
		if fl := b.deliver(c, out, scratch == nil); fl != nil {
			delivered = append(delivered, landing{c.CompressedOffset, fl})
		}
		if scratch != nil {
			*scratch = out[:cap(out)]
			decodeScratch.Put(scratch)
		}
	}
	if end > cursor {
		addRun(&pending, cursor, end)
	}
	for _, s := range verified {
		if err := b.sb.WriteVerified(s.off, data[s.off-off:s.end-off]); err != nil {
			return res, b.storeFailed(err)
		}
	}
	for _, d := range delivered {
		b.landed(d.off, d.fl)
	}
	for _, s := range pending {
		if err := b.sb.WritePending(s.off, data[s.off-off:s.end-off], origin); err != nil {
			return res, b.storeFailed(err)
		}
	}
	for i := range straddling {
		if bad, ok := b.verifyAssembled(&straddling[i]); ok {
			res.Verified++
		} else if bad != nil {
			res.Bad = append(res.Bad, *bad)
		}
	}
	if len(pending) > 0 {
		b.maybeCheckTail()
		b.maybeCheckWhole()
	}
	return res, nil
}

func originKind(origin string) string {
	if origin == OriginSource {
		return "source"
	}
	return "peer"
}

// storeFailed names the blob in a store error; readers waiting on chunks that could not be kept
// are failed by whoever owns their fetch.
func (b *Blob) storeFailed(err error) error {
	return fmt.Errorf("blob %s: keep bytes: %w", b.id, err)
}

// verifyAssembled checks a chunk whose bytes arrived in more than one piece once they are all
// here. ok: it verified now. bad: it failed, its pending bytes are gone and their senders named.
func (b *Blob) verifyAssembled(c *rafs.Chunk) (bad *BadChunk, ok bool) {
	co, n := int64(c.CompressedOffset), int64(c.CompressedSize)
	if b.sb.Verified(co, n) || !b.sb.Covered(co, n) {
		return nil, false
	}
	// Promote keeps what was verified only if no other sender's bytes replaced it meanwhile; the
	// Accept that wrote those checks the chunk again.
	gen := b.sb.PendingGen()
	src := make([]byte, n)
	if err := b.sb.ReadAny(src, co); err != nil {
		return nil, false // evicted meanwhile: fetched again when needed
	}
	out, err := b.decode(src, c, nil, true)
	if err != nil {
		origins := b.sb.DropPending(co, n)
		b.f.m.verifyFailed.WithLabelValues("peer").Inc()
		b.log.Warn("chunk across two pieces failed verification: its bytes are dropped", zap.Uint32("chunk", c.Index),
			zap.Int64("offset", co), zap.Strings("from", origins), zap.Error(err))
		b.failFlight(c.CompressedOffset, err)
		b.blamed(origins, co, n)
		return &BadChunk{Index: c.Index, Off: co, Size: n, Origins: origins, Err: err}, false
	}
	if err := b.sb.Promote(co, n, gen); err != nil {
		return nil, false
	}
	b.markChecked(c.CompressedOffset)
	if fl := b.deliver(c, out, true); fl != nil {
		b.landed(c.CompressedOffset, fl)
	}
	return nil, true
}

// markChecked records that the chunk at off was verified in this process.
func (b *Blob) markChecked(off uint64) {
	b.mu.Lock()
	if i := b.findLocked(off); i >= 0 {
		b.checked[i] = true
	}
	b.mu.Unlock()
}

// deliver hands a verified chunk to the readers waiting for it (and so to the memory cache) and
// returns its flight, if any. out is copied first unless owned: scratch memory goes back to its
// pool. The flight stays in the blob's in-flight map, finished, until the chunk's bytes are in
// the store (the caller calls landed): a reader that missed the chunk in the store a moment ago
// then joins the finished flight instead of fetching the chunk a second time.
func (b *Blob) deliver(c *rafs.Chunk, out []byte, owned bool) *flight {
	b.mu.Lock()
	fl := b.flights[c.CompressedOffset]
	k := memKey{b.dig, c.Digest}
	b.mu.Unlock()
	if fl != nil {
		if !owned {
			out = bytes.Clone(out) // a reader came while the chunk was decoded into scratch
		}
		b.f.mem.add(k, out)
		fl.finish(out, nil)
	}
	return fl
}

// landed ends a delivered flight once the chunk's bytes are in the store.
func (b *Blob) landed(off uint64, fl *flight) {
	b.mu.Lock()
	if b.flights[off] == fl {
		delete(b.flights, off)
	}
	b.mu.Unlock()
}

// decodeScratch holds buffers for chunks decoded only to be verified.
var decodeScratch = sync.Pool{New: func() any { return new([]byte) }}

// failFlight fails the readers waiting for the chunk at off.
func (b *Blob) failFlight(off uint64, err error) {
	b.mu.Lock()
	fl := b.flights[off]
	if fl != nil {
		delete(b.flights, off)
	}
	b.mu.Unlock()
	if fl != nil {
		fl.finish(nil, fmt.Errorf("%w: %w", ErrVerify, err))
	}
}

// maybeCheckWhole starts the whole-blob check when every byte is here and some are pending.
func (b *Blob) maybeCheckWhole() {
	if !b.sb.Covered(0, b.size) || len(b.sb.Pending()) == 0 {
		return
	}
	b.mu.Lock()
	if b.whole.running != nil || b.whole.fails >= maxWholeFailures {
		b.mu.Unlock()
		return
	}
	done := make(chan struct{})
	b.whole.running = done
	b.f.bg.Add(1)
	b.mu.Unlock()
	go func() {
		defer b.f.bg.Done()
		b.runWhole(done)
	}()
}

// runWhole runs one whole-blob check and publishes its result.
func (b *Blob) runWhole(done chan struct{}) {
	err := b.checkWhole(context.Background())
	for i := 0; i < 3 && errors.Is(err, blobstore.ErrChanged); i++ {
		err = b.checkWhole(context.Background())
	}
	b.mu.Lock()
	b.whole.running, b.whole.err = nil, err
	if err != nil {
		b.whole.fails++
	}
	b.mu.Unlock()
	close(done)
}

// ErrWholeBlob is wrapped when a blob's bytes do not hash to its id.
var ErrWholeBlob = errors.New("blob bytes do not match the blob's digest")

// checkWhole hashes the whole blob (verified and pending bytes) and compares it with the blob id:
// a match makes the pending bytes verified; a mismatch drops them and names who sent them.
func (b *Blob) checkWhole(ctx context.Context) error {
	gen := b.sb.PendingGen()
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for off := int64(0); off < b.size; off += int64(len(buf)) {
		if err := ctx.Err(); err != nil {
			return err
		}
		p := buf[:min(int64(len(buf)), b.size-off)]
		if err := b.sb.ReadAny(p, off); err != nil {
			return fmt.Errorf("blob %s: whole-blob check: %w", b.id, err)
		}
		h.Write(p)
	}
	got := hex.EncodeToString(h.Sum(nil))
	pend := b.sb.Pending()
	if got == b.id {
		for _, p := range pend {
			if err := b.sb.Promote(p.Off, p.Len, gen); err != nil {
				return fmt.Errorf("blob %s: promote [%d, +%d): %w", b.id, p.Off, p.Len, err)
			}
		}
		b.log.Debug("uncovered bytes verified against the blob digest", zap.Int("ranges", len(pend)))
		return nil
	}
	if b.sb.PendingGen() != gen {
		// Bytes arrived while they were hashed: hash again before blaming anyone.
		return fmt.Errorf("blob %s: whole-blob check: %w", b.id, blobstore.ErrChanged)
	}
	origins := b.sb.DropPending(0, b.size)
	b.log.Warn("blob bytes do not hash to the blob id: the unverified ones are dropped", zap.String("sha256", got),
		zap.Strings("from", origins))
	for _, p := range pend {
		b.blamed([]string{p.Origin}, p.Off, p.Len)
	}
	return fmt.Errorf("blob %s: %w (sha256 %s)", b.id, ErrWholeBlob, got)
}

// CheckWhole runs the whole-blob check now if every byte is here, or waits for the one running,
// and returns its result (a seed download waits for it).
func (b *Blob) CheckWhole(ctx context.Context) error {
	for {
		if b.sb.Verified(0, b.size) {
			return nil
		}
		b.mu.Lock()
		running := b.whole.running
		if running == nil {
			if !b.sb.Covered(0, b.size) {
				err := b.whole.err
				if err == nil {
					err = b.tail.err // a tail that failed was dropped: that is why bytes are missing
				}
				b.mu.Unlock()
				if err != nil {
					return err
				}
				return fmt.Errorf("blob %s: %w: not every byte is here", b.id, blobstore.ErrMissing)
			}
			running = make(chan struct{})
			b.whole.running = running
			b.mu.Unlock()
			b.runWhole(running)
			continue
		}
		b.mu.Unlock()
		select {
		case <-running:
		case <-ctx.Done():
			return ctx.Err()
		}
		b.mu.Lock()
		err := b.whole.err
		b.mu.Unlock()
		if err != nil && !b.sb.Verified(0, b.size) {
			return err
		}
	}
}

// Settle checks, in [off, off+n), the chunks whose bytes are all here but not yet verified (two
// halves that arrived at once, each before the other was written), and starts the whole-blob
// check when every byte of the blob is here.
func (b *Blob) Settle(off, n int64) {
	b.mu.Lock()
	lo, hi := b.overlappingLocked(off, off+n)
	chunks := append([]rafs.Chunk(nil), b.chunks[lo:hi]...)
	b.mu.Unlock()
	for i := range chunks {
		b.verifyAssembled(&chunks[i])
	}
	b.maybeCheckTail()
	b.maybeCheckWhole()
}

// Uncovered returns the sub-ranges of [off, off+n) that are neither verified nor pending: the
// bytes a fetch must still bring (pending ones are here, waiting for the rest of their chunk or for
// the whole-blob check).
func (b *Blob) Uncovered(off, n int64) []blobstore.Range {
	miss := b.sb.Missing(off, n)
	if len(miss) == 0 {
		return nil
	}
	pend := b.sb.Pending()
	var out []blobstore.Range
	for _, m := range miss {
		cur, end := m.Off, m.Off+m.Len
		for _, p := range pend {
			pe := p.Off + p.Len
			if pe <= cur || p.Off >= end {
				continue
			}
			if p.Off > cur {
				out = append(out, blobstore.Range{Off: cur, Len: p.Off - cur})
			}
			cur = max(cur, pe)
		}
		if cur < end {
			out = append(out, blobstore.Range{Off: cur, Len: end - cur})
		}
	}
	return out
}
