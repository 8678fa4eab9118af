package p2p

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	commonv2 "d7y.io/api/v2/pkg/apis/common/v2"
	"go.uber.org/zap"

	"github.com/dfnydus/dfnydus/peer/upload"
	"github.com/dfnydus/dfnydus/peer/vortex"
)

// Task implements upload.Tasks.
func (m *Manager) Task(ctx context.Context, id string) (upload.TaskInfo, error) {
	t, err := m.lookup(id)
	if err != nil {
		return upload.TaskInfo{}, err
	}
	info := upload.TaskInfo{ID: t.id, URL: t.url, PieceLength: t.lay.pieceLength, ContentLength: t.lay.size, PieceCount: t.lay.count}
	t.mu.Lock()
	for n, r := range t.held {
		if r.Verified {
			off, l := t.lay.bounds(n)
			info.Held = append(info.Held, upload.PieceInfo{Number: n, Offset: off, Length: l, Digest: crcDigest(r.CRC32)})
		}
	}
	t.mu.Unlock()
	info.Done = uint32(len(info.Held)) == t.lay.count
	return info, nil
}

// WaitPiece implements upload.Tasks: another peer asked for a piece; it is fetched now if this peer
// does not hold it yet (demand travels up the tree of parents to whoever goes back to source).
func (m *Manager) WaitPiece(ctx context.Context, id string, n uint32) (upload.PieceInfo, error) {
	t, err := m.lookup(id)
	if err != nil {
		return upload.PieceInfo{}, err
	}
	r, err := t.verifiedPiece(ctx, n)
	if err != nil {
		return upload.PieceInfo{}, err
	}
	off, l := t.lay.bounds(n)
	return upload.PieceInfo{Number: n, Offset: off, Length: l, Digest: crcDigest(r.CRC32)}, nil
}

// ServePiece is the Vortex handler: the bytes of a verified piece.
func (m *Manager) ServePiece(ctx context.Context, id string, n uint32) (vortex.Piece, []byte, error) {
	t, err := m.lookup(id)
	if err != nil {
		return vortex.Piece{}, nil, fmt.Errorf("%w: %w", vortex.ErrPieceNotFound, err)
	}
	t.mu.Lock()
	r, ok := t.held[n]
	t.mu.Unlock()
	if !ok || !r.Verified {
		return vortex.Piece{}, nil, fmt.Errorf("task %s piece %d not held: %w", id, n, vortex.ErrPieceNotFound)
	}
	data, ok, err := t.readHeld(ctx, n, r)
	if err != nil {
		return vortex.Piece{}, nil, err
	}
	if !ok {
		return vortex.Piece{}, nil, fmt.Errorf("task %s piece %d lost from the store: %w", id, n, vortex.ErrPieceNotFound)
	}
	off, l := t.lay.bounds(n)
	m.met.served.Inc()
	m.met.servedBytes.Add(float64(l))
	return vortex.Piece{Number: n, Offset: off, Length: l, Digest: crcDigest(r.CRC32), ParentID: t.peerID,
		TrafficType: vortex.TrafficTypeRemotePeer, CreatedAt: time.Now()}, data, nil
}

// DownloadTask implements upload.Tasks: the scheduler asks this (seed) peer to hold a whole task.
func (m *Manager) DownloadTask(ctx context.Context, id string, d *commonv2.Download, progress func(upload.PieceInfo)) (upload.TaskInfo, error) {
	t, err := m.lookup(id)
	if err != nil {
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
		if t, err = m.task(id, d.GetUrl(), blobID, uint64(size), src, d.GetNeedBackToSource()); err != nil {
			return upload.TaskInfo{}, err
		}
	}
	if err := t.downloadAll(ctx, progress); err != nil {
		return upload.TaskInfo{}, err
	}
	return m.Task(ctx, id)
}

// downloadAll fetches every piece (a few at a time), reporting each as it is held, and checks the
// whole blob against its digest when no chunk table vouched for the pieces.
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
			r, err := t.verifiedPiece(ctx, n)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = err
				}
				return
			}
			if progress != nil {
				off, l := t.lay.bounds(n)
				progress(upload.PieceInfo{Number: n, Offset: off, Length: l, Digest: crcDigest(r.CRC32)})
			}
		}(n)
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	t.mu.Lock()
	table := t.table
	t.mu.Unlock()
	if table == nil {
		if err := t.checkBlobDigest(ctx); err != nil {
			t.log.Error("downloaded blob does not match its digest: dropping it", zap.Error(err))
			for n := uint32(0); n < t.lay.count; n++ {
				t.forget(n)
			}
			return err
		}
	}
	return nil
}

// checkBlobDigest hashes the held pieces in order and compares with the blob id.
func (t *task) checkBlobDigest(ctx context.Context) error {
	h := sha256.New()
	for n := uint32(0); n < t.lay.count; n++ {
		t.mu.Lock()
		r, ok := t.held[n]
		t.mu.Unlock()
		if !ok {
			return fmt.Errorf("task %s: piece %d missing", t.id, n)
		}
		data, ok, err := t.readHeld(ctx, n, r)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("task %s: piece %d lost from the store", t.id, n)
		}
		h.Write(data)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != t.blobID {
		return fmt.Errorf("task %s: blob sha256 %s, want %s: %w", t.id, got, t.blobID, ErrBadPiece)
	}
	return nil
}

// DeleteTask implements upload.Tasks.
func (m *Manager) DeleteTask(ctx context.Context, id string) error {
	m.mu.Lock()
	t, ok := m.tasks[id]
	if ok && t.refs > 0 {
		m.mu.Unlock()
		return fmt.Errorf("task %s is in use by a mount", id)
	}
	delete(m.tasks, id)
	m.met.tasks.Set(float64(len(m.tasks)))
	m.mu.Unlock()
	if !ok {
		return fmt.Errorf("task %s: %w", id, upload.ErrTaskNotFound)
	}
	t.close()
	return m.index.removeTask(id)
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
