package upload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"

	commonv2 "d7y.io/api/v2/pkg/apis/common/v2"
	dfdaemonv2 "d7y.io/api/v2/pkg/apis/dfdaemon/v2"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// fakeTasks is an in-memory Tasks whose state the test drives. Every change is broadcast on
// changed, so tests wait for conditions instead of sleeping.
type fakeTasks struct {
	mu       sync.Mutex
	tasks    map[string]*TaskInfo
	bad      map[uint32]bool // pieces WaitPiece fails for
	waiting  map[uint32]int  // WaitPiece calls blocked per piece
	changed  chan struct{}
	download func(ctx context.Context, f *fakeTasks, taskID string, d *commonv2.Download, progress func(PieceInfo)) (TaskInfo, error)
}

func newFakeTasks(infos ...TaskInfo) *fakeTasks {
	f := &fakeTasks{tasks: map[string]*TaskInfo{}, bad: map[uint32]bool{}, waiting: map[uint32]int{}, changed: make(chan struct{})}
	for _, info := range infos {
		f.tasks[info.ID] = &info
	}
	return f
}

// broadcast wakes everyone waiting for a change; f.mu is held.
func (f *fakeTasks) broadcast() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// until blocks until cond (called with f.mu held) is true.
func (f *fakeTasks) until(cond func() bool) {
	for {
		f.mu.Lock()
		ok, ch := cond(), f.changed
		f.mu.Unlock()
		if ok {
			return
		}
		<-ch
	}
}

func (f *fakeTasks) hold(taskID string, p PieceInfo) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tasks[taskID].Held = append(f.tasks[taskID].Held, p)
	f.broadcast()
}

func (f *fakeTasks) set(info TaskInfo) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tasks[info.ID] = &info
	f.broadcast()
}

func (f *fakeTasks) Task(_ context.Context, taskID string) (TaskInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.tasks[taskID]
	if !ok {
		return TaskInfo{}, fmt.Errorf("task %s: %w", taskID, ErrTaskNotFound)
	}
	info := *t
	info.Held = slices.Clone(t.Held)
	return info, nil
}

func (f *fakeTasks) WaitPiece(ctx context.Context, taskID string, number uint32) (PieceInfo, error) {
	f.mu.Lock()
	f.waiting[number]++
	f.broadcast()
	defer func() {
		f.waiting[number]--
		f.broadcast()
		f.mu.Unlock()
	}()
	for {
		t, ok := f.tasks[taskID]
		if !ok {
			return PieceInfo{}, fmt.Errorf("task %s: %w", taskID, ErrTaskNotFound)
		}
		if f.bad[number] {
			return PieceInfo{}, fmt.Errorf("piece %d: no source has it", number)
		}
		for _, p := range t.Held {
			if p.Number == number {
				return p, nil
			}
		}
		ch := f.changed
		f.mu.Unlock()
		select {
		case <-ch:
			f.mu.Lock()
		case <-ctx.Done():
			f.mu.Lock()
			return PieceInfo{}, ctx.Err()
		}
	}
}

func (f *fakeTasks) DownloadTask(ctx context.Context, taskID string, d *commonv2.Download, progress func(PieceInfo)) (TaskInfo, error) {
	return f.download(ctx, f, taskID, d, progress)
}

func (f *fakeTasks) DeleteTask(_ context.Context, taskID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.tasks[taskID]; !ok {
		return fmt.Errorf("task %s: %w", taskID, ErrTaskNotFound)
	}
	delete(f.tasks, taskID)
	f.broadcast()
	return nil
}

var testConfig = Config{HostID: "127.0.0.1-seed", PeerID: "peer-1", IP: "127.0.0.1", TCPPort: 4005, QUICPort: 4006,
	Seed: true, Authorizer: allowAll{}}

// allowAll accepts every caller.
type allowAll struct{}

func (allowAll) Authorize(context.Context) error { return nil }

// testBlobURL is a valid registry blob URL.
const testBlobURL = "https://registry.example.com/v2/library/app/blobs/sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// serve runs a Server over f on a loopback gRPC server and returns a client connection to it.
func serve(t *testing.T, cfg Config, f Tasks) (*Server, *grpc.ClientConn) {
	t.Helper()
	cfg.Log = zaptest.NewLogger(t)
	s := NewServer(cfg, f)
	g := grpc.NewServer()
	s.Register(g)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- g.Serve(ln) }()
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cc.Close()
		g.Stop()
		if err := <-done; err != nil {
			t.Errorf("grpc Serve: %v", err)
		}
	})
	return s, cc
}

const taskA = "a000000000000000000000000000000000000000000000000000000000000000"

func piece(n uint32) PieceInfo {
	return PieceInfo{Number: n, Offset: uint64(n) << 22, Length: 4 << 20, Digest: fmt.Sprintf("crc32:%d", 1000+n)}
}

func pieces(ns ...uint32) []PieceInfo {
	var ps []PieceInfo
	for _, n := range ns {
		ps = append(ps, piece(n))
	}
	return ps
}

func TestSyncPieces(t *testing.T) {
	waitingOn := func(f *fakeTasks, n uint32) { f.until(func() bool { return f.waiting[n] > 0 }) }
	for _, tc := range []struct {
		name    string
		info    *TaskInfo // nil: the task is unknown
		bad     []uint32
		cfg     func(*Config)
		ask     []uint32
		script  func(f *fakeTasks, received <-chan uint32) // runs alongside the stream
		want    []uint32
		wantErr codes.Code
	}{
		{name: "held pieces, in the order asked",
			info: &TaskInfo{ID: taskA, PieceCount: 4, Held: pieces(0, 1, 2)},
			ask:  []uint32{2, 0}, want: []uint32{2, 0}},
		{name: "a number asked twice is sent once",
			info: &TaskInfo{ID: taskA, PieceCount: 4, Held: pieces(1)},
			ask:  []uint32{1, 1}, want: []uint32{1}},
		{name: "a pending piece is sent when the peer gets it",
			info: &TaskInfo{ID: taskA, PieceCount: 4, Held: pieces(0)},
			ask:  []uint32{0, 3},
			script: func(f *fakeTasks, received <-chan uint32) {
				waitingOn(f, 3)
				f.hold(taskA, piece(3))
			},
			want: []uint32{0, 3}},
		{name: "pieces arrive in the order the peer gets them",
			info: &TaskInfo{ID: taskA, PieceCount: 4},
			ask:  []uint32{1, 2, 3},
			script: func(f *fakeTasks, received <-chan uint32) {
				f.until(func() bool { return f.waiting[1] > 0 && f.waiting[2] > 0 && f.waiting[3] > 0 })
				f.hold(taskA, piece(3))
				<-received
				f.hold(taskA, piece(1))
				<-received
				f.hold(taskA, piece(2))
			},
			want: []uint32{3, 1, 2}},
		{name: "at most MaxPieceWaiters pieces are waited for at a time",
			info: &TaskInfo{ID: taskA, PieceCount: 4},
			cfg:  func(c *Config) { c.MaxPieceWaiters = 1 },
			ask:  []uint32{1, 2},
			script: func(f *fakeTasks, received <-chan uint32) {
				waitingOn(f, 1)
				f.hold(taskA, piece(2)) // not waited for yet: goes out after piece 1
				f.hold(taskA, piece(1))
			},
			want: []uint32{1, 2}},
		{name: "a done task sends what it has and ends",
			info: &TaskInfo{ID: taskA, PieceCount: 2, Held: pieces(0, 1), Done: true},
			ask:  []uint32{0, 5}, want: []uint32{0}},
		{name: "numbers past the task's end are not waited for",
			info: &TaskInfo{ID: taskA, PieceCount: 2},
			ask:  []uint32{2, 7}},
		{name: "a piece the peer cannot get is skipped",
			info: &TaskInfo{ID: taskA, PieceCount: 4},
			bad:  []uint32{1},
			ask:  []uint32{1, 2},
			script: func(f *fakeTasks, received <-chan uint32) {
				waitingOn(f, 2)
				f.hold(taskA, piece(2))
			},
			want: []uint32{2}},
		{name: "unknown task",
			ask: []uint32{0}, wantErr: codes.NotFound},
		{name: "task deleted while waiting",
			info: &TaskInfo{ID: taskA, PieceCount: 4, Held: pieces(0)},
			ask:  []uint32{0, 1},
			script: func(f *fakeTasks, received <-chan uint32) {
				waitingOn(f, 1)
				_ = f.DeleteTask(context.Background(), taskA)
			},
			want: []uint32{0}, wantErr: codes.NotFound},
		{name: "no piece numbers",
			info: &TaskInfo{ID: taskA, PieceCount: 4},
			ask:  nil, wantErr: codes.InvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeTasks()
			if tc.info != nil {
				f.set(*tc.info)
			}
			for _, n := range tc.bad {
				f.bad[n] = true
			}
			cfg := testConfig
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			_, cc := serve(t, cfg, f)
			received := make(chan uint32, 16)
			if tc.script != nil {
				go tc.script(f, received)
			}
			locs, errc := SyncPieces(context.Background(), cc, "host-b", taskA, tc.ask)
			var got []uint32
			for l := range locs {
				received <- l.Number
				want := PieceLocation{Number: l.Number, Offset: uint64(l.Number) << 22, Length: 4 << 20, IP: "127.0.0.1", TCPPort: 4005, QUICPort: 4006}
				if l != want {
					t.Errorf("location = %+v, want %+v", l, want)
				}
				if l.TCPAddr() != "127.0.0.1:4005" {
					t.Errorf("TCPAddr = %q", l.TCPAddr())
				}
				got = append(got, l.Number)
			}
			err := <-errc
			if !slices.Equal(got, tc.want) {
				t.Errorf("pieces = %v, want %v", got, tc.want)
			}
			if status.Code(err) != tc.wantErr && !(tc.wantErr == codes.OK && err == nil) {
				t.Fatalf("err = %v, want code %s", err, tc.wantErr)
			}
			if tc.wantErr == codes.NotFound && !errors.Is(err, ErrTaskNotFound) {
				t.Errorf("err = %v, want it to wrap ErrTaskNotFound", err)
			}
			// Nothing keeps waiting after the stream ends.
			f.until(func() bool {
				for _, n := range f.waiting {
					if n > 0 {
						return false
					}
				}
				return true
			})
		})
	}
}

func TestSyncPiecesCancel(t *testing.T) {
	f := newFakeTasks(TaskInfo{ID: taskA, PieceCount: 4})
	_, cc := serve(t, testConfig, f)
	ctx, cancel := context.WithCancel(context.Background())
	locs, errc := SyncPieces(ctx, cc, "host-b", taskA, []uint32{0, 1})
	f.until(func() bool { return f.waiting[0] > 0 && f.waiting[1] > 0 })
	cancel()
	for l := range locs {
		t.Errorf("got location %+v after cancel", l)
	}
	if err := <-errc; status.Code(err) != codes.Canceled {
		t.Fatalf("err = %v, want Canceled", err)
	}
	// The server stops waiting for the pieces.
	f.until(func() bool { return f.waiting[0] == 0 && f.waiting[1] == 0 })
}

// lyingUpload answers SyncPieces with canned responses.
type lyingUpload struct {
	dfdaemonv2.UnimplementedDfdaemonUploadServer
	resps []*dfdaemonv2.SyncPiecesResponse
}

func (l *lyingUpload) SyncPieces(_ *dfdaemonv2.SyncPiecesRequest, stream dfdaemonv2.DfdaemonUpload_SyncPiecesServer) error {
	for _, r := range l.resps {
		if err := stream.Send(r); err != nil {
			return err
		}
	}
	return nil
}

func TestSyncPiecesChecksResponses(t *testing.T) {
	port := func(p int32) *int32 { return &p }
	for _, tc := range []struct {
		name string
		resp *dfdaemonv2.SyncPiecesResponse
		want string
	}{
		{"piece not asked for", &dfdaemonv2.SyncPiecesResponse{Number: 9, Ip: "10.0.0.1", TcpPort: port(4005)}, "piece 9 was not asked for"},
		{"no ip", &dfdaemonv2.SyncPiecesResponse{Number: 1, TcpPort: port(4005)}, `ip ""`},
		{"bad port", &dfdaemonv2.SyncPiecesResponse{Number: 1, Ip: "10.0.0.1", TcpPort: port(70000)}, "tcp port 70000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := grpc.NewServer()
			dfdaemonv2.RegisterDfdaemonUploadServer(g, &lyingUpload{resps: []*dfdaemonv2.SyncPiecesResponse{
				{Number: 0, Ip: "10.0.0.1", TcpPort: port(4005)}, tc.resp,
			}})
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go func() { _ = g.Serve(ln) }()
			defer g.Stop()
			cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			locs, errc := SyncPieces(context.Background(), cc, "host-b", taskA, []uint32{0, 1})
			var got []PieceLocation
			for l := range locs {
				got = append(got, l)
			}
			err = <-errc
			if len(got) != 1 || got[0] != (PieceLocation{IP: "10.0.0.1", TCPPort: 4005}) {
				t.Errorf("locations = %+v, want piece 0 only", got)
			}
			if !errors.Is(err, ErrBadResponse) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrBadResponse mentioning %q", err, tc.want)
			}
		})
	}
}

// downloadEvent is one DownloadTask response reduced to what the tests check.
type downloadEvent struct {
	started       bool
	contentLength uint64
	finished      bool
	number        uint32
}

// recvDownload collects a DownloadTask stream; every response must name this peer and the task.
func recvDownload(t *testing.T, stream dfdaemonv2.DfdaemonUpload_DownloadTaskClient, taskID string) ([]downloadEvent, error) {
	t.Helper()
	var evs []downloadEvent
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return evs, nil
		}
		if err != nil {
			return evs, err
		}
		if resp.GetHostId() != testConfig.HostID || resp.GetPeerId() != testConfig.PeerID || resp.GetTaskId() != taskID {
			t.Errorf("response from host %q peer %q task %q", resp.GetHostId(), resp.GetPeerId(), resp.GetTaskId())
		}
		if err := resp.Validate(); err != nil {
			t.Errorf("response does not pass the proto's validation: %v", err)
		}
		switch r := resp.GetResponse().(type) {
		case *dfdaemonv2.DownloadTaskResponse_DownloadTaskStartedResponse:
			evs = append(evs, downloadEvent{started: true, contentLength: r.DownloadTaskStartedResponse.GetContentLength(), finished: r.DownloadTaskStartedResponse.GetIsFinished()})
		case *dfdaemonv2.DownloadTaskResponse_DownloadPieceFinishedResponse:
			p := r.DownloadPieceFinishedResponse.GetPiece()
			if want := piece(p.GetNumber()); p.GetOffset() != want.Offset || p.GetLength() != want.Length || p.GetDigest() != want.Digest {
				t.Errorf("piece %+v, want %+v", p, want)
			}
			evs = append(evs, downloadEvent{number: p.GetNumber()})
		}
	}
}

func TestDownloadTask(t *testing.T) {
	pieceLength := uint64(4 << 20)
	download := &commonv2.Download{Url: testBlobURL, Tag: ptr("nydus"), Application: ptr("dfnydus"), PieceLength: &pieceLength}
	wantTaskID, err := TaskID(download)
	if err != nil {
		t.Fatal(err)
	}
	info := func(held ...uint32) TaskInfo {
		return TaskInfo{ID: wantTaskID, URL: download.Url, PieceLength: pieceLength, ContentLength: 3 * pieceLength, PieceCount: 3, Held: pieces(held...), Done: len(held) == 3}
	}
	for _, tc := range []struct {
		name     string
		download *commonv2.Download
		run      func(ctx context.Context, f *fakeTasks, taskID string, progress func(PieceInfo)) (TaskInfo, error)
		want     []downloadEvent
		wantErr  codes.Code
	}{
		{
			name: "started first, then each piece once",
			run: func(_ context.Context, f *fakeTasks, taskID string, progress func(PieceInfo)) (TaskInfo, error) {
				f.set(info())
				for _, n := range []uint32{1, 0, 1} {
					f.hold(taskID, piece(n))
					progress(piece(n))
				}
				f.hold(taskID, piece(2)) // held without a progress call
				return info(1, 0, 2), nil
			},
			want: []downloadEvent{{started: true, contentLength: 3 << 22}, {number: 1}, {number: 0}, {number: 2}},
		},
		{
			name: "a task held already",
			run: func(_ context.Context, f *fakeTasks, taskID string, progress func(PieceInfo)) (TaskInfo, error) {
				return info(2, 0, 1), nil
			},
			want: []downloadEvent{{started: true, contentLength: 3 << 22, finished: true}, {number: 0}, {number: 1}, {number: 2}},
		},
		{
			name: "failure after a piece",
			run: func(_ context.Context, f *fakeTasks, taskID string, progress func(PieceInfo)) (TaskInfo, error) {
				f.set(info(0))
				progress(piece(0))
				return TaskInfo{}, errors.New("source says 503")
			},
			want:    []downloadEvent{{started: true, contentLength: 3 << 22}, {number: 0}},
			wantErr: codes.Internal,
		},
		{
			name:     "download without url",
			download: &commonv2.Download{},
			wantErr:  codes.InvalidArgument,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeTasks()
			f.download = func(ctx context.Context, f *fakeTasks, taskID string, d *commonv2.Download, progress func(PieceInfo)) (TaskInfo, error) {
				if taskID != wantTaskID || d.GetUrl() != download.GetUrl() {
					return TaskInfo{}, fmt.Errorf("DownloadTask(%s, %s), want task %s", taskID, d.GetUrl(), wantTaskID)
				}
				return tc.run(ctx, f, taskID, progress)
			}
			_, cc := serve(t, testConfig, f)
			d := download
			if tc.download != nil {
				d = tc.download
			}
			stream, err := dfdaemonv2.NewDfdaemonUploadClient(cc).DownloadTask(context.Background(), &dfdaemonv2.DownloadTaskRequest{Download: d})
			if err != nil {
				t.Fatal(err)
			}
			got, err := recvDownload(t, stream, wantTaskID)
			if status.Code(err) != tc.wantErr {
				t.Fatalf("err = %v, want code %s", err, tc.wantErr)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("responses = %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestDownloadTaskCancel(t *testing.T) {
	f := newFakeTasks()
	running, cancelled := make(chan struct{}), make(chan error, 1)
	f.download = func(ctx context.Context, f *fakeTasks, taskID string, _ *commonv2.Download, progress func(PieceInfo)) (TaskInfo, error) {
		close(running)
		<-ctx.Done()
		progress(piece(0)) // after the stream is gone: must not block or panic
		cancelled <- ctx.Err()
		return TaskInfo{}, ctx.Err()
	}
	_, cc := serve(t, testConfig, f)
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := dfdaemonv2.NewDfdaemonUploadClient(cc).DownloadTask(ctx, &dfdaemonv2.DownloadTaskRequest{Download: &commonv2.Download{Url: testBlobURL}})
	if err != nil {
		t.Fatal(err)
	}
	<-running
	cancel()
	if _, err := stream.Recv(); status.Code(err) != codes.Canceled {
		t.Fatalf("Recv = %v, want Canceled", err)
	}
	if err := <-cancelled; !errors.Is(err, context.Canceled) {
		t.Fatalf("the download's context ended with %v, want Canceled", err)
	}
}

func TestStatTask(t *testing.T) {
	for _, tc := range []struct {
		name      string
		info      TaskInfo
		wantState string
		wantScope commonv2.SizeScope
		wantHeld  []uint32
	}{
		{"nothing yet, size unknown", TaskInfo{ID: taskA, URL: "https://e/x"}, TaskStatePending, commonv2.SizeScope_UNKNOW, nil},
		{"running", TaskInfo{ID: taskA, URL: "https://e/x", ContentLength: 10 << 20, PieceLength: 4 << 20, PieceCount: 3, Held: pieces(2, 0)},
			TaskStateRunning, commonv2.SizeScope_NORMAL, []uint32{0, 2}},
		{"succeeded, one piece", TaskInfo{ID: taskA, URL: "https://e/x", ContentLength: 1000, PieceLength: 4 << 20, PieceCount: 1, Held: pieces(0), Done: true},
			TaskStateSucceeded, commonv2.SizeScope_SMALL, []uint32{0}},
		{"tiny", TaskInfo{ID: taskA, URL: "https://e/x", ContentLength: 128, PieceCount: 1, Held: pieces(0), Done: true},
			TaskStateSucceeded, commonv2.SizeScope_TINY, []uint32{0}},
		{"empty", TaskInfo{ID: taskA, URL: "https://e/x", Done: true}, TaskStateSucceeded, commonv2.SizeScope_EMPTY, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, cc := serve(t, testConfig, newFakeTasks(tc.info))
			task, err := dfdaemonv2.NewDfdaemonUploadClient(cc).StatTask(context.Background(), &dfdaemonv2.StatTaskRequest{TaskId: taskA})
			if err != nil {
				t.Fatal(err)
			}
			if err := task.Validate(); err != nil {
				t.Errorf("task does not pass the proto's validation: %v", err)
			}
			var held []uint32
			for _, p := range task.GetPieces() {
				held = append(held, p.GetNumber())
			}
			if task.GetId() != taskA || task.GetUrl() != tc.info.URL || task.GetType() != commonv2.TaskType_STANDARD ||
				task.GetContentLength() != tc.info.ContentLength || task.GetPieceCount() != tc.info.PieceCount ||
				task.GetState() != tc.wantState || task.GetSizeScope() != tc.wantScope || !slices.Equal(held, tc.wantHeld) {
				t.Errorf("task = %v\nwant state %s, scope %s, pieces %v", task, tc.wantState, tc.wantScope, tc.wantHeld)
			}
		})
	}
	t.Run("unknown task", func(t *testing.T) {
		_, cc := serve(t, testConfig, newFakeTasks())
		_, err := dfdaemonv2.NewDfdaemonUploadClient(cc).StatTask(context.Background(), &dfdaemonv2.StatTaskRequest{TaskId: taskA})
		if status.Code(err) != codes.NotFound {
			t.Fatalf("err = %v, want NotFound", err)
		}
	})
}

func TestStatLocalTask(t *testing.T) {
	_, cc := serve(t, testConfig, newFakeTasks(TaskInfo{ID: taskA, ContentLength: 5 << 20, PieceLength: 4 << 20, PieceCount: 2, Held: pieces(0, 1), Done: true}))
	resp, err := dfdaemonv2.NewDfdaemonUploadClient(cc).StatLocalTask(context.Background(), &dfdaemonv2.StatLocalTaskRequest{TaskId: taskA})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetTaskId() != taskA || resp.GetContentLength() != 5<<20 || resp.GetPieceLength() != 4<<20 || resp.GetFinishedAt() == nil {
		t.Errorf("StatLocalTask = %v", resp)
	}
}

func TestDeleteTask(t *testing.T) {
	f := newFakeTasks(TaskInfo{ID: taskA})
	_, cc := serve(t, testConfig, f)
	c := dfdaemonv2.NewDfdaemonUploadClient(cc)
	for i, want := range []codes.Code{codes.OK, codes.NotFound} {
		if _, err := c.DeleteTask(context.Background(), &dfdaemonv2.DeleteTaskRequest{TaskId: taskA}); status.Code(err) != want {
			t.Fatalf("delete #%d: err = %v, want %s", i+1, err, want)
		}
	}
	if _, err := f.Task(context.Background(), taskA); !errors.Is(err, ErrTaskNotFound) {
		t.Errorf("task still there after DeleteTask: %v", err)
	}
}

func TestHealth(t *testing.T) {
	s, cc := serve(t, testConfig, newFakeTasks())
	h := healthpb.NewHealthClient(cc)
	check := func(want healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		for _, svc := range []string{"", "dfdaemon.v2.DfdaemonUpload"} {
			resp, err := h.Check(context.Background(), &healthpb.HealthCheckRequest{Service: svc})
			if err != nil || resp.GetStatus() != want {
				t.Errorf("health of %q = %v, %v; want %s", svc, resp.GetStatus(), err, want)
			}
		}
	}
	check(healthpb.HealthCheckResponse_SERVING)
	s.Shutdown()
	check(healthpb.HealthCheckResponse_NOT_SERVING)
}

func TestUnimplemented(t *testing.T) {
	_, cc := serve(t, testConfig, newFakeTasks())
	_, err := dfdaemonv2.NewDfdaemonUploadClient(cc).StatCacheTask(context.Background(), &dfdaemonv2.StatCacheTaskRequest{TaskId: taskA})
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("StatCacheTask err = %v, want Unimplemented", err)
	}
}

// The expected ids are sha256 over the concatenated inputs, computed outside Go
// (python3 hashlib), following dragonfly-client-util/src/id_generator/mod.rs task_id.
func TestTaskID(t *testing.T) {
	length := uint64(4 << 20)
	blobHex := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		name    string
		d       *commonv2.Download
		want    string
		wantErr string
	}{
		{"url, tag, application, piece length",
			&commonv2.Download{Url: "https://example.com/blobs/file.bin", Tag: ptr("nydus"), Application: ptr("dfnydus"), PieceLength: &length},
			"e5f66925721562c7cd12bf840d4b10b86e9368ad4d620c02ef726f01d650d05a", ""},
		{"url only",
			&commonv2.Download{Url: "https://example.com/blobs/file.bin"},
			"7d94b5bb2c2a2a2f2e71c86dd99593a0cf71d01265e4793342a76c25cfb5d124", ""},
		{"filtered query parameters are dropped",
			&commonv2.Download{Url: "https://example.com/f?b=2&X-Amz-Signature=zzz&a=1", FilteredQueryParams: []string{"X-Amz-Signature"}},
			"2d3d55b693e81116dab2925ae6d11ac4581f252ecfed050b89b53577296a1f02", ""},
		{"hugging face revision",
			&commonv2.Download{Url: "https://example.com/blobs/file.bin", HuggingFace: &commonv2.HuggingFace{Revision: "v1.0"}},
			"fb7834965648a063a05fa563b8c4360d0c8fb481f33f0d6b806634963632af79", ""},
		{"content",
			&commonv2.Download{Url: "https://example.com/x", ContentForCalculatingTaskId: ptr("my content")},
			"47a96905708e5470528752169f80e1d8d8b79c599ed35b0979fb9f17e9babfe6", ""},
		{"blob digest",
			&commonv2.Download{Url: "https://r.example/v2/library/x/blobs/sha256:" + blobHex + "?ns=docker.io", EnableTaskIdBasedBlobDigest: true},
			blobHex, ""},
		{"blob URL without the blob digest flag is URL-based",
			&commonv2.Download{Url: "https://example.com/blobs/file.bin", EnableTaskIdBasedBlobDigest: true},
			"7d94b5bb2c2a2a2f2e71c86dd99593a0cf71d01265e4793342a76c25cfb5d124", ""},
		{"bad blob digest",
			&commonv2.Download{Url: "https://r.example/v2/library/x/blobs/sha256:abc", EnableTaskIdBasedBlobDigest: true},
			"", "not a sha256 or sha512 digest"},
		{"no url", &commonv2.Download{}, "", "no url"},
		{"no download", nil, "", "no url"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := TaskID(tc.d)
			if got != tc.want || (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("TaskID = %q, %v; want %q, error %q", got, err, tc.want, tc.wantErr)
			}
		})
	}
}
