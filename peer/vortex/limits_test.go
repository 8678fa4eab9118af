package vortex

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// trackedReader is a piece reader that records its Close and can fail after some bytes.
type trackedReader struct {
	r      io.Reader
	failAt int // fail once this many bytes were read; < 0 never
	n      int
	closed *atomic.Int32
}

func (r *trackedReader) Read(p []byte) (int, error) {
	if r.failAt >= 0 && r.n >= r.failAt {
		return 0, errors.New("disk read failed at /var/lib/secret/path")
	}
	if r.failAt >= 0 && len(p) > r.failAt-r.n {
		p = p[:r.failAt-r.n]
	}
	n, err := r.r.Read(p)
	r.n += n
	return n, err
}

func (r *trackedReader) Close() error { r.closed.Add(1); return nil }

// readerHandler serves content as piece 1 through a trackedReader.
func readerHandler(content []byte, failAt int, closed *atomic.Int32) Handler {
	digest := CRC32Digest(content)
	return func(_ context.Context, _ string, n uint32) (Piece, io.ReadCloser, error) {
		if n != 1 {
			return Piece{}, nil, ErrPieceNotFound
		}
		return Piece{Number: 1, Length: uint64(len(content)), Digest: digest},
			&trackedReader{r: bytes.NewReader(content), failAt: failAt, closed: closed}, nil
	}
}

// rawRequest sends one DownloadPiece on a fresh connection and returns it.
func rawRequest(t *testing.T, addr string, number uint32) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write(appendDownloadPiece(nil, 1, goldenTaskID, number)); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestServerStreamsFromReader(t *testing.T) {
	content := testContent(11, 5*copyChunk+123)
	var closed atomic.Int32
	srv, ln := startHandlerServer(t, readerHandler(content, -1, &closed), ServerOptions{}, nil)
	c := newTestClient(t, ClientOptions{})
	_, got, err := c.DownloadPiece(context.Background(), ln.Addr().String(), goldenTaskID, 1)
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("download: %v (same bytes: %v)", err, bytes.Equal(got, content))
	}
	// The client may have every byte before the server's handler closed the reader: Close waits
	// for the handlers.
	srv.Close()
	if closed.Load() != 1 {
		t.Errorf("reader closed %d times, want 1", closed.Load())
	}
}

func TestServerReaderFailsMidPiece(t *testing.T) {
	content := testContent(12, 3*copyChunk)
	var closed atomic.Int32
	srv, ln := startHandlerServer(t, readerHandler(content, copyChunk+10, &closed), ServerOptions{}, nil)
	c := newTestClient(t, ClientOptions{})
	_, _, err := c.DownloadPiece(context.Background(), ln.Addr().String(), goldenTaskID, 1)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("err = %v, want the connection cut mid-content", err)
	}
	srv.Close() // waits for the handler
	if closed.Load() != 1 || srv.Stats().Pieces != 0 {
		t.Errorf("reader closed %d times, %d pieces counted; want 1 and 0", closed.Load(), srv.Stats().Pieces)
	}
}

// Internal failures reach the remote peer as a fixed message: no path, no cause.
func TestServerErrorMessagesAreFixed(t *testing.T) {
	_, ln := startHandlerServer(t, func(context.Context, string, uint32) (Piece, io.ReadCloser, error) {
		return Piece{}, nil, errors.New("open /var/lib/dfnydus/store/abc: permission denied")
	}, ServerOptions{}, nil)
	c := newTestClient(t, ClientOptions{})
	_, _, err := c.DownloadPiece(context.Background(), ln.Addr().String(), goldenTaskID, 1)
	var re *RemoteError
	if !errors.As(err, &re) || re.Code != CodeInternal || re.Message != MsgInternal {
		t.Fatalf("err = %#v, want a RemoteError Internal %q", err, MsgInternal)
	}
}

func TestServerMaxConnections(t *testing.T) {
	srv, ln := startServer(t, piecesHandler(nil, nil), ServerOptions{MaxConnections: 3}, nil)
	var conns []net.Conn
	for i := 0; i < 3; i++ {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	// Wait until the server holds all three, so that the next one is over the cap.
	for deadline := time.Now().Add(5 * time.Second); ln.accepted.Load() < 3 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	extra, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	_ = extra.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := extra.Read(make([]byte, 1)); n != 0 || err == nil || errors.Is(err, errTimeout{}) {
		t.Fatalf("read on a connection over the cap = %d, %v; want it closed", n, err)
	}
	if srv.Stats().Refused != 1 {
		t.Errorf("refused = %d, want 1", srv.Stats().Refused)
	}
	// One held connection closes: a new one is served again.
	conns[0].Close()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		c := newTestClient(t, ClientOptions{})
		if _, _, err := c.DownloadPiece(context.Background(), ln.Addr().String(), goldenTaskID, 1); errors.Is(err, ErrPieceNotFound) {
			return
		}
	}
	t.Fatal("no connection served after one of the held ones closed")
}

// errTimeout matches deadline errors with errors.Is.
type errTimeout struct{}

func (errTimeout) Error() string { return "timeout" }
func (errTimeout) Is(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// A peer that asks for a piece and never reads is cut after IOTimeout, and its piece slot goes to
// the next request.
func TestServerSlowReaderReleasesSlot(t *testing.T) {
	content := testContent(13, 32<<20) // more than the socket buffers hold
	var closed atomic.Int32
	const ioTimeout = 300 * time.Millisecond
	srv, ln := startHandlerServer(t, readerHandler(content, -1, &closed), ServerOptions{IOTimeout: ioTimeout, MaxConcurrentPieces: 1}, nil)
	slow := rawRequest(t, ln.Addr().String(), 1)
	_ = slow.(*net.TCPConn).SetReadBuffer(4 << 10)
	// The stalled write times out and the server closes the reader and the connection.
	deadline := time.Now().Add(10 * time.Second)
	for closed.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if closed.Load() != 1 {
		t.Fatal("the slow reader's piece is still being served")
	}
	c := newTestClient(t, ClientOptions{})
	if _, got, err := c.DownloadPiece(context.Background(), ln.Addr().String(), goldenTaskID, 1); err != nil || len(got) != len(content) {
		t.Fatalf("download after the slow reader was cut: %v", err)
	}
	if srv.Stats().Pieces != 1 {
		t.Errorf("pieces served = %d, want 1 (the slow reader's does not count)", srv.Stats().Pieces)
	}
}

func TestServerRateLimit(t *testing.T) {
	const limit = 2 << 20 // bytes/s
	content := testContent(14, 6<<20)
	var closed atomic.Int32
	lim := rate.NewLimiter(limit, copyChunk)
	_, ln := startHandlerServer(t, readerHandler(content, -1, &closed), ServerOptions{Limiter: lim}, nil)
	c := newTestClient(t, ClientOptions{})
	start := time.Now()
	if _, _, err := c.DownloadPiece(context.Background(), ln.Addr().String(), goldenTaskID, 1); err != nil {
		t.Fatal(err)
	}
	el := time.Since(start)
	bps := float64(len(content)) / el.Seconds()
	t.Logf("%d bytes in %s: %.0f B/s (limit %d)", len(content), el, bps, limit)
	if bps > limit*1.25 {
		t.Errorf("served at %.0f B/s, limit %d", bps, limit)
	}
}

// DownloadRange (ours): verified bytes of a task, whole pieces or not.
func TestDownloadRange(t *testing.T) {
	content := testContent(21, 3*copyChunk+77)
	const base = 5 << 20
	ranges := func(_ context.Context, _ string, off, n uint64) (Piece, io.ReadCloser, error) {
		if off < base || off+n > base+uint64(len(content)) {
			return Piece{}, nil, ErrPieceNotFound
		}
		data := content[off-base : off-base+n]
		p := Piece{Offset: off, Length: n, Digest: CRC32Digest(data)}
		if off == base+1 { // a broken handler: the wrong place
			p.Offset++
		}
		return p, io.NopCloser(bytes.NewReader(data)), nil
	}
	pieces := func(context.Context, string, uint32) (Piece, io.ReadCloser, error) {
		return Piece{}, nil, ErrPieceNotFound
	}
	_, with := startHandlerServer(t, pieces, ServerOptions{Ranges: ranges}, nil)
	_, without := startHandlerServer(t, pieces, ServerOptions{}, nil)
	c := newTestClient(t, ClientOptions{})
	cases := []struct {
		name    string
		addr    string
		off, n  uint64
		want    []byte
		wantErr func(error) bool
	}{
		{"a range inside", with.Addr().String(), base + 100, 70_000, content[100:70_100], nil},
		{"all of it", with.Addr().String(), base, uint64(len(content)), content, nil},
		{"bytes it does not hold", with.Addr().String(), base - 10, 20, nil, func(err error) bool { return errors.Is(err, ErrPieceNotFound) }},
		{"a handler answering the wrong place is refused by the server", with.Addr().String(), base + 1, 10, nil,
			func(err error) bool { var r *RemoteError; return errors.As(err, &r) && r.Code == CodeInternal }},
		{"a server without ranges (as a Rust peer)", without.Addr().String(), base, 10, nil,
			func(err error) bool { var r *RemoteError; return errors.As(err, &r) && r.Code == CodeInvalidArgument }},
		{"empty", with.Addr().String(), base, 0, nil, func(err error) bool { return err != nil }},
		{"too long", with.Addr().String(), base, MaxRangeLength + 1, nil, func(err error) bool { return err != nil }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := c.DownloadRange(context.Background(), tc.addr, goldenTaskID, tc.off, tc.n)
			if tc.wantErr != nil {
				if err == nil || !tc.wantErr(err) {
					t.Fatalf("err = %v", err)
				}
				return
			}
			if err != nil || !bytes.Equal(got, tc.want) {
				t.Fatalf("got %d bytes (same: %v), %v", len(got), bytes.Equal(got, tc.want), err)
			}
		})
	}
}
