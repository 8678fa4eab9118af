package vortex

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"go.uber.org/zap"
)

// copyChunk is how much piece content is read from the handler's reader and written per deadline:
// small, so that a connection costs no more than this while it streams, however long the piece.
const copyChunk = 64 << 10

var chunkPool = sync.Pool{New: func() any { b := make([]byte, copyChunk); return &b }}

// servePiece answers one DownloadPiece; it returns false when the connection is no longer usable.
func (s *Server) servePiece(nc net.Conn, log *zap.Logger, taskID string, number uint32) bool {
	log = log.With(zap.String("task", taskID), zap.Uint32("piece", number))
	return s.serve(nc, log, func() (Piece, io.ReadCloser, error) {
		p, rc, err := s.h(s.ctx, taskID, number)
		if err == nil {
			if err = s.checkServed(&p, number); err != nil {
				_ = rc.Close()
			}
		}
		return p, rc, err
	})
}

// serveRange answers one DownloadRange; it returns false when the connection is no longer usable.
func (s *Server) serveRange(nc net.Conn, log *zap.Logger, taskID string, off, n uint64) bool {
	log = log.With(zap.String("task", taskID), zap.Uint64("offset", off), zap.Uint64("length", n))
	return s.serve(nc, log, func() (Piece, io.ReadCloser, error) {
		p, rc, err := s.opts.Ranges(s.ctx, taskID, off, n)
		if err == nil {
			if err = s.checkServedRange(&p, off, n); err != nil {
				_ = rc.Close()
			}
		}
		return p, rc, err
	})
}

// serve sends what get returns (piece metadata, then its content) under a piece slot.
func (s *Server) serve(nc net.Conn, log *zap.Logger, get func() (Piece, io.ReadCloser, error)) bool {
	release, ok := s.acquireSlot()
	if !ok {
		log.Warn("vortex: no piece slot free in time", zap.Int("max_concurrent_pieces", s.opts.MaxConcurrentPieces))
		return s.sendError(nc, log, CodeInternal, MsgUnavailable)
	}
	defer release()
	p, rc, err := get()
	if err != nil {
		if errors.Is(err, ErrPieceNotFound) {
			log.Debug("vortex: piece not found", zap.Error(err))
			return s.sendError(nc, log, CodeNotFound, MsgNotFound)
		}
		log.Warn("vortex: serve piece failed", zap.Error(err))
		return s.sendError(nc, log, CodeInternal, MsgInternal)
	}
	defer rc.Close()
	// The Rust server writes the header and metadata first, then the content
	// (dragonfly-client-storage/src/server/tcp.rs handle: write_response, then write_stream).
	msg := make([]byte, 0, HeaderSize+metadataLengthSize+metadataSize(&p))
	msg = header{id: uint8(rand.Uint32()), tag: TagPieceContent, length: uint32(metadataLengthSize + metadataSize(&p))}.append(msg)
	msg = appendPieceContentValue(msg, &p)
	if err := s.write(nc, msg); err != nil {
		log.Debug("vortex: send piece metadata", zap.Error(err))
		return false
	}
	sent, err := s.stream(nc, rc, p.Length)
	if err != nil {
		// The header promised Length bytes: the connection cannot carry anything else now.
		log.Info("vortex: piece cut short", zap.Uint64("sent", sent), zap.Uint64("length", p.Length), zap.Error(err))
		return false
	}
	s.pieces.Add(1)
	s.bytes.Add(sent)
	log.Debug("vortex: served piece", zap.Uint64("length", sent))
	return true
}

// acquireSlot waits up to IOTimeout for one of the MaxConcurrentPieces slots.
func (s *Server) acquireSlot() (release func(), ok bool) {
	release = func() { <-s.slots }
	select {
	case s.slots <- struct{}{}:
		return release, true
	default:
	}
	t := time.NewTimer(s.opts.IOTimeout)
	defer t.Stop()
	select {
	case s.slots <- struct{}{}:
		return release, true
	case <-t.C:
	case <-s.ctx.Done():
	}
	return nil, false
}

// stream copies exactly n bytes of r to nc in small chunks, each paced by the limiter and written
// under its own deadline.
func (s *Server) stream(nc net.Conn, r io.Reader, n uint64) (uint64, error) {
	bp := chunkPool.Get().(*[]byte)
	defer chunkPool.Put(bp)
	buf := *bp
	if l := s.opts.Limiter; l != nil && l.Burst() > 0 && l.Burst() < len(buf) {
		buf = buf[:l.Burst()]
	}
	var sent uint64
	for sent < n {
		chunk := buf[:min(uint64(len(buf)), n-sent)]
		if _, err := io.ReadFull(r, chunk); err != nil {
			return sent, fmt.Errorf("read piece content at %d: %w", sent, err)
		}
		if err := s.pace(len(chunk)); err != nil {
			return sent, err
		}
		if err := s.write(nc, chunk); err != nil {
			return sent, fmt.Errorf("write piece content at %d: %w", sent, err)
		}
		sent += uint64(len(chunk))
	}
	return sent, nil
}

// pace waits for the limiter to allow n bytes, for at most IOTimeout.
func (s *Server) pace(n int) error {
	if s.opts.Limiter == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.IOTimeout)
	defer cancel()
	if err := s.opts.Limiter.WaitN(ctx, n); err != nil {
		return fmt.Errorf("upload rate limit: %w", err)
	}
	return nil
}

// checkServed checks what the handler returned and fills in the creation time when the handler
// left it empty. The digest cannot be computed here without reading the piece twice: a handler
// must set it, so that every piece we send can be verified.
func (s *Server) checkServed(p *Piece, number uint32) error {
	if p.Number != number {
		return fmt.Errorf("vortex: handler returned piece %d for piece %d", p.Number, number)
	}
	if p.Length > MaxPieceLength {
		return fmt.Errorf("vortex: handler returned piece %d of %d bytes, more than %d", number, p.Length, MaxPieceLength)
	}
	if p.Digest == "" {
		return fmt.Errorf("vortex: handler returned piece %d without a digest", number)
	}
	if p.CreatedAt.IsZero() {
		p.CreatedAt = time.Now()
	}
	return checkPiece(p)
}

// checkServedRange is checkServed for a DownloadRange answer.
func (s *Server) checkServedRange(p *Piece, off, n uint64) error {
	if p.Number != 0 || p.Offset != off || p.Length != n {
		return fmt.Errorf("vortex: range handler returned piece %d at %d+%d for the range %d+%d", p.Number, p.Offset, p.Length, off, n)
	}
	if p.Digest == "" {
		return fmt.Errorf("vortex: range handler returned %d+%d without a digest", off, n)
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
