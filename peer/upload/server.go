package upload

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	commonv2 "d7y.io/api/v2/pkg/apis/common/v2"
	dfdaemonv2 "d7y.io/api/v2/pkg/apis/dfdaemon/v2"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// PieceInfo is a piece the peer holds (verified).
type PieceInfo struct {
	Number         uint32
	Offset, Length uint64
	// Digest is "crc32:<decimal>" (vortex.CRC32Digest).
	Digest string
}

// TaskInfo is what the peer knows of a task.
type TaskInfo struct {
	ID, URL                    string
	PieceLength, ContentLength uint64
	PieceCount                 uint32
	// Held lists the pieces the peer holds, in any order.
	Held []PieceInfo
	// Done: the peer holds every piece.
	Done bool
}

// ErrTaskNotFound: the peer does not know the task.
var ErrTaskNotFound = errors.New("upload: task not found")

// Tasks is the peer behind the service.
type Tasks interface {
	// Task describes a task the peer knows (ErrTaskNotFound if none).
	Task(ctx context.Context, taskID string) (TaskInfo, error)
	// WaitPiece returns once the peer holds the verified piece (the implementation may start
	// fetching it because someone asked), or fails (ctx done, task unknown, piece unobtainable).
	WaitPiece(ctx context.Context, taskID string, number uint32) (PieceInfo, error)
	// DownloadTask downloads the whole task described by d (seed mode), calling progress as each
	// piece becomes held, and returns when all are held. progress may be called from any goroutine,
	// for pieces held before the call too; it does not block on the gRPC client.
	DownloadTask(ctx context.Context, taskID string, d *commonv2.Download, progress func(PieceInfo)) (TaskInfo, error)
	DeleteTask(ctx context.Context, taskID string) error
}

// Config configures a Server.
type Config struct {
	// HostID and PeerID name this peer in DownloadTask responses.
	HostID, PeerID string
	// IP (required), TCPPort and QUICPort are where other peers fetch pieces (the Vortex servers),
	// advertised in SyncPieces; a zero port is left out.
	IP                string
	TCPPort, QUICPort int
	// MaxPieceWaiters bounds the pieces one SyncPieces call waits for at a time
	// (DefaultMaxPieceWaiters); the rest are waited for, in the order asked, as those arrive.
	MaxPieceWaiters int
	// Seed: this peer is a seed peer and serves DownloadTask (to callers Authorizer accepts).
	// Other peers refuse it: only seeds download on a scheduler's behalf.
	Seed bool
	// Authorizer decides who may call DownloadTask; nil refuses everyone.
	Authorizer interface {
		Authorize(ctx context.Context) error
	}
	// URLPolicy is what a DownloadTask URL must look like (ValidateDownload).
	URLPolicy URLPolicy
	Log       *zap.Logger
}

// DefaultMaxPieceWaiters is the default Config.MaxPieceWaiters.
const DefaultMaxPieceWaiters = 256

// maxInterestedPieces bounds the piece numbers of one SyncPieces request: a 64 GiB blob in 4 MiB
// pieces has 16384.
const maxInterestedPieces = 1 << 16

// The service name health reports SERVING for, besides "" (the whole server).
const serviceName = "dfdaemon.v2.DfdaemonUpload"

// Server implements dfdaemonv2.DfdaemonUploadServer over Tasks.
type Server struct {
	dfdaemonv2.UnimplementedDfdaemonUploadServer
	cfg    Config
	tasks  Tasks
	log    *zap.Logger
	health *health.Server
}

// NewServer returns a Server for t.
func NewServer(cfg Config, t Tasks) *Server {
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.MaxPieceWaiters <= 0 {
		cfg.MaxPieceWaiters = DefaultMaxPieceWaiters
	}
	if cfg.IP == "" {
		cfg.Log.Warn("upload: no IP configured: SyncPieces answers will not say where to fetch pieces")
	}
	h := health.NewServer()
	h.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	h.SetServingStatus(serviceName, healthpb.HealthCheckResponse_SERVING)
	return &Server{cfg: cfg, tasks: t, log: cfg.Log, health: h}
}

// Register adds the DfdaemonUpload service and grpc.health.v1 to g.
func (s *Server) Register(g *grpc.Server) {
	dfdaemonv2.RegisterDfdaemonUploadServer(g, s)
	healthpb.RegisterHealthServer(g, s.health)
}

// Shutdown reports NOT_SERVING from now on, so schedulers stop picking this peer, and ends health
// watches.
func (s *Server) Shutdown() {
	s.health.Shutdown()
}

// The fixed messages of errors sent to remote callers: the detail (dial errors, HTTP statuses,
// paths) goes to the local log only.
const (
	MsgNotFound         = "task not found"
	MsgPermissionDenied = "permission denied"
	MsgInvalid          = "invalid request"
	MsgInternal         = "internal error"
	MsgUnavailable      = "unavailable"
)

// ErrUnavailable: the peer cannot take the request now (a limit is reached); callers get
// Unavailable and may try another peer. Tasks implementations wrap it.
var ErrUnavailable = errors.New("upload: unavailable")

// statusOf turns an error into a gRPC status with a fixed message, logging what failed.
func (s *Server) statusOf(err error, what string, fields ...zap.Field) error {
	code, msg := codes.Internal, MsgInternal
	st, isStatus := status.FromError(err)
	switch {
	case errors.Is(err, ErrTaskNotFound):
		code, msg = codes.NotFound, MsgNotFound
	case errors.Is(err, ErrInvalidDownload):
		code, msg = codes.InvalidArgument, MsgInvalid
	case errors.Is(err, ErrNotScheduler):
		code, msg = codes.PermissionDenied, MsgPermissionDenied
	case errors.Is(err, ErrUnavailable):
		code, msg = codes.Unavailable, MsgUnavailable
	case errors.Is(err, context.Canceled):
		code, msg = codes.Canceled, MsgUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		code, msg = codes.DeadlineExceeded, MsgUnavailable
	case isStatus && st.Code() == codes.NotFound:
		code, msg = codes.NotFound, MsgNotFound
	case isStatus && (st.Code() == codes.InvalidArgument || st.Code() == codes.OutOfRange):
		code, msg = codes.InvalidArgument, MsgInvalid
	case isStatus && (st.Code() == codes.PermissionDenied || st.Code() == codes.Unauthenticated):
		code, msg = codes.PermissionDenied, MsgPermissionDenied
	case isStatus && (st.Code() == codes.Unavailable || st.Code() == codes.ResourceExhausted):
		code, msg = st.Code(), MsgUnavailable
	}
	lvl := zap.InfoLevel
	if code == codes.Internal {
		lvl = zap.WarnLevel
	}
	s.log.Log(lvl, "upload: "+what, append(fields, zap.Stringer("code", code), zap.Error(err))...)
	return status.Error(code, msg)
}

// SyncPieces streams where to fetch each interested piece once the peer holds it.
func (s *Server) SyncPieces(req *dfdaemonv2.SyncPiecesRequest, stream dfdaemonv2.DfdaemonUpload_SyncPiecesServer) error {
	ctx := stream.Context()
	taskID := req.GetTaskId()
	if taskID == "" || len(req.GetInterestedPieceNumbers()) == 0 || len(req.GetInterestedPieceNumbers()) > maxInterestedPieces {
		s.log.Info("upload: sync pieces: bad request", zap.String("task", taskID), zap.Int("pieces", len(req.GetInterestedPieceNumbers())))
		return status.Error(codes.InvalidArgument, MsgInvalid)
	}
	log := s.log.With(zap.String("task", taskID), zap.String("remote_host", req.GetHostId()))
	info, err := s.tasks.Task(ctx, taskID)
	if err != nil {
		return s.statusOf(err, "sync pieces failed", zap.String("task", taskID))
	}
	held := make(map[uint32]PieceInfo, len(info.Held))
	for _, p := range info.Held {
		held[p.Number] = p
	}
	// Held pieces go out at once; the others are waited for, unless the task is done (then they
	// never come, as in the Rust peer) or the piece number is past the task's end.
	var pending []uint32
	seen := make(map[uint32]bool, len(req.GetInterestedPieceNumbers()))
	for _, n := range req.GetInterestedPieceNumbers() {
		if seen[n] {
			continue
		}
		seen[n] = true
		if p, ok := held[n]; ok {
			if err := s.sendLocation(stream, p); err != nil {
				return err
			}
			continue
		}
		if info.Done || (info.PieceCount > 0 && n >= info.PieceCount) {
			log.Debug("sync pieces: piece will not come", zap.Uint32("piece", n), zap.Bool("task_done", info.Done), zap.Uint32("piece_count", info.PieceCount))
			continue
		}
		pending = append(pending, n)
	}
	if len(pending) == 0 {
		return nil
	}
	return s.waitPieces(ctx, log, stream, taskID, pending)
}

// waitPieces sends each pending piece as the peer gets it, waiting for at most MaxPieceWaiters at a
// time.
func (s *Server) waitPieces(ctx context.Context, log *zap.Logger, stream dfdaemonv2.DfdaemonUpload_SyncPiecesServer, taskID string, pending []uint32) error {
	type waited struct {
		number uint32
		piece  PieceInfo
		err    error
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	results := make(chan waited)
	start := func(n uint32) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := s.tasks.WaitPiece(ctx, taskID, n)
			select {
			case results <- waited{number: n, piece: p, err: err}:
			case <-ctx.Done():
			}
		}()
	}
	next := 0
	for ; next < len(pending) && next < s.cfg.MaxPieceWaiters; next++ {
		start(pending[next])
	}
	for range pending {
		var r waited
		select {
		case r = <-results:
		case <-ctx.Done():
			return s.statusOf(context.Cause(ctx), "sync pieces failed", zap.String("task", taskID))
		}
		if next < len(pending) {
			start(pending[next])
			next++
		}
		switch {
		case r.err == nil && r.piece.Number != r.number:
			log.Error("sync pieces: WaitPiece returned another piece", zap.Uint32("piece", r.number), zap.Uint32("got", r.piece.Number))
		case r.err == nil:
			if err := s.sendLocation(stream, r.piece); err != nil {
				return err
			}
		case errors.Is(r.err, ErrTaskNotFound) || ctx.Err() != nil:
			return s.statusOf(r.err, "sync pieces failed", zap.String("task", taskID))
		default:
			// One piece the peer cannot get does not end the others.
			log.Info("sync pieces: piece unobtainable", zap.Uint32("piece", r.number), zap.Error(r.err))
		}
	}
	return nil
}

func (s *Server) sendLocation(stream dfdaemonv2.DfdaemonUpload_SyncPiecesServer, p PieceInfo) error {
	resp := &dfdaemonv2.SyncPiecesResponse{Number: p.Number, Offset: p.Offset, Length: p.Length, Ip: s.cfg.IP}
	if s.cfg.TCPPort > 0 {
		resp.TcpPort = ptr(int32(s.cfg.TCPPort))
	}
	if s.cfg.QUICPort > 0 {
		resp.QuicPort = ptr(int32(s.cfg.QUICPort))
	}
	if err := stream.Send(resp); err != nil {
		return fmt.Errorf("upload: send piece %d location: %w", p.Number, err)
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

func byNumber(a, b PieceInfo) int { return cmp.Compare(a.Number, b.Number) }

// DownloadTask downloads a task on the scheduler's behalf and streams its progress.
func (s *Server) DownloadTask(req *dfdaemonv2.DownloadTaskRequest, stream dfdaemonv2.DfdaemonUpload_DownloadTaskServer) error {
	ctx := stream.Context()
	d := req.GetDownload()
	if err := s.authorizeDownload(ctx); err != nil {
		return s.statusOf(err, "download task refused", callerField(ctx))
	}
	taskID, err := TaskID(d)
	if err != nil {
		err = fmt.Errorf("%w: %w", ErrInvalidDownload, err)
	} else {
		_, err = ValidateDownload(d, taskID, s.cfg.URLPolicy)
	}
	if err != nil {
		return s.statusOf(err, "download task refused", callerField(ctx), zap.String("url", d.GetUrl()))
	}
	log := s.log.With(zap.String("task", taskID), zap.String("url", d.GetUrl()))
	log.Info("download task requested", zap.Stringer("priority", d.GetPriority()))

	// progress only queues pieces; this goroutine does the sending, so a slow or gone client never
	// blocks the download, and Tasks is never called back from inside progress.
	var (
		mu     sync.Mutex
		queue  []PieceInfo
		notify = make(chan struct{}, 1)
		done   = make(chan struct{})
	)
	progress := func(p PieceInfo) {
		mu.Lock()
		defer mu.Unlock()
		select {
		case <-done:
			return
		default:
		}
		queue = append(queue, p)
		select {
		case notify <- struct{}{}:
		default:
		}
	}
	type outcome struct {
		info TaskInfo
		err  error
	}
	finished := make(chan outcome, 1)
	go func() {
		info, err := s.tasks.DownloadTask(ctx, taskID, d, progress)
		finished <- outcome{info, err}
	}()
	defer func() {
		mu.Lock()
		close(done)
		mu.Unlock()
	}()

	ds := &downloadStream{s: s, stream: stream, taskID: taskID, d: d, sent: map[uint32]bool{}}
	drain := func() error {
		mu.Lock()
		q := queue
		queue = nil
		mu.Unlock()
		for _, p := range q {
			if err := ds.piece(ctx, p, nil); err != nil {
				return err
			}
		}
		return nil
	}
	for {
		select {
		case <-notify:
			if err := drain(); err != nil {
				return err
			}
		case o := <-finished:
			if err := drain(); err != nil {
				return err
			}
			if o.err != nil {
				return s.statusOf(o.err, "download task failed", zap.String("task", taskID), zap.String("url", d.GetUrl()))
			}
			// Pieces the peer held without reporting them still get their message, in order.
			held := slices.Clone(o.info.Held)
			slices.SortFunc(held, byNumber)
			for _, p := range held {
				if err := ds.piece(ctx, p, &o.info); err != nil {
					return err
				}
			}
			if err := ds.start(ctx, &o.info); err != nil {
				return err
			}
			log.Info("download task done", zap.Uint64("content_length", o.info.ContentLength), zap.Int("pieces", len(ds.sent)))
			return nil
		}
	}
}

// downloadStream sends one DownloadTask's responses: started once, first, then each piece once.
type downloadStream struct {
	s       *Server
	stream  dfdaemonv2.DfdaemonUpload_DownloadTaskServer
	taskID  string
	d       *commonv2.Download
	started bool
	sent    map[uint32]bool
}

// start sends DownloadTaskStartedResponse unless it was sent. info is what the download returned,
// or nil: then the task is looked up (the peer knows it once it holds a piece).
func (ds *downloadStream) start(ctx context.Context, info *TaskInfo) error {
	if ds.started {
		return nil
	}
	ds.started = true
	if info == nil {
		i, err := ds.s.tasks.Task(ctx, ds.taskID)
		if err != nil {
			ds.s.log.Debug("download task: task not known yet", zap.String("task", ds.taskID), zap.Error(err))
			i = TaskInfo{ContentLength: ds.d.GetActualContentLength()}
		}
		info = &i
	}
	return ds.send(&dfdaemonv2.DownloadTaskResponse{Response: &dfdaemonv2.DownloadTaskResponse_DownloadTaskStartedResponse{
		DownloadTaskStartedResponse: &dfdaemonv2.DownloadTaskStartedResponse{
			ContentLength: info.ContentLength,
			Range:         ds.d.GetRange(),
			IsFinished:    info.Done,
		},
	}})
}

// piece sends DownloadPieceFinishedResponse for p unless it was sent.
func (ds *downloadStream) piece(ctx context.Context, p PieceInfo, info *TaskInfo) error {
	if ds.sent[p.Number] {
		return nil
	}
	if err := ds.start(ctx, info); err != nil {
		return err
	}
	ds.sent[p.Number] = true
	return ds.send(&dfdaemonv2.DownloadTaskResponse{Response: &dfdaemonv2.DownloadTaskResponse_DownloadPieceFinishedResponse{
		DownloadPieceFinishedResponse: &dfdaemonv2.DownloadPieceFinishedResponse{Piece: commonPiece(p)},
	}})
}

// send fills in who sends resp and sends it.
func (ds *downloadStream) send(resp *dfdaemonv2.DownloadTaskResponse) error {
	resp.HostId, resp.TaskId, resp.PeerId = ds.s.cfg.HostID, ds.taskID, ds.s.cfg.PeerID
	if err := ds.stream.Send(resp); err != nil {
		return fmt.Errorf("upload: send download task %s progress: %w", ds.taskID, err)
	}
	return nil
}

// commonPiece converts p; cost and creation time are required fields the peer does not track here.
func commonPiece(p PieceInfo) *commonv2.Piece {
	return &commonv2.Piece{
		Number: p.Number, Offset: p.Offset, Length: p.Length, Digest: p.Digest,
		Cost: durationpb.New(0), CreatedAt: timestamppb.Now(),
	}
}

// StatTask describes a task this peer knows.
func (s *Server) StatTask(ctx context.Context, req *dfdaemonv2.StatTaskRequest) (*commonv2.Task, error) {
	info, err := s.tasks.Task(ctx, req.GetTaskId())
	if err != nil {
		return nil, s.statusOf(err, "stat task failed", zap.String("task", req.GetTaskId()))
	}
	return commonTask(info, time.Now()), nil
}

// StatLocalTask describes a task this peer knows, from local state only (which is all it has).
func (s *Server) StatLocalTask(ctx context.Context, req *dfdaemonv2.StatLocalTaskRequest) (*dfdaemonv2.StatLocalTaskResponse, error) {
	info, err := s.tasks.Task(ctx, req.GetTaskId())
	if err != nil {
		return nil, s.statusOf(err, "stat local task failed", zap.String("task", req.GetTaskId()))
	}
	now := timestamppb.Now()
	resp := &dfdaemonv2.StatLocalTaskResponse{TaskId: info.ID, ContentLength: ptr(info.ContentLength), CreatedAt: now, UpdatedAt: now}
	if info.PieceLength > 0 {
		resp.PieceLength = ptr(info.PieceLength)
	}
	if info.Done {
		resp.FinishedAt = now
	}
	return resp, nil
}

// DeleteTask removes a task from this peer. It changes what the peer holds, so it is the
// scheduler's (or an allowed caller's) only, on seeds and normal peers alike.
func (s *Server) DeleteTask(ctx context.Context, req *dfdaemonv2.DeleteTaskRequest) (*emptypb.Empty, error) {
	if err := s.authorizeCaller(ctx); err != nil {
		return nil, s.statusOf(err, "delete task refused", callerField(ctx), zap.String("task", req.GetTaskId()))
	}
	if err := s.tasks.DeleteTask(ctx, req.GetTaskId()); err != nil {
		return nil, s.statusOf(err, "delete task failed", zap.String("task", req.GetTaskId()))
	}
	s.log.Info("task deleted", zap.String("task", req.GetTaskId()))
	return &emptypb.Empty{}, nil
}

// Task states as the scheduler names them (scheduler/resource/standard/task.go TaskState*).
const (
	TaskStatePending   = "Pending"
	TaskStateRunning   = "Running"
	TaskStateSucceeded = "Succeeded"
)

// tinyFileSize is the scheduler's TinyFileSize: content up to it is SizeScope TINY.
const tinyFileSize = 128

// commonTask maps info to common.v2.Task.
func commonTask(info TaskInfo, now time.Time) *commonv2.Task {
	state := TaskStatePending
	switch {
	case info.Done:
		state = TaskStateSucceeded
	case len(info.Held) > 0:
		state = TaskStateRunning
	}
	held := slices.Clone(info.Held)
	slices.SortFunc(held, byNumber)
	pieces := make([]*commonv2.Piece, len(held))
	for i, p := range held {
		pieces[i] = commonPiece(p)
	}
	ts := timestamppb.New(now)
	return &commonv2.Task{
		Id:               info.ID,
		Type:             commonv2.TaskType_STANDARD,
		Url:              info.URL,
		ContentLength:    info.ContentLength,
		PieceCount:       info.PieceCount,
		SizeScope:        sizeScope(info),
		Pieces:           pieces,
		State:            state,
		HasAvailablePeer: len(held) > 0,
		CreatedAt:        ts,
		UpdatedAt:        ts,
	}
}

// sizeScope classifies a task as the scheduler does (scheduler/resource/standard/task.go
// SizeScope); a task whose size is not known yet is UNKNOW.
func sizeScope(info TaskInfo) commonv2.SizeScope {
	switch {
	case !info.Done && info.ContentLength == 0 && info.PieceCount == 0:
		return commonv2.SizeScope_UNKNOW
	case info.ContentLength == 0:
		return commonv2.SizeScope_EMPTY
	case info.ContentLength <= tinyFileSize:
		return commonv2.SizeScope_TINY
	case info.PieceCount == 1:
		return commonv2.SizeScope_SMALL
	}
	return commonv2.SizeScope_NORMAL
}

// authorizeDownload refuses DownloadTask on a peer that is not a seed, and from callers the
// Authorizer does not accept.
func (s *Server) authorizeDownload(ctx context.Context) error {
	if !s.cfg.Seed {
		return fmt.Errorf("%w: this peer is not a seed", ErrNotScheduler)
	}
	return s.authorizeCaller(ctx)
}

// authorizeCaller accepts only callers the Authorizer accepts (the schedulers).
func (s *Server) authorizeCaller(ctx context.Context) error {
	if s.cfg.Authorizer == nil {
		return fmt.Errorf("%w: no authorizer configured", ErrNotScheduler)
	}
	return s.cfg.Authorizer.Authorize(ctx)
}

// callerField names the RPC's caller for the log.
func callerField(ctx context.Context) zap.Field {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return zap.Stringer("caller", p.Addr)
	}
	return zap.Skip()
}
