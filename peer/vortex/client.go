package vortex

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// Client defaults. The dial timeout and TCP keepalive follow the Rust client
// (dragonfly-client-storage/src/client/mod.rs DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEEPALIVE_*).
const (
	DefaultDialTimeout    = 2 * time.Second
	DefaultIOTimeout      = 30 * time.Second
	DefaultMaxIdlePerAddr = 4
	// DefaultIdleTimeout is below the Server's DefaultServerIdleTimeout, so a pooled connection is
	// dropped by the client before the server gives up on it.
	DefaultIdleTimeout = 30 * time.Second
)

// ClientOptions configure a Client; zero values take the defaults.
type ClientOptions struct {
	// DialTimeout bounds connecting to a peer.
	DialTimeout time.Duration
	// IOTimeout is the longest a transfer may go without progress: sending the request, waiting
	// for the response, or any 1 MiB of piece content. A stalled peer fails after it; a slow one
	// that keeps moving does not. The caller's context bounds the whole download.
	IOTimeout time.Duration
	// MaxIdlePerAddr is how many idle connections are kept per peer address; negative keeps none.
	MaxIdlePerAddr int
	// IdleTimeout closes connections idle for longer.
	IdleTimeout time.Duration
	// MaxPieceLength refuses pieces longer than this before allocating them (MaxPieceLength).
	MaxPieceLength uint64
	// Dial opens connections (a net.Dialer with TCP keepalive if nil).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	Log  *zap.Logger
}

// Client downloads pieces from peers over Vortex/TCP. It keeps a few idle connections per address
// and is safe for concurrent use; each download holds its own connection.
type Client struct {
	opts ClientOptions
	log  *zap.Logger

	mu      sync.Mutex
	closed  bool
	idle    map[string][]*clientConn
	active  map[*clientConn]struct{}
	noReuse map[string]struct{}
}

// clientConn is one connection to a peer.
type clientConn struct {
	addr  string
	nc    net.Conn
	br    *bufio.Reader
	timer *time.Timer // closes the connection when it idles out in the pool
	// reused is set once the connection has carried a response, so a failure before the next
	// response may just mean the peer closed it meanwhile.
	reused bool
}

// NewClient returns a Client.
func NewClient(opts ClientOptions) *Client {
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = DefaultDialTimeout
	}
	if opts.IOTimeout <= 0 {
		opts.IOTimeout = DefaultIOTimeout
	}
	if opts.MaxIdlePerAddr == 0 {
		opts.MaxIdlePerAddr = DefaultMaxIdlePerAddr
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	if opts.MaxPieceLength == 0 {
		opts.MaxPieceLength = MaxPieceLength
	}
	if opts.Dial == nil {
		d := &net.Dialer{KeepAliveConfig: net.KeepAliveConfig{
			Enable: true, Idle: 5 * time.Second, Interval: 3 * time.Second, Count: 3,
		}}
		opts.Dial = d.DialContext
	}
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	return &Client{
		opts:    opts,
		log:     opts.Log,
		idle:    map[string][]*clientConn{},
		active:  map[*clientConn]struct{}{},
		noReuse: map[string]struct{}{},
	}
}

// DownloadPiece downloads piece number of task taskID from the peer at addr (host:port of its
// Vortex TCP server). It returns the piece's metadata and exactly its Length bytes, after checking
// the number and the "crc32:" digest when the piece carries one. Cancelling ctx aborts the transfer.
// A peer's Error packet comes back as a *RemoteError (ErrPieceNotFound or ErrRemote); bytes that
// are not the expected packets as ErrProtocol; a piece that fails the checks as ErrPieceInvalid.
func (c *Client) DownloadPiece(ctx context.Context, addr, taskID string, number uint32) (Piece, []byte, error) {
	return c.download(ctx, addr, taskID, number, nil)
}

// DownloadPieceAt is DownloadPiece that also requires the piece to sit at offset with length bytes
// (what SyncPieces announced), so a peer cannot pass off a different range of the task.
func (c *Client) DownloadPieceAt(ctx context.Context, addr, taskID string, number uint32, offset, length uint64) (Piece, []byte, error) {
	return c.download(ctx, addr, taskID, number, &span{offset: offset, length: length})
}

// DownloadRange downloads bytes [offset, offset+length) of task taskID from the peer at addr, a
// peer of ours (TagDownloadRange): what it holds verified, whole pieces or not. A Rust dfdaemon
// answers with an error. The answer's offset, length and crc32 are checked like a piece's.
func (c *Client) DownloadRange(ctx context.Context, addr, taskID string, offset, length uint64) ([]byte, error) {
	if length == 0 || length > MaxRangeLength || offset > math.MaxInt64-length {
		return nil, fmt.Errorf("vortex: download range %d+%d of task %s: want 1 to %d bytes", offset, length, taskID, MaxRangeLength)
	}
	if err := checkTaskID(taskID); err != nil {
		return nil, fmt.Errorf("vortex: download range %d+%d of task %s from %s: %w", offset, length, taskID, addr, err)
	}
	req := appendDownloadRange(make([]byte, 0, HeaderSize+downloadRangeSize), uint8(rand.Uint32()), taskID, offset, length)
	_, data, err := c.do(ctx, addr, req, 0, &span{offset: offset, length: length}, func(err error) error {
		return fmt.Errorf("vortex: download range %d+%d of task %s from %s: %w", offset, length, taskID, addr, err)
	})
	return data, err
}

// span is where a piece is expected to be.
type span struct{ offset, length uint64 }

// Close closes every connection (aborting downloads in flight) and makes later downloads fail with
// ErrClientClosed. Idle connections are told so with a Close packet first.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	var idle, active []*clientConn
	for _, conns := range c.idle {
		idle = append(idle, conns...)
	}
	for cn := range c.active {
		active = append(active, cn)
	}
	c.idle, c.active = nil, nil
	c.mu.Unlock()

	for _, cn := range idle {
		cn.timer.Stop()
		_ = cn.nc.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = cn.nc.Write(header{id: uint8(rand.Uint32()), tag: TagClose}.append(nil))
		_ = cn.nc.Close()
	}
	for _, cn := range active {
		_ = cn.nc.Close()
	}
	return nil
}

func (c *Client) download(ctx context.Context, addr, taskID string, number uint32, want *span) (Piece, []byte, error) {
	wrap := func(err error) error {
		return fmt.Errorf("vortex: download piece %d of task %s from %s: %w", number, taskID, addr, err)
	}
	if err := checkTaskID(taskID); err != nil {
		return Piece{}, nil, wrap(err)
	}
	req := appendDownloadPiece(make([]byte, 0, HeaderSize+downloadPieceSize), uint8(rand.Uint32()), taskID, number)
	return c.do(ctx, addr, req, number, want, wrap)
}

// do sends req to addr (on a pooled connection when there is one) and reads the piece answering
// it: number, and where it must sit when want is set.
func (c *Client) do(ctx context.Context, addr string, req []byte, number uint32, want *span, wrap func(error) error) (Piece, []byte, error) {
	fail := func(err error) (Piece, []byte, error) { return Piece{}, nil, wrap(err) }
	for attempt := 0; ; attempt++ {
		cn, err := c.getConn(ctx, addr)
		if err != nil {
			return fail(err)
		}
		reused := cn.reused
		res := c.roundTrip(ctx, cn, req, number, want)
		if res.keep {
			cn.reused = true
			c.putConn(cn)
		} else {
			c.dropConn(cn)
		}
		if res.err == nil {
			return res.piece, res.data, nil
		}
		if ctx.Err() != nil {
			return fail(fmt.Errorf("%w (%w)", context.Cause(ctx), res.err))
		}
		if c.isClosed() {
			return fail(fmt.Errorf("%w (%w)", ErrClientClosed, res.err))
		}
		if res.stale && reused && attempt == 0 {
			// The peer closed the pooled connection before answering: a Rust dfdaemon closes after
			// every piece. Retry on a fresh connection, and stop pooling for this peer.
			c.log.Debug("vortex: pooled connection was closed by the peer, redialing", zap.String("addr", addr), zap.Error(res.err))
			c.mu.Lock()
			if !c.closed {
				c.noReuse[addr] = struct{}{}
			}
			c.mu.Unlock()
			continue
		}
		return fail(res.err)
	}
}

func (c *Client) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// getConn returns an idle connection to addr or dials one.
func (c *Client) getConn(ctx context.Context, addr string) (*clientConn, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClientClosed
	}
	if conns := c.idle[addr]; len(conns) > 0 {
		cn := conns[len(conns)-1]
		conns[len(conns)-1] = nil
		if len(conns) == 1 {
			delete(c.idle, addr)
		} else {
			c.idle[addr] = conns[:len(conns)-1]
		}
		cn.timer.Stop() // if it already fired, reap finds cn gone from the pool and leaves it
		c.active[cn] = struct{}{}
		c.mu.Unlock()
		return cn, nil
	}
	c.mu.Unlock()

	dctx, cancel := context.WithTimeout(ctx, c.opts.DialTimeout)
	nc, err := c.opts.Dial(dctx, "tcp", addr)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	cn := &clientConn{addr: addr, nc: nc, br: bufio.NewReaderSize(nc, 16<<10)}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		_ = nc.Close()
		return nil, ErrClientClosed
	}
	c.active[cn] = struct{}{}
	return cn, nil
}

// putConn returns a connection that finished an exchange cleanly to the pool, or closes it.
func (c *Client) putConn(cn *clientConn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		_ = cn.nc.Close()
		return
	}
	delete(c.active, cn)
	_, noReuse := c.noReuse[cn.addr]
	if noReuse || len(c.idle[cn.addr]) >= c.opts.MaxIdlePerAddr || cn.br.Buffered() > 0 {
		// Buffered bytes nobody asked for mean the peer sent more than its response.
		_ = cn.nc.Close()
		return
	}
	if cn.timer == nil {
		cn.timer = time.AfterFunc(c.opts.IdleTimeout, func() { c.reap(cn) })
	} else {
		cn.timer.Reset(c.opts.IdleTimeout)
	}
	c.idle[cn.addr] = append(c.idle[cn.addr], cn)
}

// reap closes cn if it is still idle in the pool.
func (c *Client) reap(cn *clientConn) {
	c.mu.Lock()
	conns := c.idle[cn.addr]
	for i, x := range conns {
		if x == cn {
			conns = append(conns[:i], conns[i+1:]...)
			if len(conns) == 0 {
				delete(c.idle, cn.addr)
			} else {
				c.idle[cn.addr] = conns
			}
			c.mu.Unlock()
			_ = cn.nc.Close()
			return
		}
	}
	c.mu.Unlock()
}

// dropConn closes a connection whose exchange failed.
func (c *Client) dropConn(cn *clientConn) {
	c.mu.Lock()
	delete(c.active, cn)
	c.mu.Unlock()
	_ = cn.nc.Close()
}

// result is the outcome of one request on one connection.
type result struct {
	piece Piece
	data  []byte
	err   error
	// keep: the connection is in a clean state for another request.
	keep bool
	// stale: the peer closed the connection before answering anything.
	stale bool
}

// roundTrip sends req on cn and reads the response; cancelling ctx closes the connection.
func (c *Client) roundTrip(ctx context.Context, cn *clientConn, req []byte, number uint32, want *span) result {
	stop := context.AfterFunc(ctx, func() { _ = cn.nc.Close() })
	res := c.exchange(cn, req, number, want)
	if !stop() {
		// ctx ended and the connection is closed; a response read in full still stands.
		res.keep = false
	}
	return res
}

// readChunk is how much piece content is read per deadline.
const readChunk = 1 << 20

func (c *Client) exchange(cn *clientConn, req []byte, number uint32, want *span) result {
	if err := cn.nc.SetWriteDeadline(time.Now().Add(c.opts.IOTimeout)); err != nil {
		return result{err: fmt.Errorf("set write deadline: %w", err)}
	}
	if _, err := cn.nc.Write(req); err != nil {
		return result{err: c.ioError("send request", err), stale: true}
	}
	var hb [HeaderSize]byte
	if err := cn.nc.SetReadDeadline(time.Now().Add(c.opts.IOTimeout)); err != nil {
		return result{err: fmt.Errorf("set read deadline: %w", err)}
	}
	if n, err := io.ReadFull(cn.br, hb[:]); err != nil {
		return result{err: c.ioError("read response header", err), stale: n == 0 && closedByPeer(err)}
	}
	h := parseHeader(hb[:])
	switch h.tag {
	case TagPieceContent:
		return c.readPiece(cn, h, number, want)
	case TagError:
		if h.length > MaxErrorSize {
			return result{err: fmt.Errorf("%w: Error packet of %d bytes, more than %d", ErrProtocol, h.length, MaxErrorSize)}
		}
		v, err := c.readValue(cn, h.length)
		if err != nil {
			return result{err: c.ioError("read Error packet", err)}
		}
		rerr, err := decodeError(v)
		if err != nil {
			return result{err: err}
		}
		return result{err: rerr, keep: true}
	case TagClose:
		if h.length != 0 {
			return result{err: fmt.Errorf("%w: Close packet with a %d byte value", ErrProtocol, h.length)}
		}
		return result{err: errors.New("peer closed the connection"), stale: true}
	default:
		return result{err: fmt.Errorf("%w: got a %s packet (%d byte value), want PieceContent or Error", ErrProtocol, h.tag, h.length)}
	}
}

// readPiece reads the rest of a PieceContent response and checks the piece.
func (c *Client) readPiece(cn *clientConn, h header, number uint32, want *span) result {
	if h.length < metadataLengthSize || h.length-metadataLengthSize > MaxMetadataSize {
		return result{err: fmt.Errorf("%w: PieceContent value of %d bytes, want %d to %d", ErrProtocol, h.length, metadataLengthSize+fixedMetadataSize, metadataLengthSize+MaxMetadataSize)}
	}
	v, err := c.readValue(cn, h.length)
	if err != nil {
		return result{err: c.ioError("read piece metadata", err)}
	}
	p, err := decodePieceContentValue(v)
	if err != nil {
		return result{err: err}
	}
	switch {
	case p.Number != number:
		return result{err: fmt.Errorf("%w: asked for piece %d, got piece %d", ErrPieceInvalid, number, p.Number)}
	case p.Length > c.opts.MaxPieceLength:
		return result{err: fmt.Errorf("%w: piece %d is %d bytes, more than the %d allowed", ErrPieceInvalid, number, p.Length, c.opts.MaxPieceLength)}
	case want != nil && (p.Offset != want.offset || p.Length != want.length):
		return result{err: fmt.Errorf("%w: piece %d is at %d+%d, want %d+%d", ErrPieceInvalid, number, p.Offset, p.Length, want.offset, want.length)}
	}
	data := make([]byte, p.Length)
	for off := 0; off < len(data); {
		n := min(readChunk, len(data)-off)
		if err := cn.nc.SetReadDeadline(time.Now().Add(c.opts.IOTimeout)); err != nil {
			return result{err: fmt.Errorf("set read deadline: %w", err)}
		}
		got, err := io.ReadFull(cn.br, data[off:off+n])
		off += got
		if err != nil {
			return result{err: c.ioError(fmt.Sprintf("read piece %d content (%d of %d bytes received)", number, off, len(data)), err)}
		}
	}
	if err := verifyDigest(&p, data); err != nil {
		return result{err: err}
	}
	return result{piece: p, data: data, keep: true}
}

// readValue reads an n byte packet value (n is already capped by the caller).
func (c *Client) readValue(cn *clientConn, n uint32) ([]byte, error) {
	v := make([]byte, n)
	if err := cn.nc.SetReadDeadline(time.Now().Add(c.opts.IOTimeout)); err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(cn.br, v); err != nil {
		return nil, err
	}
	return v, nil
}

// ioError names what failed; a deadline becomes "no progress for IOTimeout".
func (c *Client) ioError(what string, err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("%s: no progress for %s: %w", what, c.opts.IOTimeout, err)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return fmt.Errorf("%s: connection closed by the peer: %w", what, io.ErrUnexpectedEOF)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// closedByPeer reports whether err says the peer closed or reset the connection.
func closedByPeer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// verifyDigest checks data against p.Digest when there is one. Like the Rust client
// (dragonfly-client-storage/src/lib.rs handle_downloaded_piece_from_parent_finished) it compares the
// digest strings, so only the exact "crc32:<decimal>" form matches.
func verifyDigest(p *Piece, data []byte) error {
	if p.Digest == "" {
		return nil
	}
	if algo, _, _ := strings.Cut(p.Digest, ":"); algo != "crc32" {
		return fmt.Errorf("%w: piece %d has digest %q, only crc32 is supported", ErrPieceInvalid, p.Number, p.Digest)
	}
	if got := CRC32Digest(data); got != p.Digest {
		return fmt.Errorf("%w: piece %d digest is %s, its content has %s", ErrPieceInvalid, p.Number, p.Digest, got)
	}
	return nil
}
