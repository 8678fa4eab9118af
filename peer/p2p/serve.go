package p2p

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	commonv2 "d7y.io/api/v2/pkg/apis/common/v2"
	"go.uber.org/zap"

	"github.com/dfnydus/dfnydus/peer/upload"
	"github.com/dfnydus/dfnydus/peer/vortex"
)

// Task implements upload.Tasks: what another peer (SyncPieces) or the scheduler (StatTask) sees
// of a task. Held pieces are those the store has verified, nothing else.
func (m *Manager) Task(ctx context.Context, id string) (upload.TaskInfo, error) {
	t, err := m.lookup(id)
	if err != nil {
		return upload.TaskInfo{}, err
	}
	info := upload.TaskInfo{ID: t.id, URL: t.url, PieceLength: t.lay.pieceLength, ContentLength: t.lay.size, PieceCount: t.lay.count}
	for n := uint32(0); n < t.lay.count; n++ {
		if !t.held(n) {
			continue
		}
		crc, err := t.pieceCRC(n)
		if err != nil {
			continue
		}
		off, l := t.lay.bounds(n)
		info.Held = append(info.Held, upload.PieceInfo{Number: n, Offset: off, Length: l, Digest: crcDigest(crc)})
	}
	info.Done = uint32(len(info.Held)) == t.lay.count
	return info, nil
}

// WaitPiece implements upload.Tasks: another peer asked for a piece; it is fetched now if this peer
// does not hold it yet (demand travels up the tree of parents to whoever goes back to source).
// A piece holding bytes no chunk covers that the blob's ToC cannot vouch for (blob.VerifyTail) is
// held only once the whole blob is here and matches its digest, so asking for it then brings in
// the whole blob.
func (m *Manager) WaitPiece(ctx context.Context, id string, n uint32) (upload.PieceInfo, error) {
	t, err := m.lookup(id)
	if err != nil {
		return upload.PieceInfo{}, err
	}
	if n >= t.lay.count {
		return upload.PieceInfo{}, fmt.Errorf("task %s: piece %d of %d: %w", id, n, t.lay.count, upload.ErrTaskNotFound)
	}
	off, l := t.lay.bounds(n)
	if !t.held(n) {
		// A child waits for this piece: background fetches step aside as for a reader.
		done := m.f.OnDemand()
		defer done()
	}
	// The chunks across the piece's edges come whole: their bytes in the piece are verified only
	// with the rest of them.
	so, sn := t.bl.ChunkSpan(int64(off), int64(l))
	if err := t.fill(ctx, so, sn); err != nil && !t.bl.Store().Covered(int64(off), int64(l)) {
		return upload.PieceInfo{}, err
	}
	if !t.held(n) {
		if err := t.whole(ctx); err != nil {
			return upload.PieceInfo{}, err
		}
	}
	crc, err := t.pieceCRC(n)
	if err != nil {
		return upload.PieceInfo{}, err
	}
	return upload.PieceInfo{Number: n, Offset: off, Length: l, Digest: crcDigest(crc)}, nil
}

// whole brings every byte of the blob in and checks the bytes no chunk covers against the blob's
// digest.
func (t *task) whole(ctx context.Context) error {
	if err := t.fill(ctx, 0, int64(t.lay.size)); err != nil && !t.bl.Store().Covered(0, int64(t.lay.size)) {
		return err
	}
	return t.bl.CheckWhole(ctx)
}

// ServePiece is the Vortex handler: a held piece, streamed from the store (pinned against
// eviction while it is sent), never held whole in memory.
func (m *Manager) ServePiece(ctx context.Context, id string, n uint32) (vortex.Piece, io.ReadCloser, error) {
	t, err := m.lookup(id)
	if err != nil {
		return vortex.Piece{}, nil, fmt.Errorf("%w: %w", vortex.ErrPieceNotFound, err)
	}
	if n >= t.lay.count || !t.held(n) {
		return vortex.Piece{}, nil, fmt.Errorf("task %s piece %d not held: %w", id, n, vortex.ErrPieceNotFound)
	}
	t.touch()
	crc, err := t.pieceCRC(n)
	if err != nil {
		return vortex.Piece{}, nil, fmt.Errorf("task %s piece %d: %w: %w", id, n, vortex.ErrPieceNotFound, err)
	}
	off, l := t.lay.bounds(n)
	rc, err := t.bl.Store().OpenRange(int64(off), int64(l))
	if err != nil {
		return vortex.Piece{}, nil, fmt.Errorf("task %s piece %d: %w: %w", id, n, vortex.ErrPieceNotFound, err)
	}
	m.met.served.Inc()
	m.met.servedBytes.Add(float64(l))
	return vortex.Piece{Number: n, Offset: off, Length: l, Digest: crcDigest(crc), ParentID: t.peerID,
		TrafficType: vortex.TrafficTypeRemotePeer, CreatedAt: time.Now()}, rc, nil
}

// ServeRange is the Vortex DownloadRange handler (between our peers): bytes of a task this peer
// holds verified, whether or not their pieces are complete, so that a peer starting a container
// takes the few chunks it reads from a neighbour that read them before, not whole pieces. Nothing
// unverified is served: the whole range must be verified in the store.
func (m *Manager) ServeRange(ctx context.Context, id string, off, n uint64) (vortex.Piece, io.ReadCloser, error) {
	t, err := m.lookup(id)
	if err != nil {
		return vortex.Piece{}, nil, fmt.Errorf("%w: %w", vortex.ErrPieceNotFound, err)
	}
	if off+n > t.lay.size {
		return vortex.Piece{}, nil, fmt.Errorf("task %s [%d, +%d) outside its %d bytes: %w", id, off, n, t.lay.size, vortex.ErrPieceNotFound)
	}
	t.touch()
	if !t.bl.Store().Verified(int64(off), int64(n)) {
		// Demand travels up the tree, as for pieces (WaitPiece): bring the bytes in (once
		// however many children ask; from this peer's parents or the source), then serve them.
		fctx, cancel := context.WithTimeout(ctx, m.cfg.ParentTimeout)
		done := m.f.OnDemand() // a child waits: background fetches step aside as for a reader
		// Whole chunks: a child may ask for part of one (it holds the rest pending), and bytes of
		// a chunk are verified only with all of it.
		co, cn := t.bl.ChunkSpan(int64(off), int64(n))
		err := t.fillRange(fctx, co, cn)
		done()
		cancel()
		if err != nil || !t.bl.Store().Verified(int64(off), int64(n)) {
			return vortex.Piece{}, nil, fmt.Errorf("task %s [%d, +%d) not held: %w: %w", id, off, n, vortex.ErrPieceNotFound, err)
		}
	}
	// Read whole (vortex.MaxRangeLength at most) for the crc32 the answer carries.
	data := make([]byte, n)
	if err := t.bl.Store().ReadAt(data, int64(off)); err != nil {
		return vortex.Piece{}, nil, fmt.Errorf("task %s [%d, +%d): %w: %w", id, off, n, vortex.ErrPieceNotFound, err)
	}
	m.met.servedRanges.Inc()
	m.met.servedBytes.Add(float64(n))
	return vortex.Piece{Offset: off, Length: n, Digest: vortex.CRC32Digest(data), ParentID: t.peerID,
		TrafficType: vortex.TrafficTypeRemotePeer, CreatedAt: time.Now()}, io.NopCloser(bytes.NewReader(data)), nil
}

// DownloadTask implements upload.Tasks: the scheduler asks this (seed) peer to hold a whole task.
// Every byte of a blob no mounted image describes stays pending until the whole blob matches the
// digest in its URL; only then are its pieces held, listed and served. A failed check drops them.
func (m *Manager) DownloadTask(ctx context.Context, id string, d *commonv2.Download, progress func(upload.PieceInfo)) (upload.TaskInfo, error) {
	t, err := m.lookup(id)
	if err == nil {
		m.mu.Lock()
		t.refs++
		m.mu.Unlock()
	} else {
		if m.cfg.OpenURL == nil {
			return upload.TaskInfo{}, fmt.Errorf("task %s: this peer cannot download by URL", id)
		}
		src, blobID, size, oerr := m.cfg.OpenURL(ctx, d.GetUrl())
		if oerr != nil {
			return upload.TaskInfo{}, fmt.Errorf("task %s: open %s: %w", id, d.GetUrl(), oerr)
		}
		if size <= 0 {
			return upload.TaskInfo{}, fmt.Errorf("task %s: %s has no size", id, d.GetUrl())
		}
		t, err = m.acquire(taskSpec{id: id, url: d.GetUrl(), blobID: blobID, size: size, src: src, seed: true,
			backToSource: d.GetNeedBackToSource()})
		if err != nil {
			return upload.TaskInfo{}, err
		}
		m.mu.Lock()
		t.refs++ // this call's, besides the one the idle timer drops
		m.mu.Unlock()
	}
	// A seed task's own reference is dropped by its idle timer; this call's reference now.
	defer m.release(t)
	t.touch()
	if err := t.downloadAll(ctx, progress); err != nil {
		return upload.TaskInfo{}, err
	}
	return m.Task(ctx, id)
}

// downloadAll fetches the whole blob a few pieces at a time, then checks it, reporting each piece
// as it is held.
func (t *task) downloadAll(ctx context.Context, progress func(upload.PieceInfo)) error {
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	sem := make(chan struct{}, t.m.cfg.ReadParallelism)
	for n := uint32(0); n < t.lay.count; n++ {
		sem <- struct{}{}
		wg.Add(1)
		go func(n uint32) {
			defer wg.Done()
			defer func() { <-sem }()
			off, l := t.lay.bounds(n)
			err := t.fill(ctx, int64(off), int64(l))
			if err != nil && t.bl.Store().Covered(int64(off), int64(l)) {
				err = nil // pending until the whole-blob check
			}
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		}(n)
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	if err := t.bl.CheckWhole(ctx); err != nil {
		t.log.Error("downloaded blob does not match its digest: dropped", zap.Error(err))
		return err
	}
	if progress != nil {
		for n := uint32(0); n < t.lay.count; n++ {
			if !t.held(n) {
				return fmt.Errorf("task %s: piece %d not held after the download", t.id, n)
			}
			crc, err := t.pieceCRC(n)
			if err != nil {
				return err
			}
			off, l := t.lay.bounds(n)
			progress(upload.PieceInfo{Number: n, Offset: off, Length: l, Digest: crcDigest(crc)})
		}
	}
	return nil
}

// DeleteTask implements upload.Tasks: a task no mount uses is ended and its blob's bytes dropped
// from the store unless a mounted image still uses the blob.
func (m *Manager) DeleteTask(ctx context.Context, id string) error {
	m.mu.Lock()
	t, ok := m.tasks[id]
	if ok && (!t.seed || t.refs > 1) {
		m.mu.Unlock()
		return fmt.Errorf("task %s is in use", id)
	}
	if ok {
		delete(m.tasks, id)
		m.met.tasks.Set(float64(len(m.tasks)))
	}
	m.mu.Unlock()
	if !ok {
		return fmt.Errorf("task %s: %w", id, upload.ErrTaskNotFound)
	}
	t.close()
	if !m.f.BlobInUse(t.blobID) {
		if err := m.f.Store().Remove(t.blobID); err != nil {
			return fmt.Errorf("task %s: drop blob %s: %w", id, t.blobID, err)
		}
	}
	return nil
}

// BlobIDFromURL returns the hex digest of a registry blob URL (.../blobs/sha256:HEX).
func BlobIDFromURL(u string) (string, error) {
	i := strings.LastIndex(u, "/blobs/sha256:")
	if i < 0 {
		return "", errors.New("not a registry blob URL: " + u)
	}
	id := u[i+len("/blobs/sha256:"):]
	if j := strings.IndexAny(id, "?#"); j >= 0 {
		id = id[:j]
	}
	if len(id) != 64 {
		return "", errors.New("blob URL without a sha256 digest: " + u)
	}
	return id, nil
}
