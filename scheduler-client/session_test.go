package schedclient

import (
	"strings"
	"testing"
	"time"

	commonv2 "d7y.io/api/v2/pkg/apis/common/v2"
	"go.uber.org/zap"
)

func TestTaskSpecDefaults(t *testing.T) {
	const pl = MinPieceLength
	for _, tc := range []struct {
		name       string
		spec       TaskSpec
		wantPieces uint32
		wantErr    string
	}{
		{"piece count rounds up", TaskSpec{TaskID: "t", URL: "http://x/b", PieceLength: pl, ContentLength: 2*pl + 1}, 3, ""},
		{"exact multiple", TaskSpec{TaskID: "t", URL: "http://x/b", PieceLength: pl, ContentLength: 2 * pl}, 2, ""},
		{"given piece count kept", TaskSpec{TaskID: "t", URL: "http://x/b", PieceLength: pl, ContentLength: 10, PieceCount: 1}, 1, ""},
		{"empty task", TaskSpec{TaskID: "t", URL: "http://x/b", PieceLength: pl}, 0, ""},
		{"no task id", TaskSpec{URL: "http://x/b", PieceLength: pl}, 0, "task id"},
		{"piece too small", TaskSpec{TaskID: "t", URL: "http://x/b", PieceLength: 1 << 20}, 0, "piece length"},
		{"piece too large", TaskSpec{TaskID: "t", URL: "http://x/b", PieceLength: 128 << 20}, 0, "piece length"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec, err := tc.spec.withDefaults()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if spec.PieceCount != tc.wantPieces || spec.PeerID == "" {
				t.Errorf("piece count %d (want %d), peer id %q", spec.PieceCount, tc.wantPieces, spec.PeerID)
			}
			d := spec.download()
			if err := d.ValidateAll(); err != nil {
				t.Fatalf("download invalid: %v", err)
			}
			if d.GetActualContentLength() != spec.ContentLength || d.GetActualPieceCount() != uint64(spec.PieceCount) ||
				d.GetActualPieceLength() != spec.PieceLength || d.GetPieceLength() != spec.PieceLength {
				t.Errorf("download sizes %v, spec %+v", d, spec)
			}
		})
	}
}

func TestPieceDigestIsRustPeers(t *testing.T) {
	// CRC-32 (IEEE) of "hello" is 0x3610a686 = 907060870; the Rust peer prints it in decimal.
	if got := PieceDigest([]byte("hello")); got != "crc32:907060870" {
		t.Errorf("got %s", got)
	}
}

// testSession is a session without a client connection, for building requests.
func testSession(t *testing.T) *Session {
	t.Helper()
	spec, err := TaskSpec{TaskID: strings.Repeat("a", 64), URL: "http://r/v2/x/blobs/sha256:00", PieceLength: MinPieceLength, ContentLength: 100}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	c := &Client{cfg: Config{Host: Host{ID: "127.0.0.1-h"}}, log: zap.NewNop()}
	return &Session{c: c, spec: spec, log: zap.NewNop(), pieces: map[uint32]pieceRecord{}, parents: map[string]*commonv2.Peer{}}
}

// TestRequestsPassTheSchedulersValidator: every message a session sends passes the generated
// validation the scheduler's interceptor applies (an invalid one ends the stream).
func TestRequestsPassTheSchedulersValidator(t *testing.T) {
	s := testSession(t)
	p := Piece{Number: 1, Offset: MinPieceLength, Length: 100, Digest: PieceDigest([]byte("x")), Cost: time.Millisecond, CreatedAt: time.Now()}
	for _, tc := range []struct {
		name string
		req  interface{ ValidateAll() error }
	}{
		{"register", s.registerRequest()},
		{"started", s.startedRequest(false)},
		{"started back-to-source", s.startedRequest(true)},
		{"piece from parent", s.pieceRequest(p, "parent-peer")},
		{"piece from source", s.pieceRequest(p, "")},
		{"finished", s.outcomeRequest(outcome{finished: true})},
		{"finished back-to-source", s.outcomeRequest(outcome{finished: true, backToSource: true})},
		{"failed", s.outcomeRequest(outcome{description: "broken"})},
		{"failed back-to-source without description", s.outcomeRequest(outcome{backToSource: true})},
		{"placeholder parent", s.placeholderPeer(Parent{PeerID: "p"})},
		{"placeholder parent with address", s.placeholderPeer(Parent{PeerID: "p", HostID: "h", IP: "10.0.0.9", Port: 4000})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.req.ValidateAll(); err != nil {
				t.Errorf("invalid: %v", err)
			}
		})
	}
}

func TestReplayOrder(t *testing.T) {
	s := testSession(t)
	bts := true
	s.started = &bts
	for _, n := range []uint32{2, 0, 1} {
		s.pieces[n] = pieceRecord{piece: Piece{Number: n, Length: 1, CreatedAt: time.Now()}}
	}
	s.outcome = &outcome{finished: true, backToSource: true}
	var got []string
	for _, r := range s.replayLocked() {
		m := r.ProtoReflect()
		name := string(m.WhichOneof(m.Descriptor().Oneofs().ByName("request")).Name())
		if pf := r.GetDownloadPieceBackToSourceFinishedRequest(); pf != nil {
			name += ":" + string(rune('0'+pf.GetPiece().GetNumber()))
		}
		got = append(got, name)
	}
	want := []string{
		"download_peer_back_to_source_started_request",
		"download_piece_back_to_source_finished_request:0",
		"download_piece_back_to_source_finished_request:1",
		"download_piece_back_to_source_finished_request:2",
		"download_peer_back_to_source_finished_request",
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("replay %v, want %v", got, want)
	}
}

func TestEventQueueKeepsOrderAndCloses(t *testing.T) {
	q := newEventQueue()
	stop := make(chan struct{})
	go q.pump(stop)
	for i := range 100 { // more than any channel buffer: pushes never block
		q.push(Event{Kind: EventParents, Description: string(rune('a' + i%26))})
	}
	q.end()
	n := 0
	for ev := range q.out {
		if want := string(rune('a' + n%26)); ev.Description != want {
			t.Fatalf("event %d is %q, want %q", n, ev.Description, want)
		}
		n++
	}
	if n != 100 {
		t.Errorf("%d events delivered, want 100", n)
	}
}

func TestEventKindNames(t *testing.T) {
	for k, want := range map[EventKind]string{EventParents: "parents", EventBackToSource: "back-to-source",
		EventEmpty: "empty", EventMetadataOnly: "metadata-only", EventReconnected: "reconnected", EventError: "error", EventDisconnected: "disconnected", 99: "EventKind(99)"} {
		if k.String() != want {
			t.Errorf("%d: %s, want %s", int(k), k, want)
		}
	}
}
