package schedclient

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	commonv2 "d7y.io/api/v2/pkg/apis/common/v2"
	schedulerv2 "d7y.io/api/v2/pkg/apis/scheduler/v2"
	"go.uber.org/zap"
)

// ErrSessionEnded is returned by the report methods of a Session that has been closed, or that
// already reported its outcome.
var ErrSessionEnded = errors.New("schedclient: session ended")

// EventKind says what a scheduler answered.
type EventKind int

const (
	// EventParents (NormalTaskResponse): download from Event.Parents.
	EventParents EventKind = iota + 1
	// EventBackToSource (NeedBackToSourceResponse): download from the source.
	EventBackToSource
	// EventEmpty (EmptyTaskResponse): the task is empty; nothing to download.
	EventEmpty
	// EventMetadataOnly (MetadataOnlyResponse): the scheduler recorded the peer without scheduling.
	EventMetadataOnly
	// EventReconnected: after EventDisconnected, the session registered again (on
	// Event.Scheduler), replaying what it had reported; the scheduler's new answer follows as its
	// own event.
	EventReconnected
	// EventError: a scheduler refused the session (an error other than "unreachable", e.g. an
	// invalid request); Event.Err says why. It is not the last event: the session keeps trying,
	// with backoff, like after EventDisconnected. Read from the source meanwhile.
	EventError
	// EventDisconnected: the session has no stream (its scheduler is unreachable or broke the
	// stream, or none answered the first register); Event.Err says why. The session keeps
	// re-registering in the background, forever until Close, and EventReconnected (or, for a
	// session never registered, the scheduler's first answer) follows when one answers. Read from
	// the source meanwhile; parents named before may still serve pieces.
	EventDisconnected
)

func (k EventKind) String() string {
	switch k {
	case EventParents:
		return "parents"
	case EventBackToSource:
		return "back-to-source"
	case EventEmpty:
		return "empty"
	case EventMetadataOnly:
		return "metadata-only"
	case EventReconnected:
		return "reconnected"
	case EventError:
		return "error"
	case EventDisconnected:
		return "disconnected"
	}
	return "EventKind(" + strconv.Itoa(int(k)) + ")"
}

// Parent is a candidate parent the scheduler named.
type Parent struct {
	PeerID, HostID, Hostname, IP string
	// Port is the parent's gRPC upload port (DfdaemonUpload.SyncPieces); DownloadPort its Vortex
	// TCP port.
	Port, DownloadPort int
	// State is the parent peer's state at the scheduler (e.g. "Succeeded", "BackToSource").
	State string

	peer *commonv2.Peer // as the scheduler sent it, for ReschedulePeerRequest
}

// Event is one answer of the scheduler, or a change of the session.
type Event struct {
	Kind        EventKind
	Parents     []Parent
	Description string
	// Scheduler is the address of the scheduler the event came from ("" for EventDisconnected
	// before any scheduler answered).
	Scheduler string
	Err       error
}

type pieceRecord struct {
	piece    Piece
	parentID string
}

type outcome struct {
	finished     bool // else failed
	backToSource bool
	description  string
}

// Session is one peer of one task at the scheduler: a long-lived AnnouncePeer stream on the task's
// scheduler (see the package documentation for the ring). Report progress with its methods and
// read the scheduler's answers from Events. The report methods never wait for the network: they
// record the change and queue it for the session's sender goroutine, which owns the stream. When
// the stream breaks, or no scheduler answers, the session says so (EventDisconnected) and
// re-registers in the background with backoff, the same peer id, replaying Started, every finished
// piece and the outcome, until Close. Its methods are safe for concurrent use.
type Session struct {
	c    *Client
	spec TaskSpec
	log  *zap.Logger

	ctx    context.Context // until Close
	cancel context.CancelFunc
	done   chan struct{} // the run goroutine returned

	mu         sync.Mutex // guards the fields below; never held across network I/O
	addr       string     // scheduler of the open stream; "" while disconnected
	registered bool       // a register was sent once: the scheduler may hold the peer
	lastSched  *scheduler // where it registered last, for the release
	started    *bool      // nil before Started; else its backToSource
	pieces     map[uint32]pieceRecord
	outcome    *outcome
	acked      bool      // the scheduler closed the stream after the outcome
	ackedAt    time.Time // when
	parents    map[string]*commonv2.Peer
	closed     bool
	queue      *reportQueue
	sending    bool          // the sender holds a report it took from the queue
	progress   chan struct{} // closed and replaced when the queue drains or the outcome is acked

	wake   chan struct{} // a report was queued
	events *eventQueue
}

// Register starts a session for spec and returns at once: the session opens its AnnouncePeer
// stream in the background, on the task's scheduler (the ring's pick) or, while that one does not
// answer, the next ones, and the scheduler's answer arrives on Events. It fails only for an
// invalid spec, a closed client or a done ctx, never because schedulers are down (then
// EventDisconnected comes first). The session lives until Close.
func (c *Client) Register(ctx context.Context, spec TaskSpec) (*Session, error) {
	spec, err := spec.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("schedclient: register: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("schedclient: register: %w", err)
	}
	sctx, cancel := context.WithCancel(context.Background())
	s := &Session{
		c: c, spec: spec,
		log:      c.log.With(zap.String("task", spec.TaskID), zap.String("peer", spec.PeerID)),
		ctx:      sctx,
		cancel:   cancel,
		done:     make(chan struct{}),
		pieces:   map[uint32]pieceRecord{},
		parents:  map[string]*commonv2.Peer{},
		queue:    newReportQueue(c.cfg.ReportQueueLimit),
		progress: make(chan struct{}),
		wake:     make(chan struct{}, 1),
		events:   newEventQueue(),
	}
	if err := c.addSession(s); err != nil {
		cancel()
		return nil, err
	}
	go s.events.pump(sctx.Done())
	go s.run()
	return s, nil
}

// PeerID is the session's peer id.
func (s *Session) PeerID() string { return s.spec.PeerID }

// TaskID is the session's task id.
func (s *Session) TaskID() string { return s.spec.TaskID }

// Events delivers the scheduler's answers and the session's connection changes in order. It is
// closed only by Close.
func (s *Session) Events() <-chan Event { return s.events.out }

// Scheduler is the address of the scheduler the session's stream is open on, "" while it has none.
func (s *Session) Scheduler() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Pending is the number of reports queued and not yet handed to a stream (at most
// Config.ReportQueueLimit, plus Started and the outcome).
func (s *Session) Pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queue.len()
}

// Sync waits until every report queued so far was handed to an open stream and, once the outcome
// is reported, until the scheduler acknowledged it by closing the stream. It is for callers (and
// tests) that need the scheduler to have seen the reports; the report methods never wait.
func (s *Session) Sync(ctx context.Context) error {
	for {
		s.mu.Lock()
		ok := s.addr != "" && s.queue.len() == 0 && !s.sending && (s.outcome == nil || s.acked)
		if s.acked {
			ok = true
		}
		closed, progress := s.closed, s.progress
		s.mu.Unlock()
		if ok {
			return nil
		}
		if closed {
			return ErrSessionEnded
		}
		select {
		case <-progress:
		case <-ctx.Done():
			return fmt.Errorf("schedclient: peer %s: reports not delivered: %w", s.spec.PeerID, ctx.Err())
		case <-s.done:
			return ErrSessionEnded
		}
	}
}

// signalProgressLocked wakes Sync callers; s.mu must be held.
func (s *Session) signalProgressLocked() {
	close(s.progress)
	s.progress = make(chan struct{})
}

// enqueue records a report with record (under the lock) and queues it for the sender.
func (s *Session) enqueue(r report, record func()) error {
	if r.req != nil {
		if err := r.req.ValidateAll(); err != nil {
			return fmt.Errorf("schedclient: invalid request: %w", err)
		}
	}
	s.mu.Lock()
	if s.closed || s.outcome != nil {
		s.mu.Unlock()
		return ErrSessionEnded
	}
	if record != nil {
		record()
	}
	s.queue.push(r)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return nil
}

// Started reports that the download began: from parents (DownloadPeerStarted) or from the source
// (DownloadPeerBackToSourceStarted).
func (s *Session) Started(backToSource bool) error {
	return s.enqueue(report{kind: reportState, req: s.startedRequest(backToSource)}, func() { s.started = &backToSource })
}

// PieceFinished reports a downloaded piece: from parent parentID (DownloadPieceFinished) or, with
// parentID "", from the source (DownloadPieceBackToSourceFinished; the scheduler then lists it in
// the task's pieces). Reported pieces are replayed after a re-register. When the queue is full the
// oldest queued piece is dropped from it (see the package documentation).
func (s *Session) PieceFinished(p Piece, parentID string) error {
	if p.CreatedAt.IsZero() {
		p.CreatedAt = time.Now()
	}
	if err := s.pieceRequest(p, parentID).ValidateAll(); err != nil {
		return fmt.Errorf("schedclient: invalid request: %w", err)
	}
	return s.enqueue(report{kind: reportPiece, number: p.Number}, func() {
		if old, ok := s.pieces[p.Number]; ok {
			p.CreatedAt = old.piece.CreatedAt
		}
		s.pieces[p.Number] = pieceRecord{piece: p, parentID: parentID}
	})
}

// PieceFailed reports a piece that could not be downloaded from parent parentID
// (DownloadPieceFailed; temporary asks the scheduler to block that parent for this peer) or, with
// parentID "", from the source (DownloadPieceBackToSourceFailed). It is advice for the current
// stream: not replayed after a re-register.
func (s *Session) PieceFailed(number uint32, parentID string, temporary bool) error {
	return s.enqueue(report{kind: reportAdvice, req: s.pieceFailedRequest(number, parentID, temporary)}, nil)
}

// Reschedule asks for other parents, never the blocked ones (ReschedulePeerRequest). The
// scheduler answers with EventParents, or EventBackToSource once its retries find none. Like
// PieceFailed it is not replayed: a re-registered session gets a fresh answer anyway.
func (s *Session) Reschedule(blocked []Parent, description string) error {
	s.mu.Lock()
	cands := make([]*commonv2.Peer, 0, len(blocked))
	for _, p := range blocked {
		known := p.peer
		if known == nil {
			known = s.parents[p.PeerID]
		}
		if known == nil || known.ValidateAll() != nil {
			known = s.placeholderPeer(p)
		}
		cands = append(cands, known)
	}
	s.mu.Unlock()
	return s.enqueue(report{kind: reportAdvice, req: s.rescheduleRequest(cands, description)}, nil)
}

// Finished reports that every piece is downloaded (DownloadPeer[BackToSource]Finished; a
// back-to-source finish without a range makes the task Succeeded). It returns once queued; Sync
// waits for the scheduler's acknowledgement. No report is accepted afterwards, but the session
// (and the peer at the scheduler, a parent for others) stays until Close.
func (s *Session) Finished(backToSource bool) error {
	return s.conclude(outcome{finished: true, backToSource: backToSource})
}

// Failed reports that the download failed (DownloadPeer[BackToSource]Failed; a back-to-source
// failure also marks the task Failed). It returns once queued, like Finished.
func (s *Session) Failed(backToSource bool, description string) error {
	return s.conclude(outcome{backToSource: backToSource, description: description})
}

func (s *Session) conclude(o outcome) error {
	return s.enqueue(report{kind: reportState, req: s.outcomeRequest(o)}, func() { s.outcome = &o })
}

// Close ends the session: it stops the stream and, if the peer registered, deletes it from its
// scheduler (DeletePeer, best effort, bounded by releaseTimeout) so that the scheduler stops
// naming it as a parent. Events is closed. Close is idempotent and waits for the session's
// goroutine.
func (s *Session) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	<-s.done
	return nil
}

// event converts an answer and remembers the named parents.
func (s *Session) event(resp *schedulerv2.AnnouncePeerResponse, addr string) (Event, bool) {
	switch r := resp.GetResponse().(type) {
	case *schedulerv2.AnnouncePeerResponse_NormalTaskResponse:
		ev := Event{Kind: EventParents, Scheduler: addr}
		s.mu.Lock()
		for _, p := range r.NormalTaskResponse.GetCandidateParents() {
			s.parents[p.GetId()] = p
			ev.Parents = append(ev.Parents, Parent{
				PeerID: p.GetId(), HostID: p.GetHost().GetId(), Hostname: p.GetHost().GetHostname(),
				IP: p.GetHost().GetIp(), Port: int(p.GetHost().GetPort()), DownloadPort: int(p.GetHost().GetDownloadPort()),
				State: p.GetState(), peer: p,
			})
		}
		s.mu.Unlock()
		return ev, true
	case *schedulerv2.AnnouncePeerResponse_NeedBackToSourceResponse:
		return Event{Kind: EventBackToSource, Scheduler: addr, Description: r.NeedBackToSourceResponse.GetDescription()}, true
	case *schedulerv2.AnnouncePeerResponse_EmptyTaskResponse:
		return Event{Kind: EventEmpty, Scheduler: addr}, true
	case *schedulerv2.AnnouncePeerResponse_MetadataOnlyResponse:
		return Event{Kind: EventMetadataOnly, Scheduler: addr}, true
	}
	s.log.Warn("unknown answer from the scheduler", zap.String("scheduler", addr), zap.Any("response", resp))
	return Event{}, false
}
