package schedclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"time"

	schedulerv2 "d7y.io/api/v2/pkg/apis/scheduler/v2"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// releaseTimeout bounds the DeletePeer a closing session sends: Close runs at unmount, which must
// not hang on a scheduler that is gone.
const releaseTimeout = 2 * time.Second

// errAcknowledged ends serve when the scheduler closed the stream after the outcome.
var errAcknowledged = errors.New("outcome acknowledged")

// errMoveBack ends serve when a scheduler before the current one in the task's ring order
// accepted the host again: the Rust peers send the task there again, so this peer follows.
var errMoveBack = errors.New("the task's scheduler is back")

// backoff is exponential with jitter: each pause is drawn from [d/2, d] where d doubles from base
// up to max. Many peers that lost the same scheduler then come back spread out, not in a burst.
type backoff struct {
	base, max, cur time.Duration
}

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.base
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	half := b.cur / 2
	return half + rand.N(b.cur-half+1)
}

func (b *backoff) reset() { b.cur = 0 }

// stream is one open AnnouncePeer stream.
type stream struct {
	sc     *scheduler
	st     schedulerv2.Scheduler_AnnouncePeerClient
	cancel context.CancelFunc
}

// stableStream is how long a stream must have lived for its end to be retried at once; one that
// ends sooner is retried after the backoff pause, so a scheduler that takes streams and drops them
// at once is not hammered.
const stableStream = 10 * time.Second

// run owns the session's stream: it registers (on the task's schedulers in ring order), sends the
// queued reports, turns answers into events, and re-registers with backoff whenever the stream
// breaks, until Close. Then it releases the peer.
func (s *Session) run() {
	defer close(s.done)
	defer s.c.removeSession(s)
	defer s.events.end()
	bo := backoff{base: s.c.cfg.ReconnectBackoff, max: s.c.cfg.MaxReconnectBackoff}
	down := false  // EventDisconnected was sent for the current outage
	moved := false // the last stream was left for the task's ring pick, which came back
	for s.ctx.Err() == nil {
		s.mu.Lock()
		acked := s.acked
		s.mu.Unlock()
		if acked {
			// The scheduler has the outcome; the peer stays there (a parent for others) until
			// Close releases it, unless the scheduler goes away and comes back without it (a
			// restart forgets every peer): then the finished peer registers again, replaying its
			// pieces and outcome, so that it is a parent again.
			if !s.waitLost() {
				break
			}
			s.mu.Lock()
			s.acked = false
			s.mu.Unlock()
			s.log.Info("the scheduler that held this finished peer was away: registering it again")
			continue
		}
		st, again, err := s.connect()
		if err != nil {
			if s.ctx.Err() != nil {
				break
			}
			if !down {
				down = true
				s.events.push(Event{Kind: disconnectKind(err), Err: err, Description: err.Error()})
			}
			pause := bo.next()
			s.log.Debug("no scheduler took the session; retrying", zap.Duration("pause", pause), zap.Error(err))
			s.sleep(pause)
			continue
		}
		if again && (down || moved) {
			s.events.push(Event{Kind: EventReconnected, Scheduler: st.sc.addr, Description: "registered again"})
		}
		down, moved = false, false
		opened := time.Now()
		err = s.serve(st)
		st.cancel()
		s.mu.Lock()
		s.addr = ""
		s.mu.Unlock()
		if s.ctx.Err() != nil || errors.Is(err, errAcknowledged) {
			continue
		}
		if errors.Is(err, errMoveBack) {
			// Leave no stale peer behind on the scheduler being left.
			ctx, cancel := context.WithTimeout(s.ctx, min(releaseTimeout, s.c.cfg.DialTimeout))
			_, _ = st.sc.client.DeletePeer(ctx, s.deletePeerRequest())
			cancel()
			s.log.Info("moving to the task's scheduler, which is back", zap.String("from", st.sc.addr))
			moved = true
			continue
		}
		if schedulerGone(err) || status.Code(err) == codes.NotFound || err == io.EOF {
			// NotFound: the scheduler lost the host or the peer (a restart, host GC); the next
			// register announces the host again first.
			s.c.markFailed(st.sc)
		}
		s.log.Warn("announce peer stream broke; registering again", zap.String("scheduler", st.sc.addr), zap.Error(err))
		down = true
		s.events.push(Event{Kind: disconnectKind(err), Scheduler: st.sc.addr, Err: err,
			Description: fmt.Sprintf("stream on %s broke: %v", st.sc.addr, err)})
		if time.Since(opened) >= stableStream {
			bo.reset()
		} else {
			s.sleep(bo.next())
		}
	}
	s.release()
}

// disconnectKind: EventError when a live scheduler refused, else EventDisconnected.
func disconnectKind(err error) EventKind {
	var all interface{ Unwrap() []error }
	errs := []error{err}
	if errors.As(err, &all) {
		errs = all.Unwrap()
	}
	for _, e := range errs {
		switch status.Code(e) {
		case codes.InvalidArgument, codes.FailedPrecondition, codes.PermissionDenied, codes.Unauthenticated, codes.AlreadyExists:
			return EventError
		}
	}
	return EventDisconnected
}

// sleep waits for d, a scheduler coming back, or Close.
func (s *Session) sleep(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.c.upSignal():
	case <-s.ctx.Done():
	}
}

// connect registers on the first of the task's schedulers (ring order) that takes the stream and
// replays the session's state there. again is true when the peer had registered before.
func (s *Session) connect() (st *stream, again bool, err error) {
	var errs []error
	for _, i := range s.c.ring.order(s.spec.TaskID) {
		sc := s.c.scheds[i]
		st, again, err := s.connectTo(sc)
		if err == nil {
			return st, again, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", sc.addr, err))
		if s.ctx.Err() != nil {
			break
		}
	}
	return nil, false, fmt.Errorf("%w: %w", ErrNoScheduler, errors.Join(errs...))
}

func (s *Session) connectTo(sc *scheduler) (*stream, bool, error) {
	ctx, cancel := context.WithTimeout(s.ctx, s.c.cfg.DialTimeout)
	defer cancel()
	// The scheduler answers AnnouncePeer with NotFound for a host it does not know (it forgets
	// hosts when it restarts): announce first unless it accepted the host since its last failure.
	if err := s.c.ensureAnnounced(ctx, sc); err != nil {
		return nil, false, err
	}
	s.mu.Lock()
	again := s.registered
	s.mu.Unlock()
	if again {
		// A scheduler that saw this peer keeps it in a state that refuses a second register and
		// has no stream to answer on (service_v2.go handleResource loads the existing peer): drop
		// it first. A scheduler that never saw it answers nil all the same.
		if _, err := sc.client.DeletePeer(ctx, s.deletePeerRequest()); err != nil && schedulerGone(err) {
			s.c.markFailed(sc)
			return nil, again, fmt.Errorf("delete stale peer: %w", err)
		}
	}
	sctx, scancel := context.WithCancel(s.ctx)
	// Opening a stream waits while the connection is being made: bound it.
	timer := time.AfterFunc(s.c.cfg.DialTimeout, scancel)
	st, err := sc.client.AnnouncePeer(sctx)
	if err == nil {
		err = st.Send(s.registerRequest())
		if err == io.EOF {
			_, err = st.Recv() // the stream's real status
		}
	}
	if !timer.Stop() && err == nil {
		err = status.Error(codes.Unavailable, "opening the stream timed out")
	}
	if err != nil {
		scancel()
		if schedulerGone(err) {
			s.c.markFailed(sc)
		}
		return nil, again, fmt.Errorf("announce peer: %w", err)
	}
	// From here on the scheduler holds the peer; the state is replayed by serve before anything
	// queued, and the queue (which the replay covers) is emptied.
	s.mu.Lock()
	s.registered, s.lastSched, s.addr = true, sc, sc.addr
	s.sending = true // the replay is due: Sync must not see an idle stream before it
	s.mu.Unlock()
	return &stream{sc: sc, st: st, cancel: scancel}, again, nil
}

// replayLocked is what the session reported so far, in order: started, pieces, outcome; s.mu must
// be held.
func (s *Session) replayLocked() []*schedulerv2.AnnouncePeerRequest {
	var reqs []*schedulerv2.AnnouncePeerRequest
	if s.started != nil {
		reqs = append(reqs, s.startedRequest(*s.started))
	}
	nums := make([]uint32, 0, len(s.pieces))
	for n := range s.pieces {
		nums = append(nums, n)
	}
	slices.Sort(nums)
	for _, n := range nums {
		r := s.pieces[n]
		reqs = append(reqs, s.pieceRequest(r.piece, r.parentID))
	}
	if s.outcome != nil {
		reqs = append(reqs, s.outcomeRequest(*s.outcome))
	}
	return reqs
}

// serve replays the state on a newly registered stream, then sends queued reports as they come
// and delivers answers, until the stream ends or the session closes. It returns the stream's
// error, or errAcknowledged once the scheduler closed the stream after the outcome.
func (s *Session) serve(st *stream) error {
	recvErr := make(chan error, 1)
	go func() {
		for {
			resp, err := st.st.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			if ev, ok := s.event(resp, st.sc.addr); ok {
				s.events.push(ev)
			}
		}
	}()
	// The first batch is the replay: the queue holds nothing the replay lacks.
	s.mu.Lock()
	batch := s.replayLocked()
	outcomeInBatch := s.outcome != nil
	s.queue.reset()
	s.sending = true
	s.mu.Unlock()
	outcomeSent, broken := false, false
	for {
		for _, req := range batch {
			if err := st.st.Send(req); err != nil {
				// The stream is broken; Recv reports why. Nothing more is sent on it: the next
				// register replays the state.
				broken = true
				break
			}
		}
		if !broken && outcomeInBatch {
			outcomeSent = true
		}
		s.mu.Lock()
		var r report
		ok := false
		if !broken {
			r, ok = s.queue.pop()
		}
		batch, outcomeInBatch = nil, false
		if ok {
			batch = []*schedulerv2.AnnouncePeerRequest{s.requestLocked(r)}
			outcomeInBatch = r.kind == reportState && isOutcome(r.req)
		} else if !broken {
			if dropped := s.queue.dropped; dropped > 0 {
				s.queue.dropped = 0
				s.log.Debug("report queue was full; dropped reports are replayed at the next register", zap.Int("dropped", dropped))
			}
			s.signalProgressLocked()
		}
		s.sending = ok
		s.mu.Unlock()
		if ok {
			continue
		}
		// The signal is taken before the check: a scheduler that came back while this loop was
		// sending is seen by the check, one that comes back later closes up.
		up := s.c.upSignal()
		if s.betterScheduler(st.sc) {
			return errMoveBack
		}
		select {
		case <-s.wake:
		case <-up:
			if s.betterScheduler(st.sc) {
				return errMoveBack
			}
		case err := <-recvErr:
			return s.streamEnded(err, outcomeSent)
		case <-s.ctx.Done():
			st.cancel()
			<-recvErr
			return s.ctx.Err()
		}
	}
}

// betterScheduler: a scheduler before cur in the task's ring order holds the host again.
func (s *Session) betterScheduler(cur *scheduler) bool {
	for _, i := range s.c.ring.order(s.spec.TaskID) {
		sc := s.c.scheds[i]
		if sc == cur {
			return false
		}
		sc.mu.Lock()
		ok := sc.announcedLocked()
		sc.mu.Unlock()
		if ok {
			return true
		}
	}
	return false
}

// streamEnded interprets the end of a stream.
func (s *Session) streamEnded(err error, outcomeSent bool) error {
	if err == io.EOF && outcomeSent {
		s.mu.Lock()
		s.acked = true
		s.ackedAt = time.Now()
		s.signalProgressLocked()
		s.mu.Unlock()
		return errAcknowledged
	}
	return err
}

// requestLocked is the request of a queued report; s.mu must be held.
func (s *Session) requestLocked(r report) *schedulerv2.AnnouncePeerRequest {
	if r.kind == reportPiece {
		rec := s.pieces[r.number]
		return s.pieceRequest(rec.piece, rec.parentID)
	}
	return r.req
}

func isOutcome(req *schedulerv2.AnnouncePeerRequest) bool {
	switch req.GetRequest().(type) {
	case *schedulerv2.AnnouncePeerRequest_DownloadPeerFinishedRequest,
		*schedulerv2.AnnouncePeerRequest_DownloadPeerBackToSourceFinishedRequest,
		*schedulerv2.AnnouncePeerRequest_DownloadPeerFailedRequest,
		*schedulerv2.AnnouncePeerRequest_DownloadPeerBackToSourceFailedRequest:
		return true
	}
	return false
}

// release tells the scheduler the peer is gone (best effort): it stops naming it as a parent
// and drops it without waiting for its peer GC.
func (s *Session) release() {
	s.mu.Lock()
	sc, registered := s.lastSched, s.registered
	s.mu.Unlock()
	if !registered || sc == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), min(releaseTimeout, s.c.cfg.DialTimeout))
	defer cancel()
	if _, err := sc.client.DeletePeer(ctx, s.deletePeerRequest()); err != nil {
		s.log.Debug("delete peer failed", zap.String("scheduler", sc.addr), zap.Error(err))
	}
}

// waitLost waits until the scheduler that acknowledged the session's outcome fails and accepts
// the host again (true), or the session closes (false).
func (s *Session) waitLost() bool {
	for {
		up := s.c.upSignal()
		s.mu.Lock()
		sc, at := s.lastSched, s.ackedAt
		s.mu.Unlock()
		if sc != nil {
			sc.mu.Lock()
			lost := sc.failAt.After(at) && sc.announcedLocked()
			sc.mu.Unlock()
			if lost {
				return true
			}
		}
		select {
		case <-up:
		case <-s.ctx.Done():
			return false
		}
	}
}
