package vortex

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

// testContent returns n deterministic pseudo-random bytes.
func testContent(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16)})
	_, _ = r.Read(b)
	return b
}

// countingListener counts accepted connections and can wrap them.
type countingListener struct {
	net.Listener
	accepted atomic.Int64
	wrap     func(net.Conn) net.Conn
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
		if l.wrap != nil {
			c = l.wrap(c)
		}
	}
	return c, err
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// bytesFn is a handler that returns pieces in memory (BytesHandler adapts it).
type bytesFn = func(ctx context.Context, taskID string, number uint32) (Piece, []byte, error)

// startServer runs a Server with h on loopback until the test ends.
func startServer(t *testing.T, h bytesFn, opts ServerOptions, wrap func(net.Conn) net.Conn) (*Server, *countingListener) {
	t.Helper()
	return startHandlerServer(t, BytesHandler(h), opts, wrap)
}

// startHandlerServer runs a Server with h on loopback until the test ends.
func startHandlerServer(t *testing.T, h Handler, opts ServerOptions, wrap func(net.Conn) net.Conn) (*Server, *countingListener) {
	t.Helper()
	ln := &countingListener{Listener: listen(t), wrap: wrap}
	s := NewServerWithOptions(h, zaptest.NewLogger(t), opts)
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close server: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Serve returned %v after Close, want nil", err)
		}
	})
	return s, ln
}

// startRawServer accepts connections on loopback and runs script on each; the connections are
// closed when script returns or the test ends (release is closed first, for scripts that stall).
func startRawServer(t *testing.T, script func(c net.Conn, release <-chan struct{})) *countingListener {
	t.Helper()
	ln := &countingListener{Listener: listen(t)}
	release := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				script(c, release)
			}()
		}
	}()
	t.Cleanup(func() {
		close(release)
		_ = ln.Close()
		wg.Wait()
	})
	return ln
}

// readRequest reads one DownloadPiece request off c.
func readRequest(c net.Conn) (taskID string, number uint32, err error) {
	b := make([]byte, HeaderSize+downloadPieceSize)
	if _, err := io.ReadFull(c, b); err != nil {
		return "", 0, err
	}
	if h := parseHeader(b); h.tag != TagDownloadPiece || h.length != downloadPieceSize {
		return "", 0, fmt.Errorf("unexpected request header %+v", h)
	}
	return decodeDownloadPiece(b[HeaderSize:])
}

func newTestClient(t *testing.T, opts ClientOptions) *Client {
	t.Helper()
	opts.Log = zaptest.NewLogger(t)
	c := NewClient(opts)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// piecesHandler serves the given pieces of goldenTaskID.
func piecesHandler(pieces map[uint32][]byte, meta func(*Piece)) bytesFn {
	return func(_ context.Context, taskID string, number uint32) (Piece, []byte, error) {
		data, ok := pieces[number]
		if taskID != goldenTaskID || !ok {
			return Piece{}, nil, fmt.Errorf("piece %d of task %s: %w", number, taskID, ErrPieceNotFound)
		}
		p := Piece{Number: number, Offset: uint64(number) << 22, Length: uint64(len(data)), Digest: CRC32Digest(data),
			ParentID: "peer-a", TrafficType: TrafficTypeRemotePeer, Cost: 2 * time.Second, CreatedAt: time.Unix(1693152000, 0)}
		if meta != nil {
			meta(&p)
		}
		return p, data, nil
	}
}

func TestDownloadPieceSizes(t *testing.T) {
	sizes := map[uint32]int{0: 0, 1: 1, 2: readChunk + 3, 3: 5 << 20}
	pieces := map[uint32][]byte{}
	for n, size := range sizes {
		pieces[n] = testContent(uint64(n), size)
	}
	srv, ln := startServer(t, piecesHandler(pieces, nil), ServerOptions{}, nil)
	c := newTestClient(t, ClientOptions{})
	addr := ln.Addr().String()
	for _, n := range []uint32{0, 1, 2, 3} {
		t.Run(fmt.Sprintf("%d bytes", sizes[n]), func(t *testing.T) {
			p, data, err := c.DownloadPieceAt(context.Background(), addr, goldenTaskID, n, uint64(n)<<22, uint64(sizes[n]))
			if err != nil {
				t.Fatal(err)
			}
			want := Piece{Number: n, Offset: uint64(n) << 22, Length: uint64(sizes[n]), Digest: CRC32Digest(pieces[n]),
				ParentID: "peer-a", TrafficType: TrafficTypeRemotePeer, Cost: 2 * time.Second, CreatedAt: time.Unix(1693152000, 0).UTC()}
			if p != want {
				t.Errorf("piece = %+v\nwant %+v", p, want)
			}
			if !bytes.Equal(data, pieces[n]) {
				t.Errorf("content differs")
			}
		})
	}
	if got := ln.accepted.Load(); got != 1 {
		t.Errorf("%d connections for sequential downloads, want 1 (reused)", got)
	}
	_ = srv.Close() // the server counts a piece after its last write: wait for that
	if st := srv.Stats(); st.Pieces != 4 || st.Errors != 0 {
		t.Errorf("stats = %+v, want 4 pieces, no errors", st)
	}
}

func TestConcurrentDownloads(t *testing.T) {
	const numPieces, workers, perWorker = 16, 32, 16
	pieces := map[uint32][]byte{}
	for n := range uint32(numPieces) {
		pieces[n] = testContent(uint64(n), 64<<10+int(n)*4099)
	}
	srv, ln := startServer(t, piecesHandler(pieces, nil), ServerOptions{}, nil)
	c := newTestClient(t, ClientOptions{})
	var wg sync.WaitGroup
	errs := make(chan error, workers*perWorker)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				n := uint32((w + i) % numPieces)
				_, data, err := c.DownloadPiece(context.Background(), ln.Addr().String(), goldenTaskID, n)
				if err == nil && !bytes.Equal(data, pieces[n]) {
					err = fmt.Errorf("piece %d: content differs", n)
				}
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	_ = srv.Close()
	if st := srv.Stats(); st.Pieces != workers*perWorker {
		t.Errorf("server served %d pieces, want %d", st.Pieces, workers*perWorker)
	}
	t.Logf("%d downloads over %d connections", workers*perWorker, ln.accepted.Load())
}

func TestDownloadRemoteErrors(t *testing.T) {
	data := testContent(1, 1000)
	for _, tc := range []struct {
		name      string
		h         bytesFn
		download  func(c *Client, addr string) error
		wantIs    error
		notIs     error
		wantCode  Code
		wantMsg   string
		wantConns int64 // after one more successful download
	}{
		{
			name: "not found",
			h:    piecesHandler(map[uint32][]byte{1: data}, nil),
			download: func(c *Client, addr string) error {
				_, _, err := c.DownloadPiece(context.Background(), addr, goldenTaskID, 9)
				return err
			},
			wantIs: ErrPieceNotFound, wantCode: CodeNotFound, wantMsg: MsgNotFound, wantConns: 1,
		},
		{
			name: "handler failure",
			h: func(context.Context, string, uint32) (Piece, []byte, error) {
				return Piece{}, nil, errors.New("disk on fire")
			},
			download: func(c *Client, addr string) error {
				_, _, err := c.DownloadPiece(context.Background(), addr, goldenTaskID, 1)
				return err
			},
			wantIs: ErrRemote, notIs: ErrPieceNotFound, wantCode: CodeInternal, wantMsg: MsgInternal, wantConns: 1,
		},
		{
			name: "handler returns short content",
			h: piecesHandler(map[uint32][]byte{1: data}, func(p *Piece) {
				p.Length++
			}),
			download: func(c *Client, addr string) error {
				_, _, err := c.DownloadPiece(context.Background(), addr, goldenTaskID, 1)
				return err
			},
			wantIs: ErrRemote, wantCode: CodeInternal, wantMsg: MsgInternal, wantConns: 1,
		},
		{
			name: "handler returns another piece",
			h: piecesHandler(map[uint32][]byte{1: data}, func(p *Piece) {
				p.Number = 2
			}),
			download: func(c *Client, addr string) error {
				_, _, err := c.DownloadPiece(context.Background(), addr, goldenTaskID, 1)
				return err
			},
			wantIs: ErrRemote, wantCode: CodeInternal, wantMsg: MsgInternal, wantConns: 1,
		},
		{
			name: "piece at another offset than announced",
			h:    piecesHandler(map[uint32][]byte{1: data}, nil),
			download: func(c *Client, addr string) error {
				_, _, err := c.DownloadPieceAt(context.Background(), addr, goldenTaskID, 1, 0, 1000)
				return err
			},
			wantIs: ErrPieceInvalid, wantMsg: "piece 1 is at 4194304+1000, want 0+1000", wantConns: 2,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.h
			// Piece 7 always works, to check the connection afterwards.
			okHandler := piecesHandler(map[uint32][]byte{7: data}, nil)
			_, ln := startServer(t, func(ctx context.Context, taskID string, number uint32) (Piece, []byte, error) {
				if number == 7 {
					return okHandler(ctx, taskID, number)
				}
				return h(ctx, taskID, number)
			}, ServerOptions{}, nil)
			c := newTestClient(t, ClientOptions{})
			addr := ln.Addr().String()
			err := tc.download(c, addr)
			if !errors.Is(err, tc.wantIs) || (tc.notIs != nil && errors.Is(err, tc.notIs)) {
				t.Fatalf("err = %v, want %v (and not %v)", err, tc.wantIs, tc.notIs)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("err = %v, want it to mention %q", err, tc.wantMsg)
			}
			var rerr *RemoteError
			if tc.wantIs == ErrRemote || tc.wantIs == ErrPieceNotFound {
				if !errors.As(err, &rerr) || rerr.Code != tc.wantCode {
					t.Errorf("err = %#v, want a RemoteError with code %s", err, tc.wantCode)
				}
			}
			if _, _, err := c.DownloadPiece(context.Background(), addr, goldenTaskID, 7); err != nil {
				t.Fatalf("download after the error: %v", err)
			}
			if got := ln.accepted.Load(); got != tc.wantConns {
				t.Errorf("%d connections, want %d", got, tc.wantConns)
			}
		})
	}
}

func TestLyingPeers(t *testing.T) {
	content := testContent(3, 3000)
	good := Piece{Number: 5, Offset: 5 << 22, Length: uint64(len(content)), Digest: CRC32Digest(content), CreatedAt: time.Unix(1, 0)}
	with := func(f func(p *Piece)) Piece {
		p := good
		f(&p)
		return p
	}
	// answer returns a script that answers the first request with b, then waits or closes.
	answer := func(b []byte, stall bool) func(net.Conn, <-chan struct{}) {
		return func(c net.Conn, release <-chan struct{}) {
			if _, _, err := readRequest(c); err != nil {
				return
			}
			_, _ = c.Write(b)
			if stall {
				<-release
			}
		}
	}
	for _, tc := range []struct {
		name    string
		script  func(net.Conn, <-chan struct{})
		opts    ClientOptions
		wantIs  error
		wantMsg string
	}{
		{"wrong piece number", answer(appendPieceContent(nil, with(func(p *Piece) { p.Number = 6 }), content), true), ClientOptions{},
			ErrPieceInvalid, "asked for piece 5, got piece 6"},
		{"wrong crc32", answer(appendPieceContent(nil, with(func(p *Piece) { p.Digest = "crc32:1" }), content), true), ClientOptions{},
			ErrPieceInvalid, "digest is crc32:1, its content has " + good.Digest},
		{"crc32 in hex", answer(appendPieceContent(nil, with(func(p *Piece) { p.Digest = fmt.Sprintf("crc32:%x", 12345) }), content), true), ClientOptions{},
			ErrPieceInvalid, "digest is crc32:3039"},
		{"unsupported digest", answer(appendPieceContent(nil, with(func(p *Piece) { p.Digest = "sha256:00" }), content), true), ClientOptions{},
			ErrPieceInvalid, "only crc32 is supported"},
		{"piece longer than allowed", answer(appendPieceContent(nil, with(func(p *Piece) { p.Length = 1 << 40 }), nil), true), ClientOptions{},
			ErrPieceInvalid, "is 1099511627776 bytes, more than the 67108864 allowed"},
		{"piece longer than configured", answer(appendPieceContent(nil, good, content), true), ClientOptions{MaxPieceLength: 2000},
			ErrPieceInvalid, "more than the 2000 allowed"},
		{"content shorter than its length, then close", answer(appendPieceContent(nil, good, content[:1000]), false), ClientOptions{},
			io.ErrUnexpectedEOF, "1000 of 3000 bytes received"},
		{"absurd metadata length", answer(header{tag: TagPieceContent, length: 1<<32 - 1}.append(nil), true), ClientOptions{},
			ErrProtocol, "PieceContent value of 4294967295 bytes"},
		{"metadata length disagrees with header", answer(append(header{tag: TagPieceContent, length: 50}.append(nil), unhex(t, "00000064")...), false), ClientOptions{},
			io.ErrUnexpectedEOF, "read piece metadata"},
		{"truncated header", answer([]byte{0, 1, 0}, false), ClientOptions{},
			io.ErrUnexpectedEOF, "read response header"},
		{"request echoed back", answer(appendDownloadPiece(nil, 0, goldenTaskID, 5), true), ClientOptions{},
			ErrProtocol, "got a DownloadPiece packet"},
		{"reserved tag", answer(header{tag: 100}.append(nil), true), ClientOptions{},
			ErrProtocol, "got a Reserved(100) packet"},
		{"huge Error packet", answer(header{tag: TagError, length: MaxErrorSize + 1}.append(nil), true), ClientOptions{},
			ErrProtocol, "Error packet of 65537 bytes"},
		{"Close with a value", answer(header{tag: TagClose, length: 3}.append(nil), true), ClientOptions{},
			ErrProtocol, "Close packet with a 3 byte value"},
		{"hang up without answering", answer(nil, false), ClientOptions{},
			io.ErrUnexpectedEOF, "connection closed by the peer"},
		{"stall before answering", answer(nil, true), ClientOptions{IOTimeout: 50 * time.Millisecond},
			os.ErrDeadlineExceeded, "no progress for 50ms"},
		{"stall mid-content", answer(appendPieceContent(nil, good, content[:1000]), true), ClientOptions{IOTimeout: 50 * time.Millisecond},
			os.ErrDeadlineExceeded, "1000 of 3000 bytes received"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln := startRawServer(t, tc.script)
			c := newTestClient(t, tc.opts)
			_, data, err := c.DownloadPiece(context.Background(), ln.Addr().String(), goldenTaskID, 5)
			if !errors.Is(err, tc.wantIs) || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("err = %v\nwant %v mentioning %q", err, tc.wantIs, tc.wantMsg)
			}
			if data != nil {
				t.Errorf("returned %d bytes with the error", len(data))
			}
			if got := ln.accepted.Load(); got != 1 {
				t.Errorf("%d connections, want 1 (no retry on a fresh connection)", got)
			}
		})
	}
}

// A Rust dfdaemon answers one request per connection and closes it: the client must retry a
// pooled connection it finds closed, then stop pooling for that peer.
func TestOneRequestPerConnectionPeer(t *testing.T) {
	content := testContent(4, 5000)
	ln := startRawServer(t, func(c net.Conn, _ <-chan struct{}) {
		_, number, err := readRequest(c)
		if err != nil {
			return
		}
		p := Piece{Number: number, Length: uint64(len(content)), Digest: CRC32Digest(content), CreatedAt: time.Unix(1, 0)}
		_, _ = c.Write(appendPieceContent(nil, p, content))
	})
	c := newTestClient(t, ClientOptions{})
	for i := range uint32(4) {
		_, data, err := c.DownloadPiece(context.Background(), ln.Addr().String(), goldenTaskID, i)
		if err != nil || !bytes.Equal(data, content) {
			t.Fatalf("download %d: %v", i, err)
		}
	}
	if got := ln.accepted.Load(); got != 4 {
		t.Errorf("%d connections for 4 downloads, want 4", got)
	}
}

func TestCancel(t *testing.T) {
	content := testContent(5, 3000)
	t.Run("while the peer looks for the piece", func(t *testing.T) {
		entered := make(chan struct{})
		_, ln := startServer(t, func(ctx context.Context, _ string, _ uint32) (Piece, []byte, error) {
			close(entered)
			<-ctx.Done() // until the server closes
			return Piece{}, nil, ctx.Err()
		}, ServerOptions{}, nil)
		c := newTestClient(t, ClientOptions{})
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			<-entered
			cancel()
		}()
		_, _, err := c.DownloadPiece(ctx, ln.Addr().String(), goldenTaskID, 1)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	})
	t.Run("mid-content", func(t *testing.T) {
		sent := make(chan struct{})
		ln := startRawServer(t, func(c net.Conn, release <-chan struct{}) {
			if _, _, err := readRequest(c); err != nil {
				return
			}
			p := Piece{Number: 1, Length: uint64(len(content)), CreatedAt: time.Unix(1, 0)}
			_, _ = c.Write(appendPieceContent(nil, p, content[:1000]))
			close(sent)
			<-release
		})
		c := newTestClient(t, ClientOptions{})
		ctx, cancel := context.WithCancelCause(context.Background())
		go func() {
			<-sent
			cancel(errors.New("reader went away"))
		}()
		_, _, err := c.DownloadPiece(ctx, ln.Addr().String(), goldenTaskID, 1)
		if err == nil || !strings.Contains(err.Error(), "reader went away") {
			t.Fatalf("err = %v, want the cancel cause", err)
		}
	})
	t.Run("before the call", func(t *testing.T) {
		ln := startRawServer(t, func(net.Conn, <-chan struct{}) {})
		c := newTestClient(t, ClientOptions{})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, _, err := c.DownloadPiece(ctx, ln.Addr().String(), goldenTaskID, 1)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	})
}

// gatedConn blocks its nth Write until the connection is closed, so a test can close the server
// in the middle of a piece.
type gatedConn struct {
	net.Conn
	n      int
	writes int
	at     chan struct{} // closed when the gated write starts
	closed chan struct{}
	once   sync.Once
}

func (c *gatedConn) Write(b []byte) (int, error) {
	c.writes++
	if c.writes == c.n {
		close(c.at)
		<-c.closed
	}
	return c.Conn.Write(b)
}

func (c *gatedConn) Close() error {
	err := c.Conn.Close() // before opening the gate, so the gated write fails
	c.once.Do(func() { close(c.closed) })
	return err
}

func TestServerClosedMidPiece(t *testing.T) {
	content := testContent(6, 3*copyChunk)
	at := make(chan struct{})
	srv, ln := startServer(t, piecesHandler(map[uint32][]byte{1: content}, nil), ServerOptions{}, func(c net.Conn) net.Conn {
		// Write 1 is the metadata, 2 the first chunk of content: gate the second chunk.
		return &gatedConn{Conn: c, n: 3, at: at, closed: make(chan struct{})}
	})
	go func() {
		<-at
		_ = srv.Close()
	}()
	c := newTestClient(t, ClientOptions{})
	_, _, err := c.DownloadPiece(context.Background(), ln.Addr().String(), goldenTaskID, 1)
	if !errors.Is(err, io.ErrUnexpectedEOF) || !strings.Contains(err.Error(), "read piece 1 content") {
		t.Fatalf("err = %v, want an unexpected EOF in the content", err)
	}
	if st := srv.Stats(); st.Pieces != 0 {
		t.Errorf("server counted %d pieces served, want 0", st.Pieces)
	}
}

func TestClientClose(t *testing.T) {
	entered := make(chan struct{})
	_, ln := startServer(t, func(ctx context.Context, _ string, _ uint32) (Piece, []byte, error) {
		close(entered)
		<-ctx.Done()
		return Piece{}, nil, ctx.Err()
	}, ServerOptions{}, nil)
	c := NewClient(ClientOptions{Log: zaptest.NewLogger(t)})
	go func() {
		<-entered
		_ = c.Close()
	}()
	_, _, err := c.DownloadPiece(context.Background(), ln.Addr().String(), goldenTaskID, 1)
	if !errors.Is(err, ErrClientClosed) {
		t.Fatalf("in-flight download: err = %v, want ErrClientClosed", err)
	}
	_, _, err = c.DownloadPiece(context.Background(), ln.Addr().String(), goldenTaskID, 1)
	if !errors.Is(err, ErrClientClosed) {
		t.Fatalf("download after Close: err = %v, want ErrClientClosed", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestClientRejectsBadTaskID(t *testing.T) {
	ln := startRawServer(t, func(net.Conn, <-chan struct{}) {})
	c := newTestClient(t, ClientOptions{})
	for _, id := range []string{"", "abc", goldenTaskID + "0", strings.Repeat("\xff", 64)} {
		if _, _, err := c.DownloadPiece(context.Background(), ln.Addr().String(), id, 1); err == nil || !strings.Contains(err.Error(), "task id") {
			t.Errorf("task id %q: err = %v, want a task id error", id, err)
		}
	}
	if got := ln.accepted.Load(); got != 0 {
		t.Errorf("%d connections for invalid requests, want 0", got)
	}
}

// response is one packet a raw client read back from the server.
type response struct {
	tag     Tag
	code    Code
	number  uint32
	content []byte
}

// readResponses reads packets from c until EOF.
func readResponses(t *testing.T, c net.Conn) []response {
	t.Helper()
	var out []response
	for {
		hb := make([]byte, HeaderSize)
		if _, err := io.ReadFull(c, hb); err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatalf("read header: %v", err)
			}
			return out
		}
		h := parseHeader(hb)
		v := make([]byte, h.length)
		if _, err := io.ReadFull(c, v); err != nil {
			t.Fatalf("read %s value: %v", h.tag, err)
		}
		switch h.tag {
		case TagError:
			rerr, err := decodeError(v)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, response{tag: h.tag, code: rerr.Code})
		case TagPieceContent:
			p, err := decodePieceContentValue(v)
			if err != nil {
				t.Fatal(err)
			}
			content := make([]byte, p.Length)
			if _, err := io.ReadFull(c, content); err != nil {
				t.Fatal(err)
			}
			out = append(out, response{tag: h.tag, number: p.Number, content: content})
		default:
			t.Fatalf("server sent a %s packet", h.tag)
		}
	}
}

func TestServerRequests(t *testing.T) {
	content := testContent(7, 10)
	req := func(n uint32) []byte { return appendDownloadPiece(nil, 0, goldenTaskID, n) }
	closePkt := header{tag: TagClose}.append(nil)
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	for _, tc := range []struct {
		name string
		send []byte
		want []response
	}{
		{"one request, then Close", cat(req(1), closePkt),
			[]response{{tag: TagPieceContent, number: 1, content: content}}},
		{"pipelined requests", cat(req(1), req(2), req(1), closePkt), []response{
			{tag: TagPieceContent, number: 1, content: content},
			{tag: TagError, code: CodeNotFound},
			{tag: TagPieceContent, number: 1, content: content},
		}},
		{"unsupported request tag", cat(header{tag: TagDownloadCachePiece, length: downloadPieceSize}.append(nil), req(1)[HeaderSize:], req(1)),
			[]response{{tag: TagError, code: CodeInvalidArgument}}},
		{"DownloadPiece of the wrong size", cat(header{tag: TagDownloadPiece, length: 10}.append(nil), make([]byte, 10), req(1)),
			[]response{{tag: TagError, code: CodeInvalidArgument}}},
		{"task id not UTF-8", cat(header{tag: TagDownloadPiece, length: downloadPieceSize}.append(nil), bytes.Repeat([]byte{0xff}, 64), []byte{0, 0, 0, 1}),
			[]response{{tag: TagError, code: CodeInvalidArgument}}},
		{"Close first", cat(closePkt, req(1)), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, ln := startServer(t, piecesHandler(map[uint32][]byte{1: content}, nil), ServerOptions{}, nil)
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			got := readResponses(t, c) // the server closes the connection after the last one
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("responses = %v\nwant %v", got, tc.want)
			}
		})
	}
}

func TestServerFillsDigestAndCreatedAt(t *testing.T) {
	content := testContent(8, 777)
	_, ln := startServer(t, func(_ context.Context, _ string, n uint32) (Piece, []byte, error) {
		return Piece{Number: n, Length: uint64(len(content))}, content, nil
	}, ServerOptions{}, nil)
	c := newTestClient(t, ClientOptions{})
	before := time.Now().Add(-time.Second)
	p, _, err := c.DownloadPiece(context.Background(), ln.Addr().String(), goldenTaskID, 1)
	if err != nil {
		t.Fatal(err)
	}
	if p.Digest != CRC32Digest(content) || p.CreatedAt.Before(before.Truncate(time.Second)) {
		t.Fatalf("piece = %+v, want the content's crc32 and a creation time of now", p)
	}
}

func TestServerIdleTimeoutClosesConnection(t *testing.T) {
	_, ln := startServer(t, piecesHandler(nil, nil), ServerOptions{IdleTimeout: 20 * time.Millisecond}, nil)
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if n, err := c.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("read on an idle connection = %d, %v; want EOF", n, err)
	}
}

func TestServerCloseStopsServe(t *testing.T) {
	s := NewServer(BytesHandler(piecesHandler(nil, nil)), zaptest.NewLogger(t))
	lns := []net.Listener{listen(t), listen(t)}
	done := make(chan error, len(lns))
	for _, ln := range lns {
		go func() { done <- s.Serve(ln) }()
	}
	// Serve after Close returns at once, whatever the order.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for range lns {
		if err := <-done; err != nil {
			t.Errorf("Serve = %v, want nil", err)
		}
	}
	if err := s.Serve(listen(t)); err != nil {
		t.Errorf("Serve after Close = %v, want nil", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func BenchmarkDownloadPiece(b *testing.B) {
	for _, size := range []int{4 << 20, 64 << 20} {
		b.Run(fmt.Sprintf("%dMiB", size>>20), func(b *testing.B) {
			content := testContent(9, size)
			digest := CRC32Digest(content)
			s := NewServer(BytesHandler(func(_ context.Context, _ string, n uint32) (Piece, []byte, error) {
				return Piece{Number: n, Length: uint64(len(content)), Digest: digest, CreatedAt: time.Unix(1, 0)}, content, nil
			}), nil)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			go func() { _ = s.Serve(ln) }()
			defer s.Close()
			c := NewClient(ClientOptions{})
			defer c.Close()
			b.SetBytes(int64(size))
			b.ResetTimer()
			for b.Loop() {
				if _, _, err := c.DownloadPiece(context.Background(), ln.Addr().String(), goldenTaskID, 1); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
