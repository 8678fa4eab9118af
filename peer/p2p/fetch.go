package p2p

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/dfnydus/dfnydus/blobstore"
	"github.com/dfnydus/dfnydus/internal/lowprio"
	"github.com/dfnydus/dfnydus/peer"
	"github.com/dfnydus/dfnydus/peer/source"
	"github.com/dfnydus/dfnydus/peer/upload"
	"github.com/dfnydus/dfnydus/peer/vortex"
	schedclient "github.com/dfnydus/dfnydus/scheduler-client"
)

// ErrBadPiece is wrapped by errors about piece bytes that fail verification.
var ErrBadPiece = errors.New("piece failed verification")

// pieceCall is one whole piece being fetched from parents; others wanting it wait on done.
type pieceCall struct {
	done chan struct{}
	err  error
}

// rangeCall is one range being fetched from the source; readers wanting bytes of it wait on done.
type rangeCall struct {
	off, end int64
	done     chan struct{}
	err      error
}

// fill returns once [off, off+n) is verified in the store. Pieces come whole from parents when
// the scheduler named some; otherwise the missing bytes come from the source, the caller's own
// bytes first, and the rest of each piece they touch follows in the background (a peer serves
// whole pieces) when on-demand reads leave the link alone.
func (t *task) fill(ctx context.Context, off, n int64) error {
	if n <= 0 {
		return nil
	}
	if off < 0 || off+n > int64(t.lay.size) {
		return fmt.Errorf("task %s: [%d, +%d) outside the blob's %d bytes: %w", t.id, off, n, t.lay.size, source.ErrRange)
	}
	t.touch()
	sb := t.bl.Store()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		if len(sb.Missing(off, n)) == 0 {
			return nil
		}
		unc := t.bl.Uncovered(off, n)
		if len(unc) == 0 {
			// Everything is here; what is not verified waits for the rest of its chunk or the
			// whole-blob check.
			t.bl.Settle(off, n)
			if len(sb.Missing(off, n)) == 0 {
				return nil
			}
			return fmt.Errorf("task %s: [%d, +%d): %w", t.id, off, n, errPending)
		}
		t.waitScheduled(ctx)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("task %s: %w", t.id, err)
		}
		var err error
		if len(t.candidates()) > 0 {
			if aw := t.bl.Awaited(off, n); len(aw) > 0 {
				// A reader waits: the chunks it needs, from a parent that holds them, before (and
				// instead of) whole pieces; then the other chunks of the range the same way (a
				// parent may hold the reader's chunks but not the window after them). Only chunk
				// bytes: what lies between chunks is never read through a mount, and a parent
				// can vouch for it only with the whole blob.
				var need []blobstore.Range
				for _, r := range aw {
					need = append(need, t.bl.Uncovered(r.Off, r.Len)...)
				}
				t.rangesFromParents(ctx, need)
				if unc = t.rangesFromParents(ctx, t.bl.ChunkBytes(t.bl.Uncovered(off, n))); len(unc) == 0 {
					// Done, and no background completion: a peer served by parents holds what it
					// read (and serves it as ranges); the rest of the pieces is a prefetch's job.
					t.bl.Settle(off, n)
					return nil
				}
			}
			err = t.fillFromParents(ctx, unc)
		} else {
			err = t.fillFromSource(ctx, unc, false)
			if err == nil && t.m.cfg.CompletePieces && t.toldBackToSource() {
				t.completeLater(unc)
			}
		}
		t.bl.Settle(off, n)
		if err != nil {
			lastErr = err
			if ctx.Err() != nil {
				break
			}
		}
	}
	if miss := sb.Missing(off, n); len(miss) > 0 {
		if lastErr == nil {
			lastErr = errors.New("bytes failed verification")
		}
		return fmt.Errorf("task %s: [%d, +%d) not verified after 3 attempts: %w", t.id, off, n, lastErr)
	}
	return nil
}

// fillRange brings [off, off+n) in for a child of ours that asked for it as a range: as ranges
// from this peer's parents when it has some, else as fill does (whole pieces, or the source).
func (t *task) fillRange(ctx context.Context, off, n int64) error {
	if len(t.candidates()) > 0 {
		t.waitScheduled(ctx)
		if len(t.rangesFromParents(ctx, t.bl.Uncovered(off, n))) == 0 {
			t.bl.Settle(off, n)
			return nil
		}
	}
	return t.fill(ctx, off, n)
}

// rangesFromParents asks parents of ours for the ranges of miss (DownloadRange: bytes they hold
// verified, whole pieces or not) and passes what they send through the verification point. It
// returns what is still missing: ranges no parent had, or whose bytes failed. A parent that does
// not speak DownloadRange (a Rust dfdaemon) is not asked again.
func (t *task) rangesFromParents(ctx context.Context, miss []blobstore.Range) []blobstore.Range {
	ps := t.candidates()
	if len(ps) > 1 {
		k := rand.IntN(len(ps))
		ps = append(ps[k:], ps[:k]...)
	}
	var left []blobstore.Range
	for _, r := range miss {
		for cur, end := r.Off, r.Off+r.Len; cur < end; {
			step := min(end-cur, vortex.MaxRangeLength)
			if !t.rangeFromParents(ctx, ps, cur, step) {
				left = append(left, blobstore.Range{Off: cur, Len: step})
			}
			cur += step
		}
	}
	return left
}

// rangeFromParents tries the parents in turn for [off, off+n) and reports whether one gave it.
func (t *task) rangeFromParents(ctx context.Context, ps []schedclient.Parent, off, n int64) bool {
	for _, p := range ps {
		t.mu.Lock()
		skip := t.noRanges[p.PeerID] || t.blocked[p.PeerID]
		t.mu.Unlock()
		if skip || ctx.Err() != nil {
			continue
		}
		port := p.DownloadPort
		if port == 0 {
			port = p.Port
		}
		rctx, cancel := context.WithTimeout(ctx, t.m.cfg.ParentTimeout)
		data, err := t.m.vortex.DownloadRange(rctx, net.JoinHostPort(p.IP, strconv.Itoa(port)), t.id, uint64(off), uint64(n))
		cancel()
		var rerr *vortex.RemoteError
		switch {
		case errors.Is(err, vortex.ErrPieceNotFound):
			continue // it does not hold these bytes (yet)
		case errors.As(err, &rerr) && rerr.Code == vortex.CodeInvalidArgument || errors.Is(err, vortex.ErrProtocol):
			// Not a peer of ours: whole pieces only.
			t.mu.Lock()
			t.noRanges[p.PeerID] = true
			t.mu.Unlock()
			continue
		case err != nil:
			t.log.Debug("range from parent", zap.String("parent", p.PeerID), zap.Int64("offset", off), zap.Int64("length", n), zap.Error(err))
			continue
		}
		res, err := t.accept(off, data, p.PeerID, false)
		if err != nil {
			t.log.Warn("range from parent: keep bytes", zap.Error(err))
			return false
		}
		if len(res.Bad) > 0 {
			b := res.Bad[0]
			t.parentFailed(p, b.Index, fmt.Errorf("range [%d, +%d): %d chunks failed verification, first chunk %d at %d: %w: %w",
				off, n, len(res.Bad), b.Index, b.Off, ErrBadPiece, b.Err))
			continue
		}
		t.m.met.ranges.Inc()
		t.m.met.bytes.WithLabelValues(trafficParent).Add(float64(n))
		return true
	}
	return false
}

// errPending is wrapped when every byte asked for is here but some wait for a check (the rest of
// a chunk, or the whole blob).
var errPending = errors.New("bytes are here but not verified yet")

// fillFromParents fetches the pieces covering miss, whole, from parents (several at once); a piece
// no parent can give comes from the source.
func (t *task) fillFromParents(ctx context.Context, miss []blobstore.Range) error {
	var want []uint32
	seen := map[uint32]bool{}
	for _, r := range miss {
		first, last := t.lay.span(uint64(r.Off), uint64(r.Len))
		for p := first; p <= last; p++ {
			if !seen[p] {
				seen[p] = true
				want = append(want, p)
			}
		}
	}
	errs := make([]error, len(want))
	sem := make(chan struct{}, t.m.cfg.ReadParallelism)
	var wg sync.WaitGroup
	for i, p := range want {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			errs[i] = t.piece(ctx, p)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// piece brings piece n into the store, once however many ask: from parents, else the source.
func (t *task) piece(ctx context.Context, n uint32) error {
	if t.held(n) {
		return nil
	}
	t.mu.Lock()
	c, running := t.pieces[n]
	if !running {
		c = &pieceCall{done: make(chan struct{})}
		t.pieces[n] = c
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			// A piece is worth finishing even if the reader that asked went away.
			pctx, cancel := context.WithTimeout(t.ctx, t.m.cfg.PieceTimeout)
			c.err = t.fetchPiece(pctx, n)
			cancel()
			t.mu.Lock()
			delete(t.pieces, n)
			t.mu.Unlock()
			close(c.done)
		}()
	}
	t.mu.Unlock()
	select {
	case <-c.done:
		return c.err
	case <-ctx.Done():
		return fmt.Errorf("task %s piece %d: %w", t.id, n, ctx.Err())
	}
}

// fetchPiece tries the parents (from a random one on, so children spread over them), then the
// source for whatever is still missing.
func (t *task) fetchPiece(ctx context.Context, n uint32) error {
	off, length := t.lay.bounds(n)
	ps := t.candidates()
	if len(ps) > 1 {
		k := rand.IntN(len(ps))
		ps = append(ps[k:], ps[:k]...)
	}
	for _, p := range ps {
		if t.held(n) {
			return nil
		}
		t0 := time.Now()
		select {
		case t.m.parentSlots <- struct{}{}:
		case <-ctx.Done():
			return fmt.Errorf("task %s piece %d: %w", t.id, n, ctx.Err())
		}
		data, err := t.m.fromParent(ctx, t, p, n)
		if err == nil {
			err = t.acceptPiece(n, data, p.PeerID)
		}
		<-t.m.parentSlots
		if err == nil {
			t.m.met.pieces.WithLabelValues(trafficParent).Inc()
			t.m.met.bytes.WithLabelValues(trafficParent).Add(float64(length))
			t.mu.Lock()
			t.origin[n] = p.PeerID
			t.mu.Unlock()
			t.log.Debug("piece from parent", zap.Uint32("piece", n), zap.String("parent", p.PeerID), zap.Duration("took", time.Since(t0)))
			return nil
		}
		if t.ctx.Err() != nil || ctx.Err() != nil {
			return err
		}
		t.parentFailed(p, n, err)
	}
	if t.held(n) {
		return nil
	}
	// No parent could give the piece: the source gives what is missing, verified in the background
	// like a parent's piece would have been (readers' chunks first).
	return t.fillFromSource(ctx, t.bl.Uncovered(int64(off), int64(length)), true)
}

// acceptPiece passes a whole piece from a parent through the verification point. Chunks that fail
// are the parent's fault; chunks that verified are kept whatever the rest did.
func (t *task) acceptPiece(n uint32, data []byte, parentID string) error {
	off, length := t.lay.bounds(n)
	if uint64(len(data)) != length {
		return fmt.Errorf("task %s piece %d: %d bytes, want %d: %w", t.id, n, len(data), length, ErrBadPiece)
	}
	res, err := t.accept(int64(off), data, parentID, true)
	if err != nil {
		return err
	}
	if len(res.Bad) > 0 {
		b := res.Bad[0]
		return fmt.Errorf("task %s piece %d: %d chunks failed verification, first chunk %d at %d: %w: %w", t.id, n, len(res.Bad), b.Index, b.Off, ErrBadPiece, b.Err)
	}
	return nil
}

// accept passes [off, off+len(data)) through the verification point: first the chunks readers
// wait for, at the caller's priority, so they go on at once; then the rest, on a background
// thread when bg (the rest of a piece, completing pieces: work a busy node does last). Chunks the
// first pass verified are skipped by the second, which reports every chunk that failed.
func (t *task) accept(off int64, data []byte, origin string, bg bool) (peer.AcceptResult, error) {
	for _, r := range t.bl.Awaited(off, int64(len(data))) {
		if _, err := t.bl.Accept(r.Off, data[r.Off-off:r.Off+r.Len-off], origin); err != nil {
			return peer.AcceptResult{}, err
		}
	}
	if !bg {
		return t.bl.Accept(off, data, origin)
	}
	var res peer.AcceptResult
	var err error
	lowprio.Do(func() { res, err = t.bl.Accept(off, data, origin) })
	return res, err
}

// fillFromSource fetches the given ranges from the source, sharing ranges another caller is
// already fetching, and passes what arrives through the verification point (the chunks no reader
// waits for on a background thread when bg).
func (t *task) fillFromSource(ctx context.Context, miss []blobstore.Range, bg bool) error {
	if t.m.cfg.DisableBackToSource {
		return fmt.Errorf("task %s: no parent could serve it and back-to-source is disabled", t.id)
	}
	mine, others := t.claimRanges(miss)
	var errs []error
	for _, rc := range mine {
		rc.err = t.fetchRange(ctx, rc.off, rc.end-rc.off, bg)
		t.finishRange(rc)
		errs = append(errs, rc.err)
	}
	for _, rc := range others {
		select {
		case <-rc.done:
			errs = append(errs, rc.err)
		case <-ctx.Done():
			return fmt.Errorf("task %s: %w", t.id, ctx.Err())
		}
	}
	return errors.Join(errs...)
}

// fetchRange reads [off, off+n) from the source and accepts it.
func (t *task) fetchRange(ctx context.Context, off, n int64, bg bool) error {
	src := t.source()
	if src == nil {
		return fmt.Errorf("task %s: no source", t.id)
	}
	t0 := time.Now()
	rc, err := src.ReadRange(ctx, t.blobID, off, n)
	if err != nil {
		return fmt.Errorf("task %s [%d, +%d) back to source: %w", t.id, off, n, err)
	}
	ttfb := time.Since(t0)
	data := make([]byte, n)
	_, err = io.ReadFull(rc, data)
	rc.Close()
	if err != nil {
		return fmt.Errorf("task %s [%d, +%d) back to source: %w", t.id, off, n, err)
	}
	t.bl.ObserveFetch(ttfb, n, time.Since(t0)-ttfb)
	t.m.met.bytes.WithLabelValues(trafficSource).Add(float64(n))
	res, err := t.accept(off, data, peer.OriginSource, bg)
	if err != nil {
		return err
	}
	if len(res.Bad) > 0 {
		b := res.Bad[0]
		t.log.Error("source bytes failed verification: dropped, they will be fetched again", zap.Int("chunks", len(res.Bad)),
			zap.Uint32("first_chunk", b.Index), zap.Int64("offset", b.Off), zap.Error(b.Err))
		return fmt.Errorf("task %s: %d chunks from the source failed verification: %w", t.id, len(res.Bad), b.Err)
	}
	return nil
}

// claimRanges splits want into the parts this caller fetches (now in flight) and the calls
// already fetching the rest.
func (t *task) claimRanges(want []blobstore.Range) (mine, others []*rangeCall) {
	t.mu.Lock()
	defer t.mu.Unlock()
	// A call that ended since the caller looked has its bytes in the store already (it accepts
	// them before it leaves t.ranges): look again under the lock, or they are fetched twice.
	var still []blobstore.Range
	for _, r := range want {
		still = append(still, t.bl.Uncovered(r.Off, r.Len)...)
	}
	seen := map[*rangeCall]bool{}
	for _, r := range still {
		off, end := r.Off, r.Off+r.Len
		for off < end {
			// The in-flight call covering off, or the first one starting after it.
			var cover, next *rangeCall
			for _, rc := range t.ranges {
				if rc.off <= off && off < rc.end {
					cover = rc
					break
				}
				if rc.off > off && rc.off < end && (next == nil || rc.off < next.off) {
					next = rc
				}
			}
			if cover != nil {
				if !seen[cover] {
					seen[cover] = true
					others = append(others, cover)
				}
				off = cover.end
				continue
			}
			stop := end
			if next != nil {
				stop = next.off
			}
			rc := &rangeCall{off: off, end: stop, done: make(chan struct{})}
			t.ranges = append(t.ranges, rc)
			mine = append(mine, rc)
			off = stop
		}
	}
	return mine, others
}

func (t *task) finishRange(rc *rangeCall) {
	t.mu.Lock()
	for i, r := range t.ranges {
		if r == rc {
			t.ranges = append(t.ranges[:i], t.ranges[i+1:]...)
			break
		}
	}
	t.mu.Unlock()
	close(rc.done)
}

// completeLater queues the pieces miss touched for completion: one goroutine per task fetches,
// in the background and only while on-demand reads leave the link alone, the rest of them, so
// this peer holds them whole and can serve them. One at a time: however many reads queued pieces,
// a reader's next fetch from the source queues behind at most one background request.
func (t *task) completeLater(miss []blobstore.Range) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, r := range miss {
		first, last := t.lay.span(uint64(r.Off), uint64(r.Len))
		for p := first; p <= last; p++ {
			if !t.toComplete[p] {
				t.toComplete[p] = true
				t.completeOrder = append(t.completeOrder, p)
			}
		}
	}
	if t.completer || len(t.completeOrder) == 0 {
		return
	}
	t.completer = true
	t.wg.Add(1)
	go t.complete()
}

// complete is the task's completer: it works through the queued pieces in the order reads
// touched them, then ends (a later read starts it again).
func (t *task) complete() {
	defer t.wg.Done()
	for {
		t.mu.Lock()
		if len(t.completeOrder) == 0 || t.ctx.Err() != nil {
			t.completer = false
			t.mu.Unlock()
			return
		}
		p := t.completeOrder[0]
		t.completeOrder = t.completeOrder[1:]
		delete(t.toComplete, p)
		t.mu.Unlock()
		t.completePiece(p)
	}
}

// completePiece fetches what piece p lacks from the source, a request at a time, small while reads
// are active; what is missing is looked up before each, as readers bring bytes in meanwhile.
func (t *task) completePiece(p uint32) {
	if t.held(p) {
		return
	}
	off, l := t.lay.bounds(p)
	o, n := t.bl.ChunkSpan(int64(off), int64(l))
	for cur, end := o, o+n; cur < end; {
		if err := t.m.f.WaitQuiet(t.ctx); err != nil {
			return
		}
		unc := t.bl.Uncovered(cur, end-cur)
		if len(unc) == 0 {
			return
		}
		r := blobstore.Range{Off: unc[0].Off, Len: min(unc[0].Len, t.m.f.BackgroundRequest())}
		if err := t.fillFromSource(t.ctx, []blobstore.Range{r}, true); err != nil {
			t.log.Debug("completing a piece", zap.Uint32("piece", p), zap.Error(err))
		}
		cur = r.Off + r.Len
	}
}

// toldBackToSource reports whether the scheduler made this peer one that downloads from the source
// (or there is no scheduler session): such a peer completes the pieces its reads touch, so that it
// can serve them whole. A peer that reads from the source only because its scheduler has not
// answered yet, or every parent failed, takes just what its readers need: with 64 peers starting
// at once, the slow answers otherwise made a dozen of them pull whole pieces from the registry.
func (t *task) toldBackToSource() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.back || t.sess == nil
}

// waitScheduled waits (bounded) for the scheduler's first answer so that the first reads of a new
// mount go to parents rather than all to the source.
func (t *task) waitScheduled(ctx context.Context) {
	t.mu.Lock()
	answered := t.answered
	t.mu.Unlock()
	if answered {
		return
	}
	timer := time.NewTimer(t.m.cfg.ScheduleTimeout)
	defer timer.Stop()
	select {
	case <-t.scheduled:
	case <-timer.C:
	case <-ctx.Done():
	}
}

// candidates are the parents the scheduler named that have not failed us.
func (t *task) candidates() []schedclient.Parent {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []schedclient.Parent
	for _, p := range t.parents {
		if !t.blocked[p.PeerID] {
			out = append(out, p)
		}
	}
	return out
}

// blamed hears of pending bytes that failed verification later (a chunk across two pieces, the
// whole-blob check): a parent that sent them is reported and avoided; the bytes are already gone
// and will be fetched again.
func (t *task) blamed(origin string, off, n int64) {
	if origin == peer.OriginSource {
		return
	}
	first, _ := t.lay.span(uint64(off), uint64(max(n, 1)))
	p := schedclient.Parent{PeerID: origin}
	t.mu.Lock()
	for _, q := range t.parents {
		if q.PeerID == origin {
			p = q // its address, for the log
			break
		}
	}
	t.mu.Unlock()
	t.parentFailed(p, first, fmt.Errorf("bytes [%d, +%d): %w", off, n, ErrBadPiece))
}

// parentFailed reports a parent that could not serve a piece or served bad bytes, avoids it from
// now on, and asks the scheduler for others once every parent failed.
func (t *task) parentFailed(p schedclient.Parent, n uint32, err error) {
	bad := errors.Is(err, ErrBadPiece)
	t.log.Warn("parent failed", zap.String("parent", p.PeerID), zap.String("addr", p.IP), zap.Uint32("piece", n),
		zap.Bool("bad_bytes", bad), zap.Error(err))
	if bad {
		t.m.met.badPieces.Inc()
	} else {
		t.m.met.parentErrors.Inc()
	}
	t.mu.Lock()
	t.blocked[p.PeerID] = true
	sess := t.sess
	left := 0
	for _, q := range t.parents {
		if !t.blocked[q.PeerID] {
			left++
		}
	}
	var blocked []schedclient.Parent
	if left == 0 && len(t.parents) > 0 {
		blocked = append(blocked, t.parents...)
		t.parents = nil
	}
	t.mu.Unlock()
	if sess == nil {
		return
	}
	// Always "temporary": the v2.5.1 scheduler then blocks the parent for this peer and counts an
	// upload failure against the parent's host (lowering its score for everyone); a non-temporary
	// failure makes it end the whole AnnouncePeer stream instead (scheduler/service/service_v2.go
	// handleDownloadPieceFailedRequest).
	if rerr := sess.PieceFailed(n, p.PeerID, true); rerr != nil {
		t.log.Debug("report piece failed", zap.Error(rerr))
	}
	if len(blocked) > 0 {
		if rerr := sess.Reschedule(blocked, fmt.Sprintf("piece %d: every parent failed", n)); rerr != nil {
			t.log.Debug("reschedule", zap.Error(rerr))
		}
	}
}

// fromParent downloads piece n of t from parent p: SyncPieces says where (waiting while p is still
// getting it), then the bytes come over Vortex (which checks their length and crc32).
func (m *Manager) fromParent(ctx context.Context, t *task, p schedclient.Parent, n uint32) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.ParentTimeout)
	defer cancel()
	cc, done, err := m.conn(p.IP, p.Port)
	if err != nil {
		return nil, err
	}
	defer done()
	locs, errc := upload.SyncPieces(ctx, cc, m.cfg.HostID, t.id, []uint32{n})
	var loc upload.PieceLocation
	select {
	case l, ok := <-locs:
		if !ok {
			err := <-errc
			if err == nil {
				err = errors.New("sync pieces ended without the piece")
			}
			return nil, fmt.Errorf("parent %s sync piece %d: %w", p.IP, n, err)
		}
		loc = l
	case err := <-errc:
		if err == nil {
			err = errors.New("sync pieces ended without the piece")
		}
		return nil, fmt.Errorf("parent %s sync piece %d: %w", p.IP, n, err)
	case <-ctx.Done():
		return nil, fmt.Errorf("parent %s sync piece %d: %w", p.IP, n, ctx.Err())
	}
	ip, port := loc.IP, loc.TCPPort
	if ip == "" {
		ip = p.IP
	}
	if port == 0 {
		port = p.DownloadPort
	}
	piece, data, err := m.vortex.DownloadPiece(ctx, net.JoinHostPort(ip, strconv.Itoa(port)), t.id, n)
	if errors.Is(err, vortex.ErrPieceInvalid) {
		return nil, fmt.Errorf("parent %s piece %d: %w: %w", p.IP, n, ErrBadPiece, err)
	}
	if err != nil {
		return nil, fmt.Errorf("parent %s piece %d: %w", p.IP, n, err)
	}
	off, length := t.lay.bounds(n)
	if piece.Number != n || piece.Offset != off || piece.Length != length {
		return nil, fmt.Errorf("parent %s sent piece %d [%d+%d] for piece %d [%d+%d]: %w", p.IP, piece.Number, piece.Offset, piece.Length,
			n, off, length, ErrBadPiece)
	}
	return data, nil
}
