package schedtest_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	commonv2 "d7y.io/api/v2/pkg/apis/common/v2"
	schedulerv2 "d7y.io/api/v2/pkg/apis/scheduler/v2"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	schedclient "github.com/dfnydus/dfnydus/scheduler-client"
	"github.com/dfnydus/dfnydus/test/internal/schedtest"
)

// newHealingClient is newClient with short backoff pauses, for tests that take schedulers away.
func newHealingClient(t *testing.T, host schedclient.Host, addrs []string, queueLimit int) *schedclient.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := schedclient.New(ctx, schedclient.Config{
		Addrs: addrs, Host: host, Log: zaptest.NewLogger(t).Named(host.Hostname), DialTimeout: 3 * time.Second,
		ReconnectBackoff: 100 * time.Millisecond, MaxReconnectBackoff: time.Second, ReportQueueLimit: queueLimit,
	})
	if err != nil {
		t.Fatalf("new client for %s: %v", host.Hostname, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = c.Close(ctx)
	})
	return c
}

// TestTasksSplitAsTheRingSays: with two schedulers the host is announced to both, and each task
// is registered on the scheduler the ring picks for it, and only there.
func TestTasksSplitAsTheRingSays(t *testing.T) {
	t.Parallel()
	s1, s2 := schedtest.Start(t, schedtest.Options{}), schedtest.Start(t, schedtest.Options{})
	c := newClient(t, peerHost("peer-ring", 45500), []string{s1.Addr(), s2.Addr()})
	raw := map[string]schedulerv2.SchedulerClient{s1.Addr(): rawScheduler(t, s1.Addr()), s2.Addr(): rawScheduler(t, s2.Addr())}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// Two tasks the ring sends to each scheduler, and a few more wherever they fall.
	blobs := []blob{blobOn(t, c, "library/ring-a", 1, s1.Addr()), blobOn(t, c, "library/ring-b", 1, s2.Addr()),
		blobOn(t, c, "library/ring-c", 1, s1.Addr()), blobOn(t, c, "library/ring-d", 1, s2.Addr())}
	for i := range 4 {
		blobs = append(blobs, newBlob(fmt.Sprint("library/ring-any-", i), 1))
	}
	count := map[string]int{}
	for _, b := range blobs {
		s := register(t, c, b.spec())
		ev := nextEvent(t, s, schedclient.EventBackToSource)
		want := c.SchedulerFor(b.taskID())
		count[want]++
		if ev.Scheduler != want || s.Scheduler() != want {
			t.Errorf("task %s answered by %s (session on %s), ring picks %s", b.taskID(), ev.Scheduler, s.Scheduler(), want)
		}
		for addr, cl := range raw {
			_, err := cl.StatTask(ctx, &schedulerv2.StatTaskRequest{HostId: c.HostID(), TaskId: b.taskID()})
			switch {
			case addr == want && err != nil:
				t.Errorf("task %s not on its scheduler %s: %v", b.taskID(), addr, err)
			case addr != want && status.Code(err) != codes.NotFound:
				t.Errorf("task %s on %s, which the ring did not pick: %v", b.taskID(), addr, err)
			}
		}
	}
	t.Logf("tasks per scheduler: %v", count)
	// New returns once one scheduler accepted the host; by now (tasks registered on both) both have.
	for addr, cl := range raw {
		hosts, err := cl.ListHosts(ctx, &schedulerv2.ListHostsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(hosts.GetHosts(), func(h *commonv2.Host) bool { return h.GetId() == c.HostID() }) {
			t.Errorf("host %s not announced to %s", c.HostID(), addr)
		}
	}
}

// TestSessionMovesToTheNextSchedulerOnTheRing breaks the scheduler under a session that has
// reported two of three pieces. The session must carry on, registered again on the next scheduler
// on the ring (or on the same one after a restart) with its pieces replayed; the scheduler it lands
// on must end up with the whole task, and a new peer of the task must find it there.
func TestSessionMovesToTheNextSchedulerOnTheRing(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		two        bool                       // a second scheduler is configured
		breakFirst func(*schedtest.Scheduler) // what happens to the task's scheduler
	}{
		{"task's scheduler stopped, the next takes over", true, (*schedtest.Scheduler).Stop},
		{"task's scheduler killed, the next takes over", true, (*schedtest.Scheduler).Kill},
		{"only scheduler restarted", false, (*schedtest.Scheduler).Restart},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			first := schedtest.Start(t, schedtest.Options{})
			addrs, landing := []string{first.Addr()}, first
			if tc.two {
				second := schedtest.Start(t, schedtest.Options{})
				addrs, landing = append(addrs, second.Addr()), second
			}
			a := newHealingClient(t, peerHost("peer-a", 45000), addrs, 0)
			b := blobOn(t, a, "library/failover", 3, first.Addr())
			s := register(t, a, b.spec())
			nextEvent(t, s, schedclient.EventBackToSource)
			if err := s.Started(true); err != nil {
				t.Fatal(err)
			}
			reportPieces(t, s, b, 0, 2, "")

			tc.breakFirst(first)

			nextEvent(t, s, schedclient.EventDisconnected)
			if ev := nextEvent(t, s, schedclient.EventReconnected); ev.Scheduler != landing.Addr() {
				t.Errorf("registered again on %s, want %s", ev.Scheduler, landing.Addr())
			}
			// The scheduler that took over never saw the task: it sends the peer back to source.
			if ev := nextEvent(t, s, schedclient.EventBackToSource); ev.Scheduler != landing.Addr() {
				t.Errorf("answer from %s, want %s", ev.Scheduler, landing.Addr())
			}
			reportPieces(t, s, b, 2, 3, "")
			finish(t, s, s.Finished(true))

			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			task, err := a.StatTask(ctx, b.taskID())
			if err != nil {
				t.Fatal(err)
			}
			if task.GetState() != "Succeeded" || task.GetPieceCount() != uint32(b.pieces()) {
				t.Errorf("task on %s: state %s, piece count %d; want Succeeded, %d", landing.Addr(), task.GetState(), task.GetPieceCount(), b.pieces())
			}
			if got, want := pieceDigests(task.GetPieces()), wantDigests(b); !maps.Equal(got, want) {
				t.Errorf("pieces on %s: %v, want %v (two replayed, one new)", landing.Addr(), got, want)
			}

			// A peer that starts now (its ring still picks the first scheduler) finds the survivor
			// and gets the re-registered peer as its parent.
			if tc.two {
				c := newClient(t, peerHost("peer-b", 46000), addrs)
				sb := register(t, c, b.spec())
				ev := nextEvent(t, sb, schedclient.EventParents)
				if len(ev.Parents) != 1 || ev.Parents[0].PeerID != s.PeerID() {
					t.Errorf("parents %v, want %s", parentIDs(ev.Parents), s.PeerID())
				}
			}
		})
	}
}

// TestOutageHeals: a session whose only scheduler dies, and one registered while it is down, both
// register when the scheduler comes back on the same address (empty: it forgot the host, which is
// announced again first); the first replays its pieces, and a peer of another host gets it as a
// parent.
func TestOutageHeals(t *testing.T) {
	t.Parallel()
	sched := schedtest.Start(t, schedtest.Options{})
	addrs := []string{sched.Addr()}
	c := newHealingClient(t, peerHost("peer-outage", 47000), addrs, 0)
	b1, b2 := newBlob("library/outage-one", 3), newBlob("library/outage-two", 2)
	s1 := register(t, c, b1.spec())
	nextEvent(t, s1, schedclient.EventBackToSource)
	if err := s1.Started(true); err != nil {
		t.Fatal(err)
	}
	reportPieces(t, s1, b1, 0, 2, "")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := s1.Sync(ctx); err != nil {
		t.Fatal(err)
	}

	sched.Kill()
	nextEvent(t, s1, schedclient.EventDisconnected)
	s2, err := c.Register(ctx, b2.spec())
	if err != nil {
		t.Fatalf("register while the scheduler is down: %v", err)
	}
	t.Cleanup(func() { _ = s2.Close() })
	nextEvent(t, s2, schedclient.EventDisconnected)
	reportPieces(t, s1, b1, 2, 3, "") // while down: recorded and replayed

	time.Sleep(10 * time.Second) // an outage longer than a few backoff rounds
	sched.Restart()

	nextEvent(t, s1, schedclient.EventReconnected)
	nextEvent(t, s1, schedclient.EventBackToSource)
	nextEvent(t, s2, schedclient.EventBackToSource)
	if err := s1.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	task, err := c.StatTask(ctx, b1.taskID())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := pieceDigests(task.GetPieces()), wantDigests(b1); !maps.Equal(got, want) {
		t.Errorf("pieces after the outage %v, want %v", got, want)
	}
	peer, err := c.StatPeer(ctx, b1.taskID(), s1.PeerID())
	if err != nil {
		t.Fatal(err)
	}
	if peer.GetState() != "BackToSource" || peer.GetHost().GetId() != c.HostID() {
		t.Errorf("peer state %s on host %s, want BackToSource on %s", peer.GetState(), peer.GetHost().GetId(), c.HostID())
	}
	other := newClient(t, peerHost("peer-after-outage", 47500), addrs)
	so := register(t, other, b1.spec())
	if ev := nextEvent(t, so, schedclient.EventParents); len(ev.Parents) != 1 || ev.Parents[0].PeerID != s1.PeerID() {
		t.Errorf("parents %v, want %s", parentIDs(ev.Parents), s1.PeerID())
	}
}

// TestCloseReleasesThePeer: Close deletes the peer from the scheduler.
func TestCloseReleasesThePeer(t *testing.T) {
	t.Parallel()
	sched := schedtest.Start(t, schedtest.Options{})
	c := newClient(t, peerHost("peer-close", 48000), []string{sched.Addr()})
	b := newBlob("library/close", 2)
	s := register(t, c, b.spec())
	nextEvent(t, s, schedclient.EventBackToSource)
	if err := s.Started(true); err != nil {
		t.Fatal(err)
	}
	reportPieces(t, s, b, 0, 1, "")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.StatPeer(ctx, b.taskID(), s.PeerID()); err != nil {
		t.Fatalf("peer before Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, open := <-s.Events(); open {
		t.Error("events open after Close")
	}
	if _, err := c.StatPeer(ctx, b.taskID(), s.PeerID()); status.Code(err) != codes.NotFound {
		t.Errorf("peer after Close: %v, want NotFound", err)
	}
}

// TestReportsDoNotWaitForAFrozenScheduler: with the scheduler frozen (SIGSTOP: the stream stays
// open, nothing reads it) 10k piece reports return, the queue stays within its limit, and Close
// returns; after the scheduler resumes, a session still works.
func TestReportsDoNotWaitForAFrozenScheduler(t *testing.T) {
	t.Parallel()
	sched := schedtest.Start(t, schedtest.Options{})
	const limit = 256
	c := newHealingClient(t, peerHost("peer-frozen", 48500), []string{sched.Addr()}, limit)
	b := newBlob("library/frozen", 2)
	s := register(t, c, b.spec())
	nextEvent(t, s, schedclient.EventBackToSource)
	if err := s.Started(true); err != nil {
		t.Fatal(err)
	}
	sched.Pause()
	t.Cleanup(sched.Resume)
	done := make(chan error, 1)
	go func() {
		for i := range 10000 {
			p := b.piece(0)
			p.Number, p.Offset = uint32(i), uint64(i)*pieceLen
			if err := s.PieceFinished(p, ""); err != nil {
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
		t.Fatal("PieceFinished blocked on a frozen scheduler")
	}
	if n := s.Pending(); n > limit+1 { // the limit, and Started if it is still queued
		t.Errorf("%d reports queued, limit %d", n, limit)
	}
	closed := make(chan struct{})
	go func() { _ = s.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("Close blocked on a frozen scheduler")
	}
	sched.Resume()
	s2 := register(t, c, newBlob("library/after-frozen", 1).spec())
	nextEvent(t, s2, schedclient.EventBackToSource)
}

// TestHostAnnouncedAgainAfterRestart: the periodic announce puts the host back on a scheduler that
// restarted empty, with no session to trigger it.
func TestHostAnnouncedAgainAfterRestart(t *testing.T) {
	t.Parallel()
	sched := schedtest.Start(t, schedtest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := schedclient.New(ctx, schedclient.Config{
		Addrs: []string{sched.Addr()}, Host: peerHost("peer-again", 49500),
		Log: zaptest.NewLogger(t), AnnounceInterval: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	listed := func() bool {
		hosts, err := c.ListHosts(ctx)
		if err != nil {
			return false
		}
		for _, h := range hosts {
			if h.GetId() == c.HostID() {
				return true
			}
		}
		return false
	}
	if !listed() {
		t.Fatal("host not listed after New")
	}
	sched.Restart()
	for !listed() {
		select {
		case <-ctx.Done():
			t.Fatalf("host %s never announced again: %v", c.HostID(), ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// TestFinishedPeerIsAParentAgainAfterRestart: a peer that finished its task (the scheduler
// acknowledged the outcome and closed the stream) has no stream that would see the scheduler
// go; the health check does, and after the restart the peer registers again, replaying its pieces
// and outcome, so that a new peer gets it as a parent.
func TestFinishedPeerIsAParentAgainAfterRestart(t *testing.T) {
	t.Parallel()
	sched := schedtest.Start(t, schedtest.Options{})
	addrs := []string{sched.Addr()}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := schedclient.New(ctx, schedclient.Config{
		Addrs: addrs, Host: peerHost("peer-finished", 48500), Log: zaptest.NewLogger(t), DialTimeout: 3 * time.Second,
		ReconnectBackoff: 100 * time.Millisecond, MaxReconnectBackoff: time.Second, HealthInterval: 500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	b := newBlob("library/finished-restart", 3)
	s := register(t, c, b.spec())
	nextEvent(t, s, schedclient.EventBackToSource)
	if err := s.Started(true); err != nil {
		t.Fatal(err)
	}
	reportPieces(t, s, b, 0, 3, "")
	if err := s.Finished(true); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	sched.Restart()
	other := newClient(t, peerHost("peer-after-restart", 48600), addrs)
	for {
		so := register(t, other, b.spec())
		var ev schedclient.Event
		select {
		case ev = <-so.Events():
		case <-time.After(eventWait):
		}
		_ = so.Close()
		if ev.Kind == schedclient.EventParents && len(ev.Parents) == 1 && ev.Parents[0].PeerID == s.PeerID() {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the finished peer never became a parent again after the restart (last answer %v)", ev.Kind)
		case <-time.After(time.Second):
		}
	}
}
