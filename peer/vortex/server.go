package vortex

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Handler serves a piece: its metadata and exactly its bytes (len == Length). An error becomes an
// Error packet, with CodeNotFound when errors.Is(err, ErrPieceNotFound). ctx ends when the Server
// closes.
type Handler func(ctx context.Context, taskID string, number uint32) (Piece, []byte, error)

// Server defaults. The idle timeout is the Rust server's DEFAULT_MAX_IDLE_TIMEOUT
// (dragonfly-client-storage/src/server/mod.rs).
const (
	DefaultServerIdleTimeout = 60 * time.Second
	DefaultServerIOTimeout   = 30 * time.Second
)

// ServerOptions configure a Server; zero values take the defaults.
type ServerOptions struct {
	// IdleTimeout closes a connection that sends no request for this long.
	IdleTimeout time.Duration
	// IOTimeout is the longest a request may take to arrive once started, and the longest any
	// 1 MiB of a response may take to be written (a reader that stops reading is cut off).
	IOTimeout time.Duration
}

// ServerStats counts what a Server did.
type ServerStats struct {
	// Pieces and Bytes count pieces served in full and their content bytes.
	Pieces, Bytes uint64
	// Errors counts Error packets sent (including piece not found).
	Errors uint64
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

	pieces, bytes, errs atomic.Uint64
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
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		h: h, log: log, opts: opts, ctx: ctx, cancel: cancel,
		lns: map[net.Listener]struct{}{}, conns: map[net.Conn]struct{}{},
	}
}

// Stats returns what the server has done so far.
func (s *Server) Stats() ServerStats {
	return ServerStats{Pieces: s.pieces.Load(), Bytes: s.bytes.Load(), Errors: s.errs.Load()}
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
	var value [downloadPieceSize]byte
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
		case TagClose:
			return
		default:
			log.Warn("vortex: unsupported request", zap.Stringer("tag", h.tag), zap.Uint32("length", h.length))
			s.sendError(nc, log, CodeInvalidArgument, fmt.Sprintf("unsupported request tag %d (%s)", uint8(h.tag), h.tag))
			return
		}
		if h.length != downloadPieceSize {
			log.Warn("vortex: malformed DownloadPiece", zap.Uint32("length", h.length))
			s.sendError(nc, log, CodeInvalidArgument, fmt.Sprintf("DownloadPiece value is %d bytes, want %d", h.length, downloadPieceSize))
			return
		}
		if _, err := io.ReadFull(br, value[:]); err != nil {
			log.Debug("vortex: read DownloadPiece", zap.Error(err))
			return
		}
		taskID, number, err := decodeDownloadPiece(value[:])
		if err != nil {
			log.Warn("vortex: malformed DownloadPiece", zap.Error(err))
			s.sendError(nc, log, CodeInvalidArgument, err.Error())
			return
		}
		if !s.servePiece(nc, log, taskID, number) {
			return
		}
	}
}

// writeChunk is how much piece content is written per deadline.
const writeChunk = 1 << 20

// servePiece answers one DownloadPiece; it returns false when the connection is no longer usable.
func (s *Server) servePiece(nc net.Conn, log *zap.Logger, taskID string, number uint32) bool {
	p, data, err := s.h(s.ctx, taskID, number)
	if err == nil {
		err = s.checkServed(&p, data, number)
	}
	if err != nil {
		code := CodeInternal
		if errors.Is(err, ErrPieceNotFound) {
			code = CodeNotFound
			log.Debug("vortex: piece not found", zap.String("task", taskID), zap.Uint32("piece", number), zap.Error(err))
		} else {
			log.Warn("vortex: serve piece failed", zap.String("task", taskID), zap.Uint32("piece", number), zap.Error(err))
		}
		return s.sendError(nc, log, code, err.Error())
	}
	// The Rust server writes the header and metadata first, then the content
	// (dragonfly-client-storage/src/server/tcp.rs handle: write_response, then write_stream).
	msg := make([]byte, 0, HeaderSize+metadataLengthSize+metadataSize(&p))
	msg = header{id: uint8(rand.Uint32()), tag: TagPieceContent, length: uint32(metadataLengthSize + metadataSize(&p))}.append(msg)
	msg = appendPieceContentValue(msg, &p)
	if err := s.write(nc, msg); err != nil {
		log.Debug("vortex: send piece metadata", zap.String("task", taskID), zap.Uint32("piece", number), zap.Error(err))
		return false
	}
	for off := 0; off < len(data); off += writeChunk {
		if err := s.write(nc, data[off:min(off+writeChunk, len(data))]); err != nil {
			log.Debug("vortex: send piece content", zap.String("task", taskID), zap.Uint32("piece", number),
				zap.Int("sent", off), zap.Int("length", len(data)), zap.Error(err))
			return false
		}
	}
	s.pieces.Add(1)
	s.bytes.Add(uint64(len(data)))
	log.Debug("vortex: served piece", zap.String("task", taskID), zap.Uint32("piece", number), zap.Int("length", len(data)))
	return true
}

// checkServed checks what the handler returned and fills in the digest and creation time when the
// handler left them empty, so every piece we send can be verified.
func (s *Server) checkServed(p *Piece, data []byte, number uint32) error {
	if p.Number != number {
		return fmt.Errorf("vortex: handler returned piece %d for piece %d", p.Number, number)
	}
	if p.Length != uint64(len(data)) {
		return fmt.Errorf("vortex: handler returned %d bytes for piece %d of length %d", len(data), number, p.Length)
	}
	if p.Digest == "" {
		p.Digest = CRC32Digest(data)
	}
	if p.CreatedAt.IsZero() {
		p.CreatedAt = time.Now()
	}
	return checkPiece(p)
}

// sendError writes an Error packet; it returns false if the connection failed.
func (s *Server) sendError(nc net.Conn, log *zap.Logger, code Code, msg string) bool {
	s.errs.Add(1)
	if err := s.write(nc, appendError(nil, uint8(rand.Uint32()), code, msg)); err != nil {
		log.Debug("vortex: send error", zap.Error(err))
		return false
	}
	return true
}

func (s *Server) write(nc net.Conn, b []byte) error {
	if err := nc.SetWriteDeadline(time.Now().Add(s.opts.IOTimeout)); err != nil {
		return err
	}
	_, err := nc.Write(b)
	return err
}
