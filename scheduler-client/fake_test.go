package schedclient

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	schedulerv2 "d7y.io/api/v2/pkg/apis/scheduler/v2"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// fakeScheduler is an in-process scheduler.v2 server that records what it is sent. The real
// scheduler is exercised by test/internal/schedtest; this one can misbehave on purpose.
type fakeScheduler struct {
	schedulerv2.UnimplementedSchedulerServer
	addr   string
	srv    *grpc.Server
	noRead bool // AnnouncePeer answers the register and then never reads

	mu      sync.Mutex
	hosts   map[string]bool
	peers   map[string][]string // peer id -> request kinds received, in order
	deleted []string
	changed chan struct{}
}

// startFake serves a fake scheduler on addr ("127.0.0.1:0" for a free port).
func startFake(t *testing.T, addr string, noRead bool) *fakeScheduler {
	t.Helper()
	var l net.Listener
	var err error
	for range 50 { // the port of a stopped fake may take a moment to be free again
		if l, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	// A fixed window (no BDP growth) so that a peer that is not read is blocked by flow control.
	f := &fakeScheduler{addr: l.Addr().String(), noRead: noRead, hosts: map[string]bool{}, peers: map[string][]string{},
		changed: make(chan struct{}), srv: grpc.NewServer(grpc.InitialWindowSize(64<<10), grpc.InitialConnWindowSize(64<<10))}
	schedulerv2.RegisterSchedulerServer(f.srv, f)
	go func() { _ = f.srv.Serve(l) }()
	t.Cleanup(f.srv.Stop)
	return f
}

func (f *fakeScheduler) note(fn func()) {
	f.mu.Lock()
	fn()
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

// waitFor waits until cond (called under the lock) holds.
func (f *fakeScheduler) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		f.mu.Lock()
		ok, ch := cond(), f.changed
		f.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("fake %s: %s did not happen", f.addr, what)
		}
	}
}

func (f *fakeScheduler) AnnounceHost(_ context.Context, req *schedulerv2.AnnounceHostRequest) (*emptypb.Empty, error) {
	f.note(func() { f.hosts[req.GetHost().GetId()] = true })
	return &emptypb.Empty{}, nil
}

func (f *fakeScheduler) DeleteHost(context.Context, *schedulerv2.DeleteHostRequest) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}

func (f *fakeScheduler) DeletePeer(_ context.Context, req *schedulerv2.DeletePeerRequest) (*emptypb.Empty, error) {
	f.note(func() { f.deleted = append(f.deleted, req.GetPeerId()) })
	return &emptypb.Empty{}, nil
}

func (f *fakeScheduler) AnnouncePeer(stream schedulerv2.Scheduler_AnnouncePeerServer) error {
	for {
		req, err := stream.Recv()
		if err != nil {
			return err
		}
		kind := requestKind(req)
		var known bool
		f.note(func() {
			known = f.hosts[req.GetHostId()]
			f.peers[req.GetPeerId()] = append(f.peers[req.GetPeerId()], kind)
		})
		if !known {
			return status.Error(codes.NotFound, "host not found")
		}
		switch {
		case kind == "register":
			if err := stream.Send(&schedulerv2.AnnouncePeerResponse{Response: &schedulerv2.AnnouncePeerResponse_NeedBackToSourceResponse{
				NeedBackToSourceResponse: &schedulerv2.NeedBackToSourceResponse{}}}); err != nil {
				return err
			}
			if f.noRead {
				<-stream.Context().Done()
				return nil
			}
		case strings.HasSuffix(kind, "finished") && !strings.Contains(kind, "piece"):
			return nil // like the real scheduler: the outcome ends the stream
		}
	}
}

func requestKind(req *schedulerv2.AnnouncePeerRequest) string {
	switch r := req.GetRequest().(type) {
	case *schedulerv2.AnnouncePeerRequest_RegisterPeerRequest:
		return "register"
	case *schedulerv2.AnnouncePeerRequest_DownloadPeerBackToSourceStartedRequest:
		return "started"
	case *schedulerv2.AnnouncePeerRequest_DownloadPieceBackToSourceFinishedRequest:
		return fmt.Sprintf("piece %d", r.DownloadPieceBackToSourceFinishedRequest.GetPiece().GetNumber())
	case *schedulerv2.AnnouncePeerRequest_DownloadPeerBackToSourceFinishedRequest:
		return "finished"
	}
	return fmt.Sprintf("%T", req.GetRequest())
}

func (f *fakeScheduler) requests(peer string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.peers[peer])
}

func fakeClient(t *testing.T, addrs []string, limit int) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := New(ctx, Config{Addrs: addrs, Host: Host{Hostname: "fake-peer", IP: "127.0.0.1", Port: 40000},
		Log: zaptest.NewLogger(t), DialTimeout: 2 * time.Second, ReconnectBackoff: 50 * time.Millisecond,
		MaxReconnectBackoff: 500 * time.Millisecond, ReportQueueLimit: limit})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

func fakeSpec(name string) TaskSpec {
	url := "http://registry.test/v2/fake/blobs/sha256:" + name
	return TaskSpec{TaskID: TaskID(url, MinPieceLength), URL: url, PieceLength: MinPieceLength, ContentLength: 100 * MinPieceLength}
}

func expect(t *testing.T, s *Session, kinds ...EventKind) {
	t.Helper()
	for _, want := range kinds {
		select {
		case ev, ok := <-s.Events():
			if !ok || ev.Kind != want {
				t.Fatalf("event %v (open %v, err %v), want %s", ev.Kind, ok, ev.Err, want)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("no %s event", want)
		}
	}
}

func piece(n uint32) Piece {
	return Piece{Number: n, Offset: uint64(n) * MinPieceLength, Length: MinPieceLength, Digest: "crc32:1"}
}

// TestReportsNeverBlock: a scheduler that takes the stream and never reads it blocks the sender
// goroutine on flow control; 10k reports must still return, the queue stays within its limit,
// and Close still returns.
func TestReportsNeverBlock(t *testing.T) {
	f := startFake(t, "127.0.0.1:0", true)
	const limit = 64
	c := fakeClient(t, []string{f.addr}, limit)
	s, err := c.Register(context.Background(), fakeSpec("noread"))
	if err != nil {
		t.Fatal(err)
	}
	expect(t, s, EventBackToSource)
	done := make(chan error, 1)
	go func() {
		if err := s.Started(true); err != nil {
			done <- err
			return
		}
		for i := range 10000 {
			if err := s.PieceFinished(piece(uint32(i)), ""); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second): // a hang guard, not a timing assertion
		t.Fatal("PieceFinished blocked")
	}
	if n := s.Pending(); n > limit+2 {
		t.Errorf("%d reports queued, limit %d", n, limit)
	}
	closed := make(chan struct{})
	go func() { _ = s.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("Close blocked")
	}
	if _, ok := <-s.Events(); ok {
		t.Error("Events still open after Close")
	}
}

// TestSessionHealsAfterOutage: sessions survive their scheduler going away, a session registered
// meanwhile waits for it, and both register (after the host is announced again) on the
// scheduler that comes back on the same address, the first one replaying its reports.
func TestSessionHealsAfterOutage(t *testing.T) {
	f := startFake(t, "127.0.0.1:0", false)
	c := fakeClient(t, []string{f.addr}, 0)
	a, err := c.Register(context.Background(), fakeSpec("a"))
	if err != nil {
		t.Fatal(err)
	}
	expect(t, a, EventBackToSource)
	_ = a.Started(true)
	_ = a.PieceFinished(piece(1), "")
	_ = a.PieceFinished(piece(0), "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	f.srv.Stop()
	expect(t, a, EventDisconnected)

	b, err := c.Register(context.Background(), fakeSpec("b"))
	if err != nil {
		t.Fatalf("register while the scheduler is down: %v", err)
	}
	expect(t, b, EventDisconnected)
	_ = a.PieceFinished(piece(2), "") // while disconnected: recorded, replayed

	g := startFake(t, f.addr, false)
	expect(t, a, EventReconnected, EventBackToSource)
	expect(t, b, EventBackToSource)
	want := []string{"register", "started", "piece 0", "piece 1", "piece 2"}
	g.waitFor(t, fmt.Sprintf("replay %v", want), func() bool { return slices.Equal(g.peers[a.PeerID()], want) })
	if err := a.Finished(true); err != nil {
		t.Fatal(err)
	}
	if err := a.Sync(ctx); err != nil {
		t.Fatalf("outcome not acknowledged: %v", err)
	}
	if err := a.PieceFinished(piece(3), ""); err != ErrSessionEnded {
		t.Errorf("report after the outcome: %v, want ErrSessionEnded", err)
	}
	_ = a.Close()
	g.waitFor(t, "DeletePeer of the closed session", func() bool { return slices.Contains(g.deleted, a.PeerID()) })
}

// TestSessionsFollowTheRing: each session registers on the scheduler the ring picks for its task.
func TestSessionsFollowTheRing(t *testing.T) {
	f1, f2 := startFake(t, "127.0.0.1:0", false), startFake(t, "127.0.0.1:0", false)
	c := fakeClient(t, []string{f1.addr, f2.addr}, 0)
	byAddr := map[string]*fakeScheduler{f1.addr: f1, f2.addr: f2}
	for _, f := range byAddr {
		f.waitFor(t, "host announce", func() bool { return f.hosts[c.HostID()] })
	}
	for i := range 8 {
		s, err := c.Register(context.Background(), fakeSpec(fmt.Sprint(i)))
		if err != nil {
			t.Fatal(err)
		}
		expect(t, s, EventBackToSource)
		want := c.scheds[c.ring.order(s.TaskID())[0]].addr
		if got := s.Scheduler(); got != want || c.SchedulerFor(s.TaskID()) != want {
			t.Errorf("task %s on %s, ring picks %s", s.TaskID(), got, want)
		}
		if len(byAddr[want].requests(s.PeerID())) == 0 {
			t.Errorf("task %s: %s got no register", s.TaskID(), want)
		}
	}
}

func TestReportQueue(t *testing.T) {
	q := newReportQueue(3)
	adv := &schedulerv2.AnnouncePeerRequest{}
	q.push(report{kind: reportState, req: adv})
	q.push(report{kind: reportPiece, number: 1})
	q.push(report{kind: reportPiece, number: 1}) // coalesced
	q.push(report{kind: reportAdvice, req: adv})
	q.push(report{kind: reportPiece, number: 2}) // full: piece 1 goes
	q.push(report{kind: reportState, req: adv})  // state is never dropped nor refused
	var got []string
	for r, ok := q.pop(); ok; r, ok = q.pop() {
		got = append(got, fmt.Sprintf("%d%d", r.kind, r.number))
	}
	want := []string{"00", "20", "12", "00"}
	if !slices.Equal(got, want) {
		t.Errorf("queue gave %v, want %v", got, want)
	}
	if q.dropped != 1 || len(q.pending) != 0 {
		t.Errorf("dropped %d, pending %v", q.dropped, q.pending)
	}
}

func TestBackoffGrowsToTheCap(t *testing.T) {
	b := backoff{base: 200 * time.Millisecond, max: time.Second}
	for i, hi := range []time.Duration{200, 400, 800, 1000, 1000} {
		hi *= time.Millisecond
		if d := b.next(); d < hi/2 || d > hi {
			t.Errorf("pause %d: %s, want within [%s, %s]", i, d, hi/2, hi)
		}
	}
	b.reset()
	if d := b.next(); d > 200*time.Millisecond {
		t.Errorf("after reset: %s", d)
	}
}

// TestSessionFollowsTheRingBack: a session whose scheduler died moves to the next one on the ring,
// and back when its own scheduler accepts the host again (where the Rust peers send the task),
// deleting the peer it leaves behind.
func TestSessionFollowsTheRingBack(t *testing.T) {
	f1, f2 := startFake(t, "127.0.0.1:0", false), startFake(t, "127.0.0.1:0", false)
	c := fakeClient(t, []string{f1.addr, f2.addr}, 0)
	var spec TaskSpec
	for i := 0; ; i++ { // a task whose scheduler is f1
		if spec = fakeSpec(fmt.Sprint("back", i)); c.SchedulerFor(spec.TaskID) == f1.addr {
			break
		}
	}
	s, err := c.Register(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	expect(t, s, EventBackToSource)
	_ = s.Started(true)
	f1.srv.Stop()
	expect(t, s, EventDisconnected, EventReconnected, EventBackToSource)
	if got := s.Scheduler(); got != f2.addr {
		t.Fatalf("after f1 stopped the session is on %q, want %s", got, f2.addr)
	}
	g1 := startFake(t, f1.addr, false)
	expect(t, s, EventReconnected, EventBackToSource)
	if got := s.Scheduler(); got != f1.addr {
		t.Errorf("after f1 came back the session is on %q, want %s", got, f1.addr)
	}
	f2.waitFor(t, "DeletePeer on the scheduler left", func() bool { return slices.Contains(f2.deleted, s.PeerID()) })
	g1.waitFor(t, "replay on the scheduler back", func() bool { return slices.Contains(g1.peers[s.PeerID()], "started") })
}
