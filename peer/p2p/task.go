package p2p

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash/crc32"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/dfnydus/dfnydus/peer/source"
	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/blob"
	schedclient "github.com/dfnydus/dfnydus/scheduler-client"
	"github.com/dfnydus/dfnydus/store"
)

// ErrBadPiece is wrapped by errors about piece bytes that fail verification.
var ErrBadPiece = errors.New("piece failed verification")

// task is one blob as a Dragonfly task on this peer.
type task struct {
	m      *Manager
	id     string
	url    string
	blobID string
	peerID string
	lay    layout
	table  *chunkTable // nil for tasks no mounted image describes (seed downloads)
	src    source.Source
	log    *zap.Logger

	verifyMu sync.Mutex // one verification pass at a time (it reads neighbouring pieces)

	mu        sync.Mutex
	held      map[uint32]pieceRecord
	parentOf  map[uint32]string // piece -> the parent it came from, while unverified
	chunkOK   []bool
	inflight  map[uint32]*call
	parents   []schedclient.Parent
	blocked   map[string]bool
	scheduled chan struct{} // closed on the scheduler's first answer (or when it cannot answer)
	answered  bool
	back      bool // the scheduler told us to go back to source
	sess      *schedclient.Session
	finished  bool
	// lastPiece is the last piece of the latest read, to spot sequential reads.
	lastPiece uint32
	readSeen  bool
	// completing is set once the pieces no chunk lives in are being fetched to finish the task.
	completing bool
	refs       int
	cancel     context.CancelFunc
	ctx        context.Context
}

// call is one piece fetch in flight; readers of the same piece wait on it.
type call struct {
	done chan struct{}
	data []byte
	err  error
}

func newTask(m *Manager, id, url, blobID string, size, pieceLength uint64, src source.Source) *task {
	ctx, cancel := context.WithCancel(context.Background())
	t := &task{m: m, id: id, url: url, blobID: blobID, peerID: schedclient.PeerID(), lay: newLayout(size, pieceLength),
		src: src, held: map[uint32]pieceRecord{}, parentOf: map[uint32]string{}, inflight: map[uint32]*call{},
		blocked: map[string]bool{}, scheduled: make(chan struct{}), ctx: ctx, cancel: cancel}
	t.log = m.log.With(zap.String("task", id), zap.String("blob", blobID))
	return t
}

// setTable attaches the chunks of a mounted image's blob, so pieces can be verified chunk by chunk.
func (t *task) setTable(b *rafs.Blob, chunks []rafs.Chunk) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.table != nil {
		return
	}
	t.table = newChunkTable(b, chunks, t.lay)
	t.chunkOK = make([]bool, len(chunks))
	// Chunks touching a piece verified in an earlier run were verified then.
	for n, r := range t.held {
		if r.Verified {
			for _, ci := range t.table.byPiece[n] {
				t.chunkOK[ci] = true
			}
		}
	}
}

// loadIndex restores the pieces an earlier run kept.
func (t *task) loadIndex() error {
	recs, err := t.m.index.load(t.id)
	if err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for n, r := range recs {
		if n >= t.lay.count {
			continue
		}
		if _, l := t.lay.bounds(n); l != r.Length {
			continue
		}
		if !r.Verified && r.FromParent {
			// Its parent is unknown now: it cannot be blamed, so do not keep its bytes either.
			_ = t.m.index.remove(t.id, n)
			continue
		}
		t.held[n] = r
	}
	return nil
}

func storeKey(r pieceRecord) store.Key {
	return store.Key{Alg: rafs.DigestSHA256, Digest: rafs.Digest(r.SHA256)}
}

// readHeld returns a held piece's bytes from the store; ok is false if the store lost them (they
// are then forgotten).
func (t *task) readHeld(ctx context.Context, n uint32, r pieceRecord) ([]byte, bool, error) {
	data, ok, err := t.m.store.Get(ctx, storeKey(r), uint32(r.Length), nil)
	if err != nil {
		return nil, false, fmt.Errorf("task %s piece %d: %w", t.id, n, err)
	}
	if !ok {
		t.forget(n)
		return nil, false, nil
	}
	return data, true, nil
}

func (t *task) forget(n uint32) {
	t.mu.Lock()
	delete(t.held, n)
	delete(t.parentOf, n)
	t.mu.Unlock()
	_ = t.m.index.remove(t.id, n)
}

// piece returns piece n's bytes: held, or fetched once however many readers ask.
func (t *task) piece(ctx context.Context, n uint32) ([]byte, error) {
	if n >= t.lay.count {
		return nil, fmt.Errorf("task %s: piece %d of %d: %w", t.id, n, t.lay.count, source.ErrRange)
	}
	for {
		t.mu.Lock()
		r, ok := t.held[n]
		t.mu.Unlock()
		if ok {
			data, ok, err := t.readHeld(ctx, n, r)
			if err != nil || ok {
				return data, err
			}
			continue
		}
		if t.adoptFromSibling(n) {
			continue
		}
		t.mu.Lock()
		c, running := t.inflight[n]
		if !running {
			c = &call{done: make(chan struct{})}
			t.inflight[n] = c
			go t.run(n, c)
		}
		t.mu.Unlock()
		select {
		case <-c.done:
			return c.data, c.err
		case <-ctx.Done():
			return nil, fmt.Errorf("task %s piece %d: %w", t.id, n, ctx.Err())
		}
	}
}

// adoptFromSibling takes piece n from another task of the same blob (the same blob pushed to
// several repositories has one URL, so one task, per repository): pieces are content-addressed in
// the store, so holding it is a matter of recording it. Only verified pieces of tasks cut the same
// way are taken.
func (t *task) adoptFromSibling(n uint32) bool {
	for _, o := range t.m.siblings(t) {
		o.mu.Lock()
		r, ok := o.held[n]
		o.mu.Unlock()
		if !ok || !r.Verified || o.lay != t.lay || !t.m.store.Has(storeKey(r)) {
			continue
		}
		t.mu.Lock()
		if _, held := t.held[n]; held {
			t.mu.Unlock()
			return true
		}
		t.held[n] = r
		if t.table != nil {
			for _, ci := range t.table.byPiece[n] {
				t.chunkOK[ci] = true
			}
		}
		sess := t.sess
		t.mu.Unlock()
		_ = t.m.index.put(t.id, n, r)
		if sess != nil {
			off, l := t.lay.bounds(n)
			_ = sess.PieceFinished(schedclient.Piece{Number: n, Offset: off, Length: l, Digest: crcDigest(r.CRC32)}, "")
		}
		t.maybeFinished()
		return true
	}
	return false
}

// adoptAll takes every piece other tasks of the same blob hold.
func (t *task) adoptAll() {
	for n := uint32(0); n < t.lay.count; n++ {
		t.mu.Lock()
		_, held := t.held[n]
		t.mu.Unlock()
		if !held {
			t.adoptFromSibling(n)
		}
	}
}

// run fetches a piece on its own context: a piece is worth finishing even if the reader that asked
// went away.
func (t *task) run(n uint32, c *call) {
	ctx, cancel := context.WithTimeout(t.ctx, t.m.cfg.PieceTimeout)
	defer cancel()
	c.data, c.err = t.fetch(ctx, n)
	t.mu.Lock()
	delete(t.inflight, n)
	t.mu.Unlock()
	close(c.done)
}

// waitScheduled waits (bounded) for the scheduler's first answer so that the first reads of a new
// mount go to parents rather than all to the source.
func (t *task) waitScheduled(ctx context.Context) {
	if t.m.sched == nil {
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

// fetch gets piece n from a parent, else from the source, verifies and keeps it.
func (t *task) fetch(ctx context.Context, n uint32) ([]byte, error) {
	t.waitScheduled(ctx)
	off, length := t.lay.bounds(n)
	for _, p := range t.candidates() {
		t0 := time.Now()
		data, err := t.m.fromParent(ctx, t, p, n)
		if err == nil {
			err = t.accept(ctx, n, data, p.PeerID, time.Since(t0))
		}
		if err == nil {
			t.m.met.pieces.WithLabelValues(trafficParent).Inc()
			t.m.met.bytes.WithLabelValues(trafficParent).Add(float64(length))
			return data, nil
		}
		if ctx.Err() != nil && t.ctx.Err() != nil {
			return nil, err
		}
		t.parentFailed(p, n, err)
	}
	if t.m.cfg.DisableBackToSource {
		return nil, fmt.Errorf("task %s piece %d: no parent could serve it and back-to-source is disabled", t.id, n)
	}
	t0 := time.Now()
	data, err := source.ReadFull(ctx, t.src, t.blobID, int64(off), int64(length))
	if err != nil {
		return nil, fmt.Errorf("task %s piece %d back to source: %w", t.id, n, err)
	}
	if err := t.accept(ctx, n, data, "", time.Since(t0)); err != nil {
		return nil, err
	}
	t.m.met.pieces.WithLabelValues(trafficSource).Inc()
	t.m.met.bytes.WithLabelValues(trafficSource).Add(float64(length))
	return data, nil
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
	if left == 0 {
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
	if left == 0 {
		if rerr := sess.Reschedule(blocked, fmt.Sprintf("piece %d: every parent failed", n)); rerr != nil {
			t.log.Debug("reschedule", zap.Error(rerr))
		}
	}
}

// accept verifies piece n's bytes as far as the chunk table allows, keeps them and tells the
// scheduler. A chunk lying wholly inside the piece must match its digest; chunks that straddle a
// neighbouring piece are checked once both are held.
func (t *task) accept(ctx context.Context, n uint32, data []byte, parentID string, cost time.Duration) error {
	off, length := t.lay.bounds(n)
	if uint64(len(data)) != length {
		return fmt.Errorf("task %s piece %d: %d bytes, want %d: %w", t.id, n, len(data), length, ErrBadPiece)
	}
	t.mu.Lock()
	table := t.table
	t.mu.Unlock()
	if table != nil {
		for _, ci := range table.byPiece[n] {
			c := &table.chunks[ci]
			if c.CompressedOffset < off || c.CompressedOffset+uint64(c.CompressedSize) > off+length {
				continue
			}
			if err := t.verifyChunk(table, ci, data, off); err != nil {
				return fmt.Errorf("task %s piece %d (from %s): %w", t.id, n, originName(parentID), err)
			}
		}
	}
	rec := pieceRecord{SHA256: sha256.Sum256(data), CRC32: crc32.ChecksumIEEE(data), Length: length, FromParent: parentID != ""}
	if err := t.m.store.Put(ctx, storeKey(rec), data); err != nil {
		return fmt.Errorf("task %s piece %d: keep: %w", t.id, n, err)
	}
	t.mu.Lock()
	rec.Verified = t.allChunksOKLocked(n)
	if !rec.Verified && parentID != "" {
		t.parentOf[n] = parentID
	}
	t.held[n] = rec
	sess := t.sess
	t.mu.Unlock()
	if err := t.m.index.put(t.id, n, rec); err != nil {
		t.log.Warn("piece index", zap.Error(err))
	}
	if sess != nil {
		if err := sess.PieceFinished(schedclient.Piece{Number: n, Offset: off, Length: length, Digest: crcDigest(rec.CRC32), Cost: cost}, parentID); err != nil {
			t.log.Debug("report piece finished", zap.Error(err))
		}
	}
	if !rec.Verified {
		t.verifyAround(ctx, n)
	}
	t.maybeFinished()
	return nil
}

func originName(parentID string) string {
	if parentID == "" {
		return "source"
	}
	return "parent " + parentID
}

func crcDigest(v uint32) string { return fmt.Sprintf("crc32:%d", v) }

func (t *task) allChunksOKLocked(n uint32) bool {
	if t.table == nil {
		return true
	}
	for _, ci := range t.table.byPiece[n] {
		if !t.chunkOK[ci] {
			return false
		}
	}
	return true
}

// verifyChunk checks chunk ci against bytes that start at blob offset base.
func (t *task) verifyChunk(table *chunkTable, ci int32, data []byte, base uint64) error {
	t.mu.Lock()
	ok := t.chunkOK[ci]
	t.mu.Unlock()
	if ok {
		return nil
	}
	c := &table.chunks[ci]
	if _, err := blob.ReadChunk(source.BytesAt{Data: data, Base: int64(base)}, t.blobID, c, table.blob.Compressor, table.blob.Digester, nil); err != nil {
		return fmt.Errorf("%w: chunk %d at %d: %w", ErrBadPiece, c.Index, c.CompressedOffset, err)
	}
	t.mu.Lock()
	t.chunkOK[ci] = true
	t.mu.Unlock()
	return nil
}

// verifyAround checks the chunks that straddle piece n and its held neighbours, marks the pieces
// whose chunks are now all verified, and drops pieces from parents that fail.
func (t *task) verifyAround(ctx context.Context, n uint32) {
	t.verifyMu.Lock()
	defer t.verifyMu.Unlock()
	t.mu.Lock()
	table := t.table
	t.mu.Unlock()
	if table == nil {
		return
	}
	for _, ci := range table.byPiece[n] {
		t.mu.Lock()
		done := t.chunkOK[ci]
		t.mu.Unlock()
		if done {
			continue
		}
		c := &table.chunks[ci]
		first, last := t.lay.span(c.CompressedOffset, uint64(c.CompressedSize))
		buf, ok := t.assembleHeld(ctx, first, last)
		if !ok {
			continue
		}
		base, _ := t.lay.bounds(first)
		if err := t.verifyChunk(table, ci, buf, base); err != nil {
			t.blame(first, last, err)
			continue
		}
	}
	t.markVerified(n)
}

// assembleHeld concatenates held pieces first..last; ok is false if one is missing.
func (t *task) assembleHeld(ctx context.Context, first, last uint32) ([]byte, bool) {
	var buf []byte
	for p := first; p <= last; p++ {
		t.mu.Lock()
		r, ok := t.held[p]
		t.mu.Unlock()
		if !ok {
			return nil, false
		}
		data, ok, err := t.readHeld(ctx, p, r)
		if err != nil || !ok {
			return nil, false
		}
		buf = append(buf, data...)
	}
	return buf, true
}

// blame drops the pieces among first..last that came from parents after a chunk across them
// failed, and reports those parents; if every piece came from the source, the source is bad.
func (t *task) blame(first, last uint32, err error) {
	dropped := false
	for p := first; p <= last; p++ {
		t.mu.Lock()
		parent, fromParent := t.parentOf[p]
		t.mu.Unlock()
		if !fromParent {
			continue
		}
		dropped = true
		t.forget(p)
		for _, q := range t.parentsByID(parent) {
			t.parentFailed(q, p, err)
		}
	}
	if !dropped {
		t.log.Error("source bytes failed verification", zap.Uint32("first_piece", first), zap.Uint32("last_piece", last), zap.Error(err))
	}
}

func (t *task) parentsByID(id string) []schedclient.Parent {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, p := range t.parents {
		if p.PeerID == id {
			return []schedclient.Parent{p}
		}
	}
	return []schedclient.Parent{{PeerID: id}}
}

// markVerified flips the pieces around n whose chunks are all verified.
func (t *task) markVerified(n uint32) {
	lo, hi := n, n
	if lo > 0 {
		lo--
	}
	if hi+1 < t.lay.count {
		hi++
	}
	for p := lo; p <= hi; p++ {
		t.mu.Lock()
		r, ok := t.held[p]
		flip := ok && !r.Verified && t.allChunksOKLocked(p)
		if flip {
			r.Verified = true
			r.FromParent = false
			t.held[p] = r
			delete(t.parentOf, p)
		}
		t.mu.Unlock()
		if flip {
			_ = t.m.index.put(t.id, p, r)
		}
	}
	t.maybeFinished()
}

// verifiedPiece returns once piece n is held and verified, fetching it and the neighbours its
// straddling chunks need: what another peer asking for the piece waits on.
func (t *task) verifiedPiece(ctx context.Context, n uint32) (pieceRecord, error) {
	if _, err := t.piece(ctx, n); err != nil {
		return pieceRecord{}, err
	}
	for attempt := 0; ; attempt++ {
		t.mu.Lock()
		r, ok := t.held[n]
		var need []uint32
		if ok && !r.Verified && t.table != nil {
			for _, ci := range t.table.byPiece[n] {
				if t.chunkOK[ci] {
					continue
				}
				c := &t.table.chunks[ci]
				first, last := t.lay.span(c.CompressedOffset, uint64(c.CompressedSize))
				for p := first; p <= last; p++ {
					if _, h := t.held[p]; !h {
						need = append(need, p)
					}
				}
			}
		}
		t.mu.Unlock()
		if ok && r.Verified {
			return r, nil
		}
		if attempt >= 3 {
			return pieceRecord{}, fmt.Errorf("task %s piece %d: could not be verified", t.id, n)
		}
		for _, p := range need {
			if _, err := t.piece(ctx, p); err != nil {
				return pieceRecord{}, err
			}
		}
		if !ok {
			if _, err := t.piece(ctx, n); err != nil {
				return pieceRecord{}, err
			}
		}
		t.verifyAround(ctx, n)
	}
}

// read returns bytes [off, off+n) of the blob, every chunk inside them verified.
func (t *task) read(ctx context.Context, off, n uint64) ([]byte, error) {
	if n == 0 {
		return nil, nil
	}
	if off+n > t.lay.size {
		return nil, fmt.Errorf("task %s: [%d,%d) past the blob's %d bytes: %w", t.id, off, off+n, t.lay.size, source.ErrRange)
	}
	first, last := t.lay.span(off, n)
	t.readAhead(first, last)
	if first == last {
		if data, ok, err := t.readFirst(ctx, first, off, n); ok {
			return data, err
		}
	}
	for attempt := 0; ; attempt++ {
		parts := make([][]byte, last-first+1)
		errs := make([]error, len(parts))
		var wg sync.WaitGroup
		sem := make(chan struct{}, t.m.cfg.ReadParallelism)
		for p := first; p <= last; p++ {
			wg.Add(1)
			sem <- struct{}{}
			go func(p uint32) {
				defer wg.Done()
				defer func() { <-sem }()
				parts[p-first], errs[p-first] = t.piece(ctx, p)
			}(p)
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
		base, _ := t.lay.bounds(first)
		buf := parts[0]
		if len(parts) > 1 {
			buf = make([]byte, 0, int(t.lay.pieceLength)*len(parts))
			for _, p := range parts {
				buf = append(buf, p...)
			}
		}
		bad := t.verifySpan(buf, base, first, last)
		if bad == nil {
			return buf[off-base : off-base+n], nil
		}
		if attempt >= 2 {
			return nil, bad
		}
	}
}

// readFirst serves a small read of a piece nobody holds or fetches, when it would come from the
// source anyway: the reader's bytes are fetched first and returned at once (the caller, the
// fetcher, verifies its chunks), and the rest of the piece follows in the background in one or two
// more ranged requests, so the piece is still fetched exactly once. ok is false when the read must
// take the normal path.
func (t *task) readFirst(ctx context.Context, p uint32, off, n uint64) ([]byte, bool, error) {
	pOff, pLen := t.lay.bounds(p)
	if n > pLen/4 || t.m.cfg.DisableBackToSource {
		return nil, false, nil
	}
	t.mu.Lock()
	_, held := t.held[p]
	_, running := t.inflight[p]
	answered := t.answered
	t.mu.Unlock()
	if held || running {
		return nil, false, nil
	}
	if !answered {
		t.waitScheduled(ctx)
	}
	if len(t.candidates()) > 0 {
		return nil, false, nil
	}
	t.mu.Lock()
	if _, running := t.inflight[p]; running {
		t.mu.Unlock()
		return nil, false, nil
	}
	if _, held := t.held[p]; held {
		t.mu.Unlock()
		return nil, false, nil
	}
	c := &call{done: make(chan struct{})}
	t.inflight[p] = c
	t.mu.Unlock()

	finish := func(data []byte, err error) {
		c.data, c.err = data, err
		t.mu.Lock()
		delete(t.inflight, p)
		t.mu.Unlock()
		close(c.done)
	}
	t0 := time.Now()
	head, err := source.ReadFull(ctx, t.src, t.blobID, int64(off), int64(n))
	if err != nil {
		// Let the normal path (and its retries) have the piece.
		finish(nil, fmt.Errorf("task %s piece %d back to source: %w", t.id, p, err))
		return nil, false, nil
	}
	go func() {
		fctx, cancel := context.WithTimeout(t.ctx, t.m.cfg.PieceTimeout)
		defer cancel()
		piece := make([]byte, pLen)
		copy(piece[off-pOff:], head)
		for _, r := range [][2]uint64{{pOff, off}, {off + n, pOff + pLen}} {
			if r[1] <= r[0] {
				continue
			}
			b, err := source.ReadFull(fctx, t.src, t.blobID, int64(r[0]), int64(r[1]-r[0]))
			if err != nil {
				finish(nil, fmt.Errorf("task %s piece %d back to source: %w", t.id, p, err))
				return
			}
			copy(piece[r[0]-pOff:], b)
		}
		if err := t.accept(fctx, p, piece, "", time.Since(t0)); err != nil {
			finish(nil, err)
			return
		}
		t.m.met.pieces.WithLabelValues(trafficSource).Inc()
		t.m.met.bytes.WithLabelValues(trafficSource).Add(float64(pLen))
		finish(piece, nil)
	}()
	return head, true, nil
}

// readAheadPieces is how many pieces past a sequential read are fetched in the background, so a
// reader streaming through a blob (or the peers behind it) keeps the link busy.
const readAheadPieces = 2

// readAhead starts fetching the pieces after last when reads move forward through the blob.
func (t *task) readAhead(first, last uint32) {
	t.mu.Lock()
	// Crossing into the next piece is what a stream looks like; reads within one piece, or
	// jumping about, are not (and must not cost the link pieces nobody asked for).
	sequential := t.readSeen && first == t.lastPiece+1
	t.lastPiece, t.readSeen = last, true
	t.mu.Unlock()
	if !sequential {
		return
	}
	for n := last + 1; n <= last+readAheadPieces && n < t.lay.count; n++ {
		t.warm(n)
	}
}

// warm starts fetching piece n in the background unless it is held or already on its way.
func (t *task) warm(n uint32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.held[n]; ok {
		return
	}
	if _, ok := t.inflight[n]; ok {
		return
	}
	c := &call{done: make(chan struct{})}
	t.inflight[n] = c
	go t.run(n, c)
}

// verifySpan checks the unverified chunks lying wholly inside buf (pieces first..last); on a
// failure it drops the parent pieces involved so the next attempt fetches them elsewhere.
func (t *task) verifySpan(buf []byte, base uint64, first, last uint32) error {
	t.mu.Lock()
	table := t.table
	t.mu.Unlock()
	if table == nil {
		return nil
	}
	end := base + uint64(len(buf))
	seen := map[int32]bool{}
	var firstErr error
	for p := first; p <= last; p++ {
		for _, ci := range table.byPiece[p] {
			if seen[ci] {
				continue
			}
			seen[ci] = true
			c := &table.chunks[ci]
			if c.CompressedOffset < base || c.CompressedOffset+uint64(c.CompressedSize) > end {
				continue
			}
			if err := t.verifyChunk(table, ci, buf, base); err != nil {
				cf, cl := t.lay.span(c.CompressedOffset, uint64(c.CompressedSize))
				t.blame(cf, cl, err)
				if firstErr == nil {
					firstErr = err
				}
			}
		}
	}
	for p := first; p <= last; p++ {
		t.markVerified(p)
	}
	return firstErr
}

// maybeFinished tells the scheduler once every piece is held and verified. Pieces that hold no
// chunk of a mounted image (the blob's ToC and chunk table) are never read through the file
// system: once every other piece is held they are fetched here, so the peer completes the task
// (the scheduler counts a task as succeeded only when a peer finished all of it).
func (t *task) maybeFinished() {
	t.mu.Lock()
	if t.finished || t.sess == nil || !t.answered {
		t.mu.Unlock()
		return
	}
	if uint32(len(t.held)) < t.lay.count {
		var rest []uint32
		if t.table != nil && !t.completing {
			for n := uint32(0); n < t.lay.count; n++ {
				if _, ok := t.held[n]; ok {
					continue
				}
				if len(t.table.byPiece[n]) > 0 {
					rest = nil
					break
				}
				rest = append(rest, n)
			}
		}
		if len(rest) > 0 {
			t.completing = true
		}
		t.mu.Unlock()
		if len(rest) > 0 {
			go func() {
				for _, n := range rest {
					if _, err := t.piece(t.ctx, n); err != nil {
						t.log.Debug("completing the task", zap.Uint32("piece", n), zap.Error(err))
						return
					}
				}
			}()
		}
		return
	}
	for _, r := range t.held {
		if !r.Verified {
			t.mu.Unlock()
			return
		}
	}
	t.finished = true
	sess, back := t.sess, t.back
	t.mu.Unlock()
	if err := sess.Finished(back); err != nil {
		t.log.Debug("report finished", zap.Error(err))
	}
	t.log.Info("task complete", zap.Uint32("pieces", t.lay.count), zap.Uint64("bytes", t.lay.size))
}
