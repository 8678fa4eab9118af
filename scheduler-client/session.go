package schedclient

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"strconv"
	"sync"
	"time"

	commonv2 "d7y.io/api/v2/pkg/apis/common/v2"
	errordetailsv2 "d7y.io/api/v2/pkg/apis/errordetails/v2"
	schedulerv2 "d7y.io/api/v2/pkg/apis/scheduler/v2"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Piece lengths the scheduler accepts in common.v2.Download.piece_length.
const (
	MinPieceLength = 4 << 20
	MaxPieceLength = 64 << 20
)

// ErrSessionEnded is returned by the methods of a Session that has finished, failed, lost every
// scheduler or been closed.
var ErrSessionEnded = errors.New("schedclient: session ended")

// TaskSpec describes the download a Session registers (common.v2.Download).
type TaskSpec struct {
	// TaskID is the Dragonfly task id (see TaskID); required.
	TaskID string
	// PeerID defaults to a new PeerID().
	PeerID string
	// URL is the source URL (required); Digest is "algorithm:hex" of the whole content, optional.
	URL, Digest string
	// PieceLength is the fixed piece length, MinPieceLength..MaxPieceLength (required).
	PieceLength uint64
	// ContentLength and PieceCount are the task's size. The scheduler takes them from the first
	// register of the task (the finish messages carry no sizes since api v2.2.x), and treats
	// ContentLength 0 as an empty task (EventEmpty). PieceCount defaults to
	// ceil(ContentLength / PieceLength).
	ContentLength uint64
	PieceCount    uint32
	// Priority selects what the scheduler does for a new task when seed peers exist: LEVEL6, LEVEL0,
	// LEVEL5 and LEVEL4 trigger a seed peer download, LEVEL3 sends this peer back to source.
	Priority commonv2.Priority
	// NeedBackToSource asks to download from the source; DisableBackToSource forbids it.
	NeedBackToSource, DisableBackToSource bool
	// RequestHeader is passed on to whoever downloads from the source (seed peers).
	RequestHeader map[string]string
	// Prefetch marks a prefetch download (common.v2.Download.is_prefetch).
	Prefetch bool
}

func (spec TaskSpec) withDefaults() (TaskSpec, error) {
	if spec.TaskID == "" || spec.URL == "" {
		return spec, errors.New("task spec needs a task id and a URL")
	}
	if spec.PieceLength < MinPieceLength || spec.PieceLength > MaxPieceLength {
		return spec, fmt.Errorf("piece length %d is outside %d..%d", spec.PieceLength, MinPieceLength, MaxPieceLength)
	}
	if spec.PeerID == "" {
		spec.PeerID = PeerID()
	}
	if spec.PieceCount == 0 && spec.ContentLength > 0 {
		spec.PieceCount = uint32((spec.ContentLength + spec.PieceLength - 1) / spec.PieceLength)
	}
	return spec, nil
}

// download is the register's common.v2.Download.
func (spec TaskSpec) download() *commonv2.Download {
	d := &commonv2.Download{
		Url:                 spec.URL,
		Type:                commonv2.TaskType_STANDARD,
		Priority:            spec.Priority,
		RequestHeader:       spec.RequestHeader,
		PieceLength:         proto.Uint64(spec.PieceLength),
		NeedBackToSource:    spec.NeedBackToSource,
		DisableBackToSource: spec.DisableBackToSource,
		IsPrefetch:          spec.Prefetch,
		ActualPieceLength:   proto.Uint64(spec.PieceLength),
		ActualContentLength: proto.Uint64(spec.ContentLength),
		ActualPieceCount:    proto.Uint64(uint64(spec.PieceCount)),
	}
	if spec.Digest != "" {
		d.Digest = proto.String(spec.Digest)
	}
	return d
}

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
	// EventReconnected: the stream broke and the session registered again (on Event.Scheduler),
	// replaying what it had reported; the scheduler's new answer follows as its own event.
	EventReconnected
	// EventError: the session ended without an outcome (every scheduler is gone, or the scheduler
	// refused the session); Event.Err says why. It is the last event. Go back to source.
	EventError
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
	// Scheduler is the address of the scheduler the event came from.
	Scheduler string
	Err       error
}

// Piece is a downloaded piece, as reported to the scheduler.
type Piece struct {
	Number         uint32
	Offset, Length uint64
	// Digest is "crc32:<decimal>" like the Rust peer (see PieceDigest), or another "algo:hex".
	Digest string
	// Cost is how long the download took.
	Cost time.Duration
	// CreatedAt defaults to the time of the first report.
	CreatedAt time.Time
}

// PieceDigest is the digest the Rust peer reports for piece bytes: "crc32:" and the CRC-32 (IEEE)
// in decimal.
func PieceDigest(data []byte) string {
	return "crc32:" + strconv.FormatUint(uint64(crc32.ChecksumIEEE(data)), 10)
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

// Session is one peer of one task at the scheduler: a long-lived AnnouncePeer stream. Report
// progress with its methods and read the scheduler's answers from Events. If the stream breaks,
// the session registers again (same peer id) on the first scheduler that answers, replays Started,
// every finished piece and the outcome, and carries on; only when no scheduler is left does it end
// with EventError. Its methods are safe for concurrent use. Close it when done.
type Session struct {
	c    *Client
	spec TaskSpec
	log  *zap.Logger

	ctx    context.Context // until Close
	cancel context.CancelFunc

	mu           sync.Mutex // guards the fields below and serialises Send
	stream       schedulerv2.Scheduler_AnnouncePeerClient
	streamCancel context.CancelFunc
	gen          uint64 // client generation the stream was opened in
	addr         string // scheduler of the stream
	opened       bool   // a stream was opened before: the scheduler may still hold the peer
	started      *bool  // nil before Started; else its backToSource
	pieces       map[uint32]pieceRecord
	outcome      *outcome
	parents      map[string]*commonv2.Peer
	ended        bool // no more reports accepted
	endErr       error

	events   *eventQueue
	recvDone chan struct{}
}

// Register opens an AnnouncePeer stream on the scheduler in use (or the next that answers) and
// sends RegisterPeerRequest for spec. The scheduler's answer arrives on Events. The session lives
// until Close (or its outcome), not until ctx ends; ctx bounds only the registration.
func (c *Client) Register(ctx context.Context, spec TaskSpec) (*Session, error) {
	spec, err := spec.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("schedclient: register: %w", err)
	}
	sctx, cancel := context.WithCancel(context.Background())
	s := &Session{
		c: c, spec: spec,
		log:      c.log.With(zap.String("task", spec.TaskID), zap.String("peer", spec.PeerID)),
		ctx:      sctx,
		cancel:   cancel,
		pieces:   map[uint32]pieceRecord{},
		parents:  map[string]*commonv2.Peer{},
		events:   newEventQueue(),
		recvDone: make(chan struct{}),
	}
	if err := c.addSession(s); err != nil {
		cancel()
		return nil, err
	}
	idx, gen := c.current()
	if err := s.establish(ctx, idx, gen); err != nil {
		c.removeSession(s)
		cancel()
		return nil, fmt.Errorf("schedclient: register peer %s of task %s: %w", spec.PeerID, spec.TaskID, err)
	}
	go s.events.pump(sctx.Done())
	go s.recvLoop()
	return s, nil
}

// PeerID is the session's peer id.
func (s *Session) PeerID() string { return s.spec.PeerID }

// TaskID is the session's task id.
func (s *Session) TaskID() string { return s.spec.TaskID }

// Events delivers the scheduler's answers in order. It is closed after the last event, when the
// session ends (outcome acknowledged, EventError, or Close).
func (s *Session) Events() <-chan Event { return s.events.out }

// Scheduler is the address of the scheduler the session is registered on.
func (s *Session) Scheduler() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// establish opens a stream, starting at scheduler idx (chosen in generation gen) and moving on to
// the next scheduler that answers while they are unreachable.
func (s *Session) establish(ctx context.Context, idx int, gen uint64) error {
	var errs []error
	for attempt := 0; attempt <= len(s.c.clients); attempt++ {
		if idx < 0 {
			var err error
			if idx, gen, err = s.c.recover(ctx, gen); err != nil {
				return errors.Join(append(errs, err)...)
			}
		}
		err := s.connect(ctx, idx, gen)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
		if !schedulerGone(err) || ctx.Err() != nil {
			return errors.Join(errs...)
		}
		idx = -1
	}
	return errors.Join(errs...)
}

// connect opens a stream to scheduler idx, registers, and replays what the session reported.
func (s *Session) connect(ctx context.Context, idx int, gen uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return ErrSessionEnded
	}
	cl, addr := s.c.clients[idx], s.c.cfg.Addrs[idx]
	if s.opened {
		// A scheduler that saw this peer before keeps it in a state that refuses a second register
		// and without a stream to answer on (service_v2.go handleResource loads the existing peer):
		// drop it first. A scheduler that never saw it answers nil all the same.
		dctx, cancel := context.WithTimeout(ctx, s.c.cfg.DialTimeout)
		_, err := cl.DeletePeer(dctx, &schedulerv2.DeletePeerRequest{HostId: s.c.cfg.Host.ID, TaskId: s.spec.TaskID, PeerId: s.spec.PeerID})
		cancel()
		if err != nil && schedulerGone(err) {
			return fmt.Errorf("delete stale peer on %s: %w", addr, err)
		}
	}
	sctx, cancel := context.WithCancel(s.ctx)
	// Opening a stream waits while the connection is being made: bound it.
	timer := time.AfterFunc(s.c.cfg.DialTimeout, cancel)
	stream, err := cl.AnnouncePeer(sctx)
	if err == nil {
		err = stream.Send(s.registerRequest())
		if err == io.EOF {
			_, err = stream.Recv() // the stream's real status
		}
	}
	if !timer.Stop() && err == nil {
		err = status.Error(codes.Unavailable, "opening the stream timed out")
	}
	if err != nil {
		cancel()
		return fmt.Errorf("announce peer on %s: %w", addr, err)
	}
	if s.streamCancel != nil {
		s.streamCancel()
	}
	s.stream, s.streamCancel, s.gen, s.addr, s.opened = stream, cancel, gen, addr, true
	for _, req := range s.replay() {
		if err := stream.Send(req); err != nil {
			break // the receive loop sees the stream's error and starts over
		}
	}
	return nil
}

// replay is what the session reported so far, in order: started, pieces, outcome.
func (s *Session) replay() []*schedulerv2.AnnouncePeerRequest {
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

// recvLoop turns answers into events and re-establishes broken streams.
func (s *Session) recvLoop() {
	defer close(s.recvDone)
	defer s.c.removeSession(s)
	defer s.events.end()
	failures := 0
	for {
		s.mu.Lock()
		stream, gen, addr := s.stream, s.gen, s.addr
		s.mu.Unlock()
		resp, err := stream.Recv()
		if err == nil {
			failures = 0
			if ev, ok := s.event(resp, addr); ok {
				s.events.push(ev)
			}
			continue
		}
		s.mu.Lock()
		done := s.ended || (s.outcome != nil && err == io.EOF)
		if done {
			s.ended = true
			s.mu.Unlock()
			return // Close, or the scheduler closed the stream after the outcome
		}
		s.mu.Unlock()
		if !s.recoverable(err) || failures > len(s.c.clients) {
			s.end(fmt.Errorf("scheduler %s ended the session: %w", addr, err))
			return
		}
		failures++
		s.log.Warn("announce peer stream broke; registering again", zap.String("scheduler", addr), zap.Error(err))
		if rerr := s.reconnect(gen); rerr != nil {
			if errors.Is(rerr, ErrSessionEnded) || s.ctx.Err() != nil {
				return
			}
			s.end(fmt.Errorf("register again after %v: %w", err, rerr))
			return
		}
		s.events.push(Event{Kind: EventReconnected, Scheduler: s.Scheduler(), Description: "registered again after: " + err.Error()})
	}
}

// reconnect looks for a scheduler (the one in use first) and registers there, in rounds with a
// growing pause, for up to Config.ReconnectTimeout.
func (s *Session) reconnect(gen uint64) error {
	deadline := time.Now().Add(s.c.cfg.ReconnectTimeout)
	pause := 100 * time.Millisecond
	for {
		ctx, cancel := context.WithTimeout(s.ctx, time.Duration(len(s.c.clients)+1)*2*s.c.cfg.DialTimeout)
		// recover re-announces the host first (a scheduler that lost it answers NotFound).
		idx, ngen, err := s.c.recover(ctx, gen)
		if err == nil {
			err = s.establish(ctx, idx, ngen)
		}
		cancel()
		if err == nil || errors.Is(err, ErrSessionEnded) || s.ctx.Err() != nil {
			return err
		}
		if time.Now().Add(pause).After(deadline) {
			return err
		}
		s.log.Debug("no scheduler yet", zap.Duration("pause", pause), zap.Error(err))
		select {
		case <-time.After(pause):
		case <-s.ctx.Done():
			return ErrSessionEnded
		}
		pause = min(2*pause, 2*time.Second)
		gen = ngen
	}
}

// recoverable: the scheduler went away (Unavailable), closed the stream without an outcome (EOF),
// or lost the host or peer (NotFound, e.g. after a restart or host GC).
func (s *Session) recoverable(err error) bool {
	if err == io.EOF {
		return true
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.NotFound:
		return true
	}
	return false
}

// end closes the session after a failure and delivers EventError.
func (s *Session) end(err error) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended, s.endErr = true, err
	if s.streamCancel != nil {
		s.streamCancel()
	}
	addr := s.addr
	s.mu.Unlock()
	s.log.Warn("session ended", zap.Error(err))
	s.events.push(Event{Kind: EventError, Scheduler: addr, Err: err, Description: err.Error()})
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

// build is an AnnouncePeerRequest of this session's host, task and peer; set fills its Request
// (the oneof's interface type is unexported in the generated code).
func (s *Session) build(set func(*schedulerv2.AnnouncePeerRequest)) *schedulerv2.AnnouncePeerRequest {
	req := &schedulerv2.AnnouncePeerRequest{HostId: s.c.cfg.Host.ID, TaskId: s.spec.TaskID, PeerId: s.spec.PeerID}
	set(req)
	return req
}

func (s *Session) registerRequest() *schedulerv2.AnnouncePeerRequest {
	return s.build(func(r *schedulerv2.AnnouncePeerRequest) {
		r.Request = &schedulerv2.AnnouncePeerRequest_RegisterPeerRequest{
			RegisterPeerRequest: &schedulerv2.RegisterPeerRequest{Download: s.spec.download()},
		}
	})
}

func (s *Session) startedRequest(backToSource bool) *schedulerv2.AnnouncePeerRequest {
	if backToSource {
		return s.build(func(r *schedulerv2.AnnouncePeerRequest) {
			r.Request = &schedulerv2.AnnouncePeerRequest_DownloadPeerBackToSourceStartedRequest{
				DownloadPeerBackToSourceStartedRequest: &schedulerv2.DownloadPeerBackToSourceStartedRequest{}}
		})
	}
	return s.build(func(r *schedulerv2.AnnouncePeerRequest) {
		r.Request = &schedulerv2.AnnouncePeerRequest_DownloadPeerStartedRequest{
			DownloadPeerStartedRequest: &schedulerv2.DownloadPeerStartedRequest{}}
	})
}

func (s *Session) pieceRequest(p Piece, parentID string) *schedulerv2.AnnouncePeerRequest {
	piece := &commonv2.Piece{
		Number:    p.Number,
		Offset:    p.Offset,
		Length:    p.Length,
		Digest:    p.Digest,
		Cost:      durationpb.New(p.Cost),
		CreatedAt: timestamppb.New(p.CreatedAt),
	}
	if parentID == "" {
		piece.TrafficType = commonv2.TrafficType_BACK_TO_SOURCE.Enum()
		return s.build(func(r *schedulerv2.AnnouncePeerRequest) {
			r.Request = &schedulerv2.AnnouncePeerRequest_DownloadPieceBackToSourceFinishedRequest{
				DownloadPieceBackToSourceFinishedRequest: &schedulerv2.DownloadPieceBackToSourceFinishedRequest{Piece: piece}}
		})
	}
	piece.ParentId = proto.String(parentID)
	piece.TrafficType = commonv2.TrafficType_REMOTE_PEER.Enum()
	return s.build(func(r *schedulerv2.AnnouncePeerRequest) {
		r.Request = &schedulerv2.AnnouncePeerRequest_DownloadPieceFinishedRequest{
			DownloadPieceFinishedRequest: &schedulerv2.DownloadPieceFinishedRequest{Piece: piece}}
	})
}

func (s *Session) outcomeRequest(o outcome) *schedulerv2.AnnouncePeerRequest {
	var desc *string
	if o.description != "" {
		desc = proto.String(o.description)
	}
	switch {
	case o.finished && o.backToSource:
		return s.build(func(r *schedulerv2.AnnouncePeerRequest) {
			r.Request = &schedulerv2.AnnouncePeerRequest_DownloadPeerBackToSourceFinishedRequest{
				DownloadPeerBackToSourceFinishedRequest: &schedulerv2.DownloadPeerBackToSourceFinishedRequest{}}
		})
	case o.finished:
		return s.build(func(r *schedulerv2.AnnouncePeerRequest) {
			r.Request = &schedulerv2.AnnouncePeerRequest_DownloadPeerFinishedRequest{
				DownloadPeerFinishedRequest: &schedulerv2.DownloadPeerFinishedRequest{}}
		})
	case o.backToSource:
		return s.build(func(r *schedulerv2.AnnouncePeerRequest) {
			r.Request = &schedulerv2.AnnouncePeerRequest_DownloadPeerBackToSourceFailedRequest{
				DownloadPeerBackToSourceFailedRequest: &schedulerv2.DownloadPeerBackToSourceFailedRequest{Description: desc}}
		})
	default:
		return s.build(func(r *schedulerv2.AnnouncePeerRequest) {
			r.Request = &schedulerv2.AnnouncePeerRequest_DownloadPeerFailedRequest{
				DownloadPeerFailedRequest: &schedulerv2.DownloadPeerFailedRequest{Description: desc}}
		})
	}
}

// sendLocked sends req on the current stream; s.mu must be held. A send on a broken stream is
// not an error: the receive loop re-registers and replays the recorded state.
func (s *Session) sendLocked(req *schedulerv2.AnnouncePeerRequest) {
	if err := s.stream.Send(req); err != nil {
		s.log.Debug("send on a broken stream; it will be replayed", zap.Error(err))
	}
}

// report validates req, records the state change with record and sends req.
func (s *Session) report(req *schedulerv2.AnnouncePeerRequest, record func()) error {
	if err := req.ValidateAll(); err != nil {
		return fmt.Errorf("schedclient: invalid request: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended || s.outcome != nil {
		return ErrSessionEnded
	}
	if record != nil {
		record()
	}
	s.sendLocked(req)
	return nil
}

// Started reports that the download began: from parents (DownloadPeerStarted) or from the source
// (DownloadPeerBackToSourceStarted).
func (s *Session) Started(backToSource bool) error {
	return s.report(s.startedRequest(backToSource), func() { s.started = &backToSource })
}

// PieceFinished reports a downloaded piece: from parent parentID (DownloadPieceFinished) or, with
// parentID "", from the source (DownloadPieceBackToSourceFinished; the scheduler then lists it in
// the task's pieces). Reported pieces are replayed after a reconnect.
func (s *Session) PieceFinished(p Piece, parentID string) error {
	s.mu.Lock()
	if old, ok := s.pieces[p.Number]; ok && p.CreatedAt.IsZero() {
		p.CreatedAt = old.piece.CreatedAt
	}
	s.mu.Unlock()
	if p.CreatedAt.IsZero() {
		p.CreatedAt = time.Now()
	}
	return s.report(s.pieceRequest(p, parentID), func() { s.pieces[p.Number] = pieceRecord{piece: p, parentID: parentID} })
}

// PieceFailed reports a piece that could not be downloaded from parent parentID
// (DownloadPieceFailed; temporary asks the scheduler to block that parent for this peer) or, with
// parentID "", from the source (DownloadPieceBackToSourceFailed).
func (s *Session) PieceFailed(number uint32, parentID string, temporary bool) error {
	if parentID == "" {
		return s.report(s.build(func(r *schedulerv2.AnnouncePeerRequest) {
			r.Request = &schedulerv2.AnnouncePeerRequest_DownloadPieceBackToSourceFailedRequest{
				DownloadPieceBackToSourceFailedRequest: &schedulerv2.DownloadPieceBackToSourceFailedRequest{
					PieceNumber: proto.Uint32(number),
					Response: &schedulerv2.DownloadPieceBackToSourceFailedRequest_Unknown{Unknown: &errordetailsv2.Unknown{
						Message: proto.String(fmt.Sprintf("piece %d failed from the source", number))}},
				}}
		}), nil)
	}
	return s.report(s.build(func(r *schedulerv2.AnnouncePeerRequest) {
		r.Request = &schedulerv2.AnnouncePeerRequest_DownloadPieceFailedRequest{
			DownloadPieceFailedRequest: &schedulerv2.DownloadPieceFailedRequest{
				PieceNumber: proto.Uint32(number), ParentId: parentID, Temporary: temporary,
			}}
	}), nil)
}

// Reschedule asks for other parents, never the blocked ones (ReschedulePeerRequest). The
// scheduler answers with EventParents, or EventBackToSource once its retries find none.
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
	var desc *string
	if description != "" {
		desc = proto.String(description)
	}
	return s.report(s.build(func(r *schedulerv2.AnnouncePeerRequest) {
		r.Request = &schedulerv2.AnnouncePeerRequest_ReschedulePeerRequest{
			ReschedulePeerRequest: &schedulerv2.ReschedulePeerRequest{CandidateParents: cands, Description: desc},
		}
	}), nil)
}

// placeholderPeer is a common.v2.Peer for a parent the scheduler did not name in this session. The
// scheduler reads only the id (service_v2.go handleReschedulePeerRequest), but its request
// validator checks every required field of the message, so the others get valid fillers.
func (s *Session) placeholderPeer(p Parent) *commonv2.Peer {
	now := timestamppb.Now()
	host := &commonv2.Host{Id: p.HostID, Hostname: p.Hostname, Ip: p.IP, Port: int32(p.Port), DownloadPort: int32(p.DownloadPort)}
	if host.Id == "" {
		host.Id = "unknown"
	}
	if host.Hostname == "" {
		host.Hostname = host.Id
	}
	if host.Ip == "" {
		host.Ip = "0.0.0.0"
	}
	if host.Port < 1024 || host.Port >= 65535 {
		host.Port = 1024
	}
	if host.DownloadPort < 1024 || host.DownloadPort >= 65535 {
		host.DownloadPort = host.Port
	}
	state := p.State
	if state == "" {
		state = "Running"
	}
	return &commonv2.Peer{
		Id: p.PeerID, Priority: s.spec.Priority, Cost: durationpb.New(0), State: state,
		Task: &commonv2.Task{Id: s.spec.TaskID, Type: commonv2.TaskType_STANDARD, Url: s.spec.URL, State: "Running",
			CreatedAt: now, UpdatedAt: now},
		Host: host, CreatedAt: now, UpdatedAt: now,
	}
}

// Finished reports that every piece is downloaded (DownloadPeer[BackToSource]Finished; a
// back-to-source finish without a range makes the task Succeeded) and waits until the scheduler
// has processed it and closed the stream. The session then ends.
func (s *Session) Finished(backToSource bool) error {
	return s.conclude(outcome{finished: true, backToSource: backToSource})
}

// Failed reports that the download failed (DownloadPeer[BackToSource]Failed; a back-to-source
// failure also marks the task Failed) and waits like Finished. The session then ends.
func (s *Session) Failed(backToSource bool, description string) error {
	return s.conclude(outcome{backToSource: backToSource, description: description})
}

func (s *Session) conclude(o outcome) error {
	req := s.outcomeRequest(o)
	if err := req.ValidateAll(); err != nil {
		return fmt.Errorf("schedclient: invalid request: %w", err)
	}
	s.mu.Lock()
	if s.ended || s.outcome != nil {
		s.mu.Unlock()
		return ErrSessionEnded
	}
	s.outcome = &o
	s.sendLocked(req)
	s.mu.Unlock()
	// The scheduler returns from the stream right after handling the outcome; a reconnect in
	// between replays it. Bounded in case a scheduler neither answers nor breaks.
	wait := s.c.cfg.ReconnectTimeout + time.Duration(len(s.c.clients)+2)*2*s.c.cfg.DialTimeout
	select {
	case <-s.recvDone:
	case <-time.After(wait):
		return fmt.Errorf("schedclient: peer %s: the scheduler did not close the stream within %s of the outcome", s.spec.PeerID, wait)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.endErr != nil {
		return fmt.Errorf("schedclient: peer %s: outcome not confirmed: %w", s.spec.PeerID, s.endErr)
	}
	return nil
}

// Close ends the session: it cancels the stream (the scheduler keeps the peer and its pieces
// until its peer GC; report Finished or Failed first to leave an outcome) and closes Events.
func (s *Session) Close() error {
	s.mu.Lock()
	s.ended = true
	s.mu.Unlock()
	s.cancel()
	<-s.recvDone
	return nil
}

// eventQueue is an unbounded FIFO feeding a channel, so the receive loop never blocks on a slow
// reader.
type eventQueue struct {
	mu    sync.Mutex
	items []Event
	done  bool
	wake  chan struct{}
	out   chan Event
}

func newEventQueue() *eventQueue {
	return &eventQueue{wake: make(chan struct{}, 1), out: make(chan Event)}
}

func (q *eventQueue) push(ev Event) {
	q.mu.Lock()
	if !q.done {
		q.items = append(q.items, ev)
	}
	q.mu.Unlock()
	q.signal()
}

// end lets the pump close the channel once the queued events are delivered.
func (q *eventQueue) end() {
	q.mu.Lock()
	q.done = true
	q.mu.Unlock()
	q.signal()
}

func (q *eventQueue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// pump delivers events until the queue ends and is drained, or stop closes.
func (q *eventQueue) pump(stop <-chan struct{}) {
	defer close(q.out)
	for {
		q.mu.Lock()
		if len(q.items) == 0 {
			done := q.done
			q.mu.Unlock()
			if done {
				return
			}
			select {
			case <-q.wake:
			case <-stop:
				return
			}
			continue
		}
		ev := q.items[0]
		q.items = q.items[1:]
		q.mu.Unlock()
		select {
		case q.out <- ev:
		case <-stop:
			return
		}
	}
}
