package schedtest_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"testing"
	"time"

	commonv2 "d7y.io/api/v2/pkg/apis/common/v2"

	schedclient "github.com/dfnydus/dfnydus/scheduler-client"
	"github.com/dfnydus/dfnydus/test/internal/schedtest"
)

func TestAnnounceHostIsListedWithOurFields(t *testing.T) {
	t.Parallel()
	sched := schedtest.Start(t, schedtest.Options{})
	for _, tc := range []struct {
		name string
		host schedclient.Host
	}{
		{"normal peer", peerHost("peer-normal", 40000)},
		{"super seed", schedclient.Host{Type: schedclient.HostTypeSuperSeed, Hostname: "seed-one", IP: "127.0.0.1",
			Port: 40010, DownloadPort: 40011, ProxyPort: 40012, Version: "v9.9.9", GitCommit: "abc123"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClient(t, tc.host, []string{sched.Addr()})
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			hosts, err := c.ListHosts(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var got *commonv2.Host
			for _, h := range hosts {
				if h.GetId() == c.HostID() {
					got = h
				}
			}
			if got == nil {
				t.Fatalf("host %s not listed among %d hosts", c.HostID(), len(hosts))
			}
			want := c.Host()
			if wantID := schedclient.HostID(want.IP, want.Hostname, want.Type != 0); c.HostID() != wantID {
				t.Errorf("host id %s, want Dragonfly's %s", c.HostID(), wantID)
			}
			checks := []struct {
				field string
				ok    bool
			}{
				{"type", got.GetType() == uint32(want.Type)},
				{"hostname", got.GetHostname() == want.Hostname},
				{"ip", got.GetIp() == want.IP},
				{"port", got.GetPort() == int32(want.Port)},
				{"download_port", got.GetDownloadPort() == int32(want.DownloadPort)},
				{"proxy_port", got.GetProxyPort() == int32(want.ProxyPort)},
				{"os", got.GetOs() == "linux"},
				{"platform", got.GetPlatform() != ""},
				{"kernel_version", got.GetKernelVersion() != ""},
				{"cpu.logical_count", got.GetCpu().GetLogicalCount() > 0},
				{"cpu.times.user", got.GetCpu().GetTimes().GetUser() > 0},
				{"memory.total", got.GetMemory().GetTotal() > 0},
				{"disk.total", got.GetDisk().GetTotal() > 0},
				{"disk.inodes_total", got.GetDisk().GetInodesTotal() > 0},
				{"network.location", got.GetNetwork().GetLocation() == want.Location},
				{"network.idc", got.GetNetwork().GetIdc() == want.IDC},
				{"build.git_version", got.GetBuild().GetGitVersion() == want.Version},
				{"build.git_commit", got.GetBuild().GetGitCommit() == want.GitCommit},
				{"build.go_version", got.GetBuild().GetGoVersion() != ""},
			}
			for _, ch := range checks {
				if !ch.ok {
					t.Errorf("listed host field %s is not what we announced; host: %v", ch.field, got)
				}
			}
		})
	}
}

// TestTaskIDIsDragonflys checks TaskID against the formula written out
// (hex(sha256(url + tag + application + revision + piece length + "STANDARD")), pkg/idgen/task_id.go);
// tools/idgen_test.go compares it with the real idgen package.
func TestTaskIDIsDragonflys(t *testing.T) {
	t.Parallel()
	const blobURL = "http://10.0.0.1:5000/v2/library/ubuntu/blobs/sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, tc := range []struct {
		name        string
		url         string
		pieceLength uint64
		formula     string
	}{
		{"blob with piece length", blobURL, 4 << 20, blobURL + "4194304STANDARD"},
		{"blob without piece length", blobURL, 0, blobURL + "STANDARD"},
		{"64 MiB pieces", blobURL, 64 << 20, blobURL + "67108864STANDARD"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := schedclient.TaskID(tc.url, tc.pieceLength)
			sum := sha256.Sum256([]byte(tc.formula))
			if want := hex.EncodeToString(sum[:]); got != want {
				t.Errorf("TaskID = %s, sha256(%q) = %s", got, tc.formula, want)
			}
		})
	}
}

// TestPeersOfOneTask walks one task through the scheduler: the first peer goes back to source and
// finishes, the second gets it as a parent, the third blocks every parent and is sent back to
// source. Each host registers once, so the register delay stays at its base.
func TestPeersOfOneTask(t *testing.T) {
	t.Parallel()
	sched := schedtest.Start(t, schedtest.Options{})
	addrs := []string{sched.Addr()}
	b := newBlob("library/peers", 3)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	hostA := peerHost("peer-a", 41000)
	a := newClient(t, hostA, addrs)
	sa := register(t, a, b.spec())
	if ev := nextEvent(t, sa, schedclient.EventBackToSource); ev.Scheduler != sched.Addr() {
		t.Errorf("answer from %q, want %s", ev.Scheduler, sched.Addr())
	}
	if err := sa.Started(true); err != nil {
		t.Fatal(err)
	}
	reportPieces(t, sa, b, 0, b.pieces(), "")
	finish(t, sa, sa.Finished(true))

	t.Run("task succeeded with the first peer's pieces", func(t *testing.T) {
		task, err := a.StatTask(ctx, b.taskID())
		if err != nil {
			t.Fatal(err)
		}
		if task.GetState() != "Succeeded" || task.GetContentLength() != uint64(len(b.content)) ||
			task.GetPieceCount() != uint32(b.pieces()) || task.GetUrl() != b.url {
			t.Errorf("task state %s, content length %d, piece count %d, url %s; want Succeeded, %d, %d, %s",
				task.GetState(), task.GetContentLength(), task.GetPieceCount(), task.GetUrl(), len(b.content), b.pieces(), b.url)
		}
		if got, want := pieceDigests(task.GetPieces()), wantDigests(b); !maps.Equal(got, want) {
			t.Errorf("task pieces %v, want %v", got, want)
		}
		peer, err := a.StatPeer(ctx, b.taskID(), sa.PeerID())
		if err != nil {
			t.Fatal(err)
		}
		if peer.GetState() != "Succeeded" || peer.GetHost().GetId() != a.HostID() {
			t.Errorf("peer state %s on host %s, want Succeeded on %s", peer.GetState(), peer.GetHost().GetId(), a.HostID())
		}
		if got, want := pieceDigests(peer.GetTask().GetPieces()), wantDigests(b); !maps.Equal(got, want) {
			t.Errorf("peer's task pieces %v, want %v", got, want)
		}
	})

	hostB := peerHost("peer-b", 42000)
	bc := newClient(t, hostB, addrs)
	sb := register(t, bc, b.spec())
	t.Run("second peer gets the first as parent", func(t *testing.T) {
		ev := nextEvent(t, sb, schedclient.EventParents)
		if len(ev.Parents) != 1 {
			t.Fatalf("parents %v, want just %s", parentIDs(ev.Parents), sa.PeerID())
		}
		p := ev.Parents[0]
		want := schedclient.Parent{PeerID: sa.PeerID(), HostID: a.HostID(), Hostname: hostA.Hostname, IP: hostA.IP,
			Port: hostA.Port, DownloadPort: hostA.DownloadPort, State: "Succeeded"}
		if p.PeerID != want.PeerID || p.HostID != want.HostID || p.Hostname != want.Hostname || p.IP != want.IP ||
			p.Port != want.Port || p.DownloadPort != want.DownloadPort || p.State != want.State {
			t.Errorf("parent %+v, want %+v", p, want)
		}
	})
	if err := sb.Started(false); err != nil {
		t.Fatal(err)
	}
	reportPieces(t, sb, b, 0, b.pieces(), sa.PeerID())
	finish(t, sb, sb.Finished(false))
	t.Run("second peer succeeded from its parent", func(t *testing.T) {
		peer, err := bc.StatPeer(ctx, b.taskID(), sb.PeerID())
		if err != nil {
			t.Fatal(err)
		}
		if peer.GetState() != "Succeeded" || peer.GetHost().GetId() != bc.HostID() {
			t.Errorf("peer state %s on host %s, want Succeeded on %s", peer.GetState(), peer.GetHost().GetId(), bc.HostID())
		}
	})

	t.Run("blocking every parent sends the peer back to source", func(t *testing.T) {
		cc := newClient(t, peerHost("peer-c", 43000), addrs)
		sc := register(t, cc, b.spec())
		ev := nextEvent(t, sc, schedclient.EventParents)
		if err := sc.Started(false); err != nil {
			t.Fatal(err)
		}
		for _, p := range ev.Parents {
			if err := sc.PieceFailed(0, p.PeerID, true); err != nil {
				t.Fatal(err)
			}
		}
		if err := sc.Reschedule(ev.Parents, "every parent failed piece 0"); err != nil {
			t.Fatal(err)
		}
		back := nextEvent(t, sc, schedclient.EventBackToSource)
		t.Logf("after blocking %v: %s", parentIDs(ev.Parents), back.Description)
		if err := sc.Started(true); err != nil {
			t.Fatal(err)
		}
		reportPieces(t, sc, b, 0, 1, "")
		finish(t, sc, sc.Failed(true, "test ends here"))
	})
}

// TestReschedulePeerNotNamedBefore blocks a parent this session never received (a placeholder
// message carries its id) and checks the scheduler accepts the request.
func TestReschedulePeerNotNamedBefore(t *testing.T) {
	t.Parallel()
	sched := schedtest.Start(t, schedtest.Options{})
	b := newBlob("library/placeholder", 2)
	c := newClient(t, peerHost("peer-p", 44000), []string{sched.Addr()})
	s := register(t, c, b.spec())
	nextEvent(t, s, schedclient.EventBackToSource)
	if err := s.Started(false); err != nil {
		t.Fatal(err)
	}
	if err := s.Reschedule([]schedclient.Parent{{PeerID: schedclient.PeerID()}}, ""); err != nil {
		t.Fatal(err)
	}
	// No peer has the task: after its retries the scheduler sends the peer back to source, on the
	// same stream (a rejected request would have ended it).
	nextEvent(t, s, schedclient.EventBackToSource)
	if err := s.Started(true); err != nil {
		t.Fatal(err)
	}
	reportPieces(t, s, b, 0, b.pieces(), "")
	finish(t, s, s.Finished(true))
}
