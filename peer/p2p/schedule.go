package p2p

import (
	"hash/crc32"
	"io"
	"strconv"

	"go.uber.org/zap"

	schedclient "github.com/dfnydus/dfnydus/scheduler-client"
)

// schedule registers the task with the scheduler and follows its answers for the session's life.
// The session heals itself across scheduler outages (schedclient re-registers with backoff); while
// it has no scheduler the task reads from the source.
func (t *task) schedule() {
	spec := schedclient.TaskSpec{TaskID: t.id, PeerID: t.peerID, URL: t.url, Digest: "sha256:" + t.blobID,
		PieceLength: t.lay.pieceLength, ContentLength: t.lay.size, PieceCount: t.lay.count, NeedBackToSource: t.backToSource}
	answered := func() {
		t.mu.Lock()
		first := !t.answered
		t.answered = true
		t.mu.Unlock()
		if first {
			close(t.scheduled)
		}
	}
	defer answered()
	sess, err := t.m.sched.Register(t.ctx, spec)
	if err != nil {
		t.log.Warn("scheduler register failed: reading from the source", zap.Error(err))
		return
	}
	t.mu.Lock()
	if t.ctx.Err() != nil {
		t.mu.Unlock()
		_ = sess.Close()
		return
	}
	t.sess = sess
	t.mu.Unlock()
	started := false
	for ev := range sess.Events() {
		switch ev.Kind {
		case schedclient.EventParents:
			var ps []schedclient.Parent
			for _, p := range ev.Parents {
				if p.PeerID != t.peerID && p.HostID != t.m.cfg.HostID {
					ps = append(ps, p)
				}
			}
			t.mu.Lock()
			t.parents, t.back = ps, false
			for _, p := range ps {
				delete(t.blocked, p.PeerID) // named again after a reschedule: worth another try
			}
			t.mu.Unlock()
			t.log.Info("scheduler named parents", zap.Int("parents", len(ps)))
			if !started {
				started = true
				_ = sess.Started(false)
			}
		case schedclient.EventBackToSource:
			t.mu.Lock()
			t.parents, t.back = nil, true
			t.mu.Unlock()
			t.log.Info("scheduler: back to source", zap.String("why", ev.Description))
			if !started {
				started = true
				_ = sess.Started(true)
			}
		case schedclient.EventEmpty, schedclient.EventReconnected, schedclient.EventMetadataOnly:
			// Answers follow a re-register as their own events.
		case schedclient.EventDisconnected:
			// The session registers again in the background. Parents named before may still
			// serve (one that is gone fails over to the next, then the source); with none, reads
			// go to the source.
			t.log.Warn("scheduler unreachable: keeping the parents named before, else the source", zap.Error(ev.Err))
		default:
			// The session lost its scheduler: read from the source until it registers again.
			t.mu.Lock()
			t.parents = nil
			t.mu.Unlock()
			t.log.Warn("scheduler session interrupted: reading from the source", zap.Stringer("event", ev.Kind), zap.Error(ev.Err))
		}
		answered()
		t.report()
	}
}

// watch follows the store: each time the blob's verified bytes grow, newly held pieces are
// reported to the scheduler (never on a reader's path), and once every piece is held the task is
// finished. When every piece a read could need is held, the rest (bytes no chunk covers) is
// fetched so the peer completes the task.
func (t *task) watch() {
	ch, cancel := t.bl.Store().Subscribe()
	defer cancel()
	t.report()
	for {
		select {
		case <-t.ctx.Done():
			return
		case <-ch:
			t.report()
		}
	}
}

// report tells the scheduler of pieces held since the last report.
func (t *task) report() {
	t.mu.Lock()
	sess, finished, answered := t.sess, t.finished, t.answered
	t.mu.Unlock()
	if sess == nil || finished || !answered {
		return
	}
	all := true
	for n := uint32(0); n < t.lay.count; n++ {
		t.mu.Lock()
		_, done := t.reported[n]
		t.mu.Unlock()
		if done {
			continue
		}
		if !t.held(n) {
			all = false
			continue
		}
		crc, err := t.pieceCRC(n)
		if err != nil {
			all = false
			continue
		}
		off, l := t.lay.bounds(n)
		t.mu.Lock()
		t.reported[n] = crc
		parent := t.origin[n]
		t.mu.Unlock()
		if err := sess.PieceFinished(schedclient.Piece{Number: n, Offset: off, Length: l, Digest: crcDigest(crc)}, parent); err != nil {
			t.log.Debug("report piece finished", zap.Error(err))
		}
	}
	if !all {
		t.maybeComplete()
		return
	}
	t.mu.Lock()
	if t.finished {
		t.mu.Unlock()
		return
	}
	t.finished = true
	back := t.back
	t.mu.Unlock()
	if err := sess.Finished(back); err != nil {
		t.log.Debug("report finished", zap.Error(err))
	}
	t.log.Info("task complete", zap.Uint32("pieces", t.lay.count), zap.Uint64("bytes", t.lay.size))
}

// maybeComplete fetches the bytes no read needs once every chunk byte of a mounted image is held,
// so the peer finishes the task (the scheduler counts a task as succeeded only when a peer holds
// all of it). The bytes are checked against the blob digest when they are all here.
func (t *task) maybeComplete() {
	t.mu.Lock()
	if t.completing {
		t.mu.Unlock()
		return
	}
	t.mu.Unlock()
	if !t.bl.ChunksVerified() {
		return
	}
	t.mu.Lock()
	if t.completing {
		t.mu.Unlock()
		return
	}
	t.completing = true
	t.mu.Unlock()
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		if err := t.m.f.WaitQuiet(t.ctx); err != nil {
			return
		}
		if err := t.fill(t.ctx, 0, int64(t.lay.size)); err != nil {
			t.log.Debug("completing the task", zap.Error(err))
		}
	}()
}

// pieceCRC returns the crc32 of a held piece (Dragonfly's piece digest), reading it once.
func (t *task) pieceCRC(n uint32) (uint32, error) {
	t.mu.Lock()
	v, ok := t.crc[n]
	t.mu.Unlock()
	if ok {
		return v, nil
	}
	off, l := t.lay.bounds(n)
	rc, err := t.bl.Store().OpenRange(int64(off), int64(l))
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	h := crc32.NewIEEE()
	if _, err := io.Copy(h, rc); err != nil {
		return 0, err
	}
	v = h.Sum32()
	t.mu.Lock()
	t.crc[n] = v
	t.mu.Unlock()
	return v, nil
}

func crcDigest(v uint32) string { return "crc32:" + strconv.FormatUint(uint64(v), 10) }
