package vortex

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/time/rate"
)

// Handler serves a piece: its metadata (Digest, "crc32:<decimal>", set up front) and a reader of
// exactly its Length bytes, which the Server streams to the connection and closes. A reader that
// fails or ends early cuts the connection (the client's length and crc32 checks catch the rest).
// An error becomes an Error packet with a fixed message, with CodeNotFound when
// errors.Is(err, ErrPieceNotFound); its text goes to the local log only. ctx ends when the Server
// closes.
type Handler func(ctx context.Context, taskID string, number uint32) (Piece, io.ReadCloser, error)

// RangeHandler serves DownloadRange: the verified bytes [offset, offset+length) of a task, as a
// Piece with Number 0, that Offset and Length and a crc32 Digest, and a reader of exactly Length
// bytes. ErrPieceNotFound when the peer does not hold every byte of the range verified.
type RangeHandler func(ctx context.Context, taskID string, offset, length uint64) (Piece, io.ReadCloser, error)

// BytesHandler adapts a handler that returns the piece in memory, filling in the crc32 digest when
// it is empty.
func BytesHandler(f func(ctx context.Context, taskID string, number uint32) (Piece, []byte, error)) Handler {
	return func(ctx context.Context, taskID string, number uint32) (Piece, io.ReadCloser, error) {
		p, data, err := f(ctx, taskID, number)
		if err != nil {
			return Piece{}, nil, err
		}
		if p.Length != uint64(len(data)) {
			return Piece{}, nil, fmt.Errorf("vortex: handler returned %d bytes for piece %d of length %d", len(data), number, p.Length)
		}
		if p.Digest == "" {
			p.Digest = CRC32Digest(data)
		}
		return p, io.NopCloser(bytes.NewReader(data)), nil
	}
}

// Server defaults. The idle timeout is the Rust server's DEFAULT_MAX_IDLE_TIMEOUT
// (dragonfly-client-storage/src/server/mod.rs). The Rust server has no connection or concurrency
// cap; ours has both so that a peer cannot hold unbounded goroutines and file descriptors.
const (
	DefaultServerIdleTimeout   = 60 * time.Second
	DefaultServerIOTimeout     = 30 * time.Second
	DefaultMaxConnections      = 1024
	DefaultMaxConcurrentPieces = 64
)

// The fixed messages of Error packets: what went wrong in detail is logged locally, never sent to a
// remote peer.
const (
	MsgNotFound    = "task not found"
	MsgInvalid     = "invalid request"
	MsgInternal    = "internal error"
	MsgUnavailable = "unavailable"
)

// ServerOptions configure a Server; zero values take the defaults.
type ServerOptions struct {
	// IdleTimeout closes a connection that sends no request for this long.
	IdleTimeout time.Duration
	// IOTimeout is the longest a request may take to arrive once started, the longest any chunk
	// of a response may take to be written (a reader that stops reading is cut off), and the
	// longest a request waits for a piece slot (MaxConcurrentPieces).
	IOTimeout time.Duration
	// MaxConnections caps the connections open at once across the Server's listeners; a
	// connection over it is closed as soon as it is accepted.
	MaxConnections int
	// MaxConcurrentPieces caps the pieces being served at once across connections; further
	// requests wait up to IOTimeout, then get an Error packet.
	MaxConcurrentPieces int
	// Limiter, when set, paces every byte of piece content sent (shared with whatever else
	// uses it). Its burst must be at least 1; chunks are cut to fit it.
	Limiter *rate.Limiter
	// Ranges, when set, answers DownloadRange requests (our extension); without it they get an
	// Error packet, as from a Rust peer. Ranges count against MaxConcurrentPieces like pieces.
	Ranges RangeHandler
}

// ServerStats counts what a Server did.
type ServerStats struct {
	// Pieces and Bytes count pieces served in full and their content bytes.
	Pieces, Bytes uint64
	// Errors counts Error packets sent (including piece not found).
	Errors uint64
	// Refused counts connections closed at once because MaxConnections were open.
	Refused uint64
}

// Server serves pieces over Vortex/TCP. One connection carries any number of requests, one after
// the other.
type Server struct {
	h    Handler
	log  *zap.Logger
	opts ServerOptions

	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex
	closed bool
	lns    map[net.Listener]struct{}
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup

	// slots holds one token per piece being served (MaxConcurrentPieces).
	slots chan struct{}

	pieces, bytes, errs, refused atomic.Uint64
}

// NewServer returns a Server that serves pieces with h and the default options.
func NewServer(h Handler, log *zap.Logger) *Server {
	return NewServerWithOptions(h, log, ServerOptions{})
}

// NewServerWithOptions returns a Server that serves pieces with h.
func NewServerWithOptions(h Handler, log *zap.Logger, opts ServerOptions) *Server {
	if log == nil {
		log = zap.NewNop()
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultServerIdleTimeout
	}
	if opts.IOTimeout <= 0 {
		opts.IOTimeout = DefaultServerIOTimeout
	}
	if opts.MaxConnections <= 0 {
		opts.MaxConnections = DefaultMaxConnections
	}
	if opts.MaxConcurrentPieces <= 0 {
		opts.MaxConcurrentPieces = DefaultMaxConcurrentPieces
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		h: h, log: log, opts: opts, ctx: ctx, cancel: cancel,
		lns: map[net.Listener]struct{}{}, conns: map[net.Conn]struct{}{},
		slots: make(chan struct{}, opts.MaxConcurrentPieces),
	}
}

// Stats returns what the server has done so far.
func (s *Server) Stats() ServerStats {
	return ServerStats{Pieces: s.pieces.Load(), Bytes: s.bytes.Load(), Errors: s.errs.Load(), Refused: s.refused.Load()}
}

// Serve accepts connections on ln until ln fails or the Server is closed; it returns nil after
// Close. Serve may run on several listeners at once.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = ln.Close()
		return nil
	}
	s.lns[ln] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()

	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.isClosed() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded) || isTemporary(err) {
				// Transient (e.g. EMFILE): keep serving, as the Rust server does, without spinning.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("vortex: accept failed, retrying", zap.Duration("backoff", backoff), zap.Error(err))
				select {
				case <-time.After(backoff):
					continue
				case <-s.ctx.Done():
					return nil
				}
			}
			s.mu.Lock()
			delete(s.lns, ln)
			s.mu.Unlock()
			return fmt.Errorf("vortex: accept on %s: %w", ln.Addr(), err)
		}
		backoff = 0
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			_ = nc.Close()
			return nil
		}
		if len(s.conns) >= s.opts.MaxConnections {
			s.mu.Unlock()
			// Closed before a goroutine or buffer is spent on it: idle connections cannot pile up.
			_ = nc.Close()
			if s.refused.Add(1)%100 == 1 {
				s.log.Warn("vortex: too many connections, closing new ones", zap.Int("max_connections", s.opts.MaxConnections),
					zap.Stringer("remote", nc.RemoteAddr()), zap.Uint64("refused_so_far", s.refused.Load()))
			}
			continue
		}
		s.conns[nc] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.serveConn(nc)
			s.mu.Lock()
			delete(s.conns, nc)
			s.mu.Unlock()
			_ = nc.Close()
		}()
	}
}

// isTemporary reports accept errors worth retrying.
func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// Close stops every Serve, closes the listeners and connections (cutting transfers in flight),
// cancels the handlers' context and waits for the connection goroutines to end.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.cancel()
	var errs []error
	for ln := range s.lns {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, fmt.Errorf("vortex: close listener %s: %w", ln.Addr(), err))
		}
	}
	for nc := range s.conns {
		_ = nc.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return errors.Join(errs...)
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// serveConn answers requests on nc until the peer closes it, idles out, sends something invalid, or
// the server closes.
func (s *Server) serveConn(nc net.Conn) {
	log := s.log.With(zap.Stringer("remote", nc.RemoteAddr()))
	br := bufio.NewReaderSize(nc, 4<<10)
	var hb [HeaderSize]byte
	var value [max(downloadPieceSize, downloadRangeSize)]byte
	for {
		if err := nc.SetReadDeadline(time.Now().Add(s.opts.IdleTimeout)); err != nil {
			return
		}
		// Wait for the first byte under the idle timeout, then give the rest IOTimeout.
		if _, err := io.ReadFull(br, hb[:1]); err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !errors.Is(err, os.ErrDeadlineExceeded) {
				log.Debug("vortex: read request", zap.Error(err))
			}
			return
		}
		if err := nc.SetReadDeadline(time.Now().Add(s.opts.IOTimeout)); err != nil {
			return
		}
		if _, err := io.ReadFull(br, hb[1:]); err != nil {
			log.Debug("vortex: read request header", zap.Error(err))
			return
		}
		h := parseHeader(hb[:])
		switch h.tag {
		case TagDownloadPiece:
		case TagDownloadRange:
			if s.opts.Ranges == nil {
				log.Debug("vortex: DownloadRange, not served here")
				s.sendError(nc, log, CodeInvalidArgument, MsgInvalid)
				return
			}
			if h.length != downloadRangeSize {
				log.Warn("vortex: malformed DownloadRange", zap.Uint32("length", h.length))
				s.sendError(nc, log, CodeInvalidArgument, MsgInvalid)
				return
			}
			if _, err := io.ReadFull(br, value[:downloadRangeSize]); err != nil {
				log.Debug("vortex: read DownloadRange", zap.Error(err))
				return
			}
			taskID, off, n, err := decodeDownloadRange(value[:downloadRangeSize])
			if err != nil {
				log.Warn("vortex: malformed DownloadRange", zap.Error(err))
				s.sendError(nc, log, CodeInvalidArgument, MsgInvalid)
				return
			}
			if !s.serveRange(nc, log, taskID, off, n) {
				return
			}
			continue
		case TagClose:
			return
		default:
			log.Warn("vortex: unsupported request", zap.Stringer("tag", h.tag), zap.Uint32("length", h.length))
			s.sendError(nc, log, CodeInvalidArgument, MsgInvalid)
			return
		}
		if h.length != downloadPieceSize {
			log.Warn("vortex: malformed DownloadPiece", zap.Uint32("length", h.length))
			s.sendError(nc, log, CodeInvalidArgument, MsgInvalid)
			return
		}
		if _, err := io.ReadFull(br, value[:downloadPieceSize]); err != nil {
			log.Debug("vortex: read DownloadPiece", zap.Error(err))
			return
		}
		taskID, number, err := decodeDownloadPiece(value[:downloadPieceSize])
		if err != nil {
			log.Warn("vortex: malformed DownloadPiece", zap.Error(err))
			s.sendError(nc, log, CodeInvalidArgument, MsgInvalid)
			return
		}
		if !s.servePiece(nc, log, taskID, number) {
			return
		}
	}
}
