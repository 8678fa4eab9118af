package schedtest_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	schedulerv2 "d7y.io/api/v2/pkg/apis/scheduler/v2"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	schedclient "github.com/dfnydus/dfnydus/scheduler-client"
)

// eventWait bounds how long a test waits for one scheduler answer. Answers normally take tens of
// milliseconds (the register delay), a reschedule that ends back-to-source a few retry intervals;
// this is a hang guard, not a timing assertion.
const eventWait = 2 * time.Minute

// pieceLen is the smallest piece length the scheduler accepts.
const pieceLen = schedclient.MinPieceLength

// peerHost is a fake peer host on loopback: the scheduler only records its address.
func peerHost(name string, port int) schedclient.Host {
	return schedclient.Host{Hostname: name, IP: "127.0.0.1", Port: port, DownloadPort: port + 1, Location: "lab", IDC: "rack1"}
}

// newClient connects a client for host to addrs and closes it when the test ends.
func newClient(t *testing.T, host schedclient.Host, addrs []string, opts ...grpc.DialOption) *schedclient.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := schedclient.New(ctx, schedclient.Config{
		Addrs: addrs, Host: host, Log: zaptest.NewLogger(t).Named(host.Hostname), DialOptions: opts,
		DialTimeout: 3 * time.Second,
	})
	if err != nil {
		t.Fatalf("new client for %s: %v", host.Hostname, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = c.Close(ctx) // the scheduler may be stopped already
	})
	return c
}

// register opens a session and closes it when the test ends.
func register(t *testing.T, c *schedclient.Client, spec schedclient.TaskSpec) *schedclient.Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := c.Register(ctx, spec)
	if err != nil {
		t.Fatalf("register %s: %v", spec.TaskID, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// finish checks the error of a Finished or Failed report and waits until the scheduler
// acknowledged the outcome (the report itself only queues it).
func finish(t *testing.T, s *schedclient.Session, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("peer %s: outcome: %v", s.PeerID(), err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), eventWait)
	defer cancel()
	if err := s.Sync(ctx); err != nil {
		t.Fatalf("peer %s: %v", s.PeerID(), err)
	}
}

// rawScheduler is a plain scheduler.v2 client of one scheduler, to look at it directly.
func rawScheduler(t *testing.T, addr string) schedulerv2.SchedulerClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return schedulerv2.NewSchedulerClient(conn)
}

// blobOn is a blob of n pieces whose task the client's ring sends to scheduler addr.
func blobOn(t *testing.T, c *schedclient.Client, name string, n int, addr string) blob {
	t.Helper()
	for i := range 1000 {
		b := newBlob(fmt.Sprintf("%s-%d", name, i), n)
		if c.SchedulerFor(b.taskID()) == addr {
			return b
		}
	}
	t.Fatalf("no blob %s for %s", name, addr)
	return blob{}
}

// nextEvent returns the session's next event and fails the test unless its kind is want.
func nextEvent(t *testing.T, s *schedclient.Session, want schedclient.EventKind) schedclient.Event {
	t.Helper()
	select {
	case ev, ok := <-s.Events():
		if !ok {
			t.Fatalf("peer %s: events closed, want %s", s.PeerID(), want)
		}
		if ev.Kind != want {
			t.Fatalf("peer %s: event %s (%q, err %v), want %s", s.PeerID(), ev.Kind, ev.Description, ev.Err, want)
		}
		return ev
	case <-time.After(eventWait):
		t.Fatalf("peer %s: no event within %s, want %s", s.PeerID(), eventWait, want)
	}
	return schedclient.Event{}
}

// blob is content split into fixed-length pieces.
type blob struct {
	url     string
	content []byte
}

// newBlob makes a blob of n pieces, the last one short, with distinct bytes per piece.
func newBlob(name string, n int) blob {
	size := (n-1)*pieceLen + pieceLen/3
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(i/pieceLen + i%251)
	}
	return blob{url: "http://registry.test/v2/" + name + "/blobs/sha256:" + strings.Repeat(fmt.Sprintf("%02x", n), 32), content: b}
}

func (b blob) taskID() string { return schedclient.TaskID(b.url, pieceLen) }

func (b blob) pieces() int { return (len(b.content) + pieceLen - 1) / pieceLen }

func (b blob) spec() schedclient.TaskSpec {
	return schedclient.TaskSpec{TaskID: b.taskID(), URL: b.url, PieceLength: pieceLen, ContentLength: uint64(len(b.content))}
}

func (b blob) piece(i int) schedclient.Piece {
	off := i * pieceLen
	end := min(off+pieceLen, len(b.content))
	return schedclient.Piece{Number: uint32(i), Offset: uint64(off), Length: uint64(end - off),
		Digest: schedclient.PieceDigest(b.content[off:end]), Cost: time.Millisecond}
}

// reportPieces reports pieces [from, to) of b from parent ("" = the source).
func reportPieces(t *testing.T, s *schedclient.Session, b blob, from, to int, parent string) {
	t.Helper()
	for i := from; i < to; i++ {
		if err := s.PieceFinished(b.piece(i), parent); err != nil {
			t.Fatalf("piece %d: %v", i, err)
		}
	}
}

// pieceDigests maps piece number to digest for the pieces of a stat answer.
func pieceDigests[P interface {
	GetNumber() uint32
	GetDigest() string
}](pieces []P) map[uint32]string {
	m := map[uint32]string{}
	for _, p := range pieces {
		m[p.GetNumber()] = p.GetDigest()
	}
	return m
}

func wantDigests(b blob) map[uint32]string {
	m := map[uint32]string{}
	for i := 0; i < b.pieces(); i++ {
		m[uint32(i)] = b.piece(i).Digest
	}
	return m
}

func parentIDs(ps []schedclient.Parent) []string {
	var ids []string
	for _, p := range ps {
		ids = append(ids, p.PeerID)
	}
	slices.Sort(ids)
	return ids
}
