package schedtest_test

import (
	"context"
	"errors"
	"maps"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	schedclient "github.com/dfnydus/dfnydus/scheduler-client"
	"github.com/dfnydus/dfnydus/test/internal/schedtest"
)

// TestSessionSurvivesSchedulerLoss breaks the scheduler under a session that has reported two of
// three pieces. The session must carry on, registered again (on the second scheduler, or on the
// same one after a restart) with its pieces replayed; the scheduler it lands on must end up with
// the whole task.
func TestSessionSurvivesSchedulerLoss(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		two        bool                       // a second scheduler is configured
		breakFirst func(*schedtest.Scheduler) // what happens to the first scheduler
	}{
		{"first scheduler stopped, second takes over", true, (*schedtest.Scheduler).Stop},
		{"first scheduler killed, second takes over", true, (*schedtest.Scheduler).Kill},
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
			b := newBlob("library/failover", 3)
			a := newClient(t, peerHost("peer-a", 45000), addrs)
			s := register(t, a, b.spec())
			nextEvent(t, s, schedclient.EventBackToSource)
			if err := s.Started(true); err != nil {
				t.Fatal(err)
			}
			reportPieces(t, s, b, 0, 2, "")

			tc.breakFirst(first)

			if ev := nextEvent(t, s, schedclient.EventReconnected); ev.Scheduler != landing.Addr() {
				t.Errorf("registered again on %s, want %s", ev.Scheduler, landing.Addr())
			}
			// The scheduler that took over never saw the task: it sends the peer back to source.
			if ev := nextEvent(t, s, schedclient.EventBackToSource); ev.Scheduler != landing.Addr() {
				t.Errorf("answer from %s, want %s", ev.Scheduler, landing.Addr())
			}
			reportPieces(t, s, b, 2, 3, "")
			if err := s.Finished(true); err != nil {
				t.Fatal(err)
			}
			if got := a.Scheduler(); got != landing.Addr() {
				t.Errorf("client uses %s, want %s", got, landing.Addr())
			}

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

			// A peer that starts now (first scheduler still listed first) finds the survivor and
			// gets the re-registered peer as its parent.
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

// TestSessionEndsWhenEverySchedulerIsGone: with no scheduler left the session delivers EventError,
// closes Events, and refuses further reports.
func TestSessionEndsWhenEverySchedulerIsGone(t *testing.T) {
	t.Parallel()
	first := schedtest.Start(t, schedtest.Options{})
	second := schedtest.Start(t, schedtest.Options{})
	b := newBlob("library/gone", 2)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := schedclient.New(ctx, schedclient.Config{
		Addrs: []string{first.Addr(), second.Addr()}, Host: peerHost("peer-gone", 47000),
		Log: zaptest.NewLogger(t), DialTimeout: 2 * time.Second, ReconnectTimeout: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	s := register(t, c, b.spec())
	nextEvent(t, s, schedclient.EventBackToSource)
	if err := s.Started(true); err != nil {
		t.Fatal(err)
	}

	second.Kill()
	first.Kill()

	ev := nextEvent(t, s, schedclient.EventError)
	if !errors.Is(ev.Err, schedclient.ErrNoScheduler) {
		t.Errorf("error %v, want one wrapping ErrNoScheduler", ev.Err)
	}
	if _, open := <-s.Events(); open {
		t.Error("events still open after EventError")
	}
	if err := s.PieceFinished(b.piece(0), ""); !errors.Is(err, schedclient.ErrSessionEnded) {
		t.Errorf("report after the end: %v, want ErrSessionEnded", err)
	}
	if _, err := c.Register(ctx, b.spec()); !errors.Is(err, schedclient.ErrNoScheduler) {
		t.Errorf("register with no scheduler: %v, want ErrNoScheduler", err)
	}
}

// TestSessionsOfOneHostFailOverTogether: several sessions of one client lose their scheduler at
// once; each must land on the second scheduler with its own pieces, and the client must switch
// once.
func TestSessionsOfOneHostFailOverTogether(t *testing.T) {
	t.Parallel()
	first := schedtest.Start(t, schedtest.Options{})
	second := schedtest.Start(t, schedtest.Options{})
	c := newClient(t, peerHost("peer-many", 49000), []string{first.Addr(), second.Addr()})
	var blobs []blob
	var sessions []*schedclient.Session
	for i := range 3 { // registers one after another: the register delay grows with concurrency
		b := newBlob("library/many"+string(rune('a'+i)), 2+i)
		s := register(t, c, b.spec())
		nextEvent(t, s, schedclient.EventBackToSource)
		if err := s.Started(true); err != nil {
			t.Fatal(err)
		}
		reportPieces(t, s, b, 0, 1, "")
		blobs, sessions = append(blobs, b), append(sessions, s)
	}

	first.Kill()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i, s := range sessions {
		if ev := nextEvent(t, s, schedclient.EventReconnected); ev.Scheduler != second.Addr() {
			t.Errorf("session %d registered again on %s, want %s", i, ev.Scheduler, second.Addr())
		}
		nextEvent(t, s, schedclient.EventBackToSource)
		task, err := c.StatTask(ctx, blobs[i].taskID())
		if err != nil {
			t.Fatal(err)
		}
		if got := pieceDigests(task.GetPieces()); len(got) != 1 || got[0] != blobs[i].piece(0).Digest {
			t.Errorf("task %d on the second scheduler has pieces %v, want piece 0 only", i, got)
		}
		if task.GetPieceCount() != uint32(blobs[i].pieces()) {
			t.Errorf("task %d piece count %d, want %d", i, task.GetPieceCount(), blobs[i].pieces())
		}
	}
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
