package p2p

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/dfnydus/dfnydus/peer"
	"github.com/dfnydus/dfnydus/peer/source"
	schedclient "github.com/dfnydus/dfnydus/scheduler-client"
)

// task is one blob as a Dragonfly task on this peer. It holds no bytes of its own: the blob's
// bytes live in the node's store, verified where they entered (peer.Blob.Accept), and a piece is
// held exactly when the store has every byte of it verified. The task fetches pieces (fetch.go),
// talks to the scheduler (schedule.go) and answers other peers (serve.go).
type task struct {
	m      *Manager
	id     string
	url    string
	blobID string
	peerID string
	lay    layout
	bl     *peer.Blob
	seed   bool
	// backToSource registers the task asking to download from the source (a seed told so by the
	// scheduler's DownloadTask).
	backToSource bool
	log          *zap.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // the task's goroutines, waited for by close

	mu         sync.Mutex
	src        source.Source
	parents    []schedclient.Parent
	blocked    map[string]bool
	noRanges   map[string]bool // parents that do not answer DownloadRange (not peers of ours)
	scheduled  chan struct{}   // closed on the scheduler's first answer (or when there is none)
	answered   bool
	back       bool // the scheduler told us to go back to source
	sess       *schedclient.Session
	pieces     map[uint32]*pieceCall // whole pieces being fetched from parents
	ranges     []*rangeCall          // ranges being fetched from the source
	origin     map[uint32]string     // piece -> the parent it came from whole
	reported   map[uint32]uint32     // pieces reported to the scheduler -> their crc32
	crc        map[uint32]uint32     // crc32 of held pieces, computed once
	completing bool                  // fetching the pieces no read needs, to finish the task
	// Pieces reads touched, waiting for the completer to fetch the rest of them.
	toComplete    map[uint32]bool
	completeOrder []uint32
	completer     bool // the completer goroutine runs
	finished      bool
	refs          int
	idle          *time.Timer // seed tasks: released after SeedTaskIdle unused
	idleDone      bool        // the idle timer dropped the seed task's own reference
	stopBlame     func()
}

func newTask(m *Manager, spec taskSpec, bl *peer.Blob) *task {
	ctx, cancel := context.WithCancel(context.Background())
	t := &task{m: m, id: spec.id, url: spec.url, blobID: spec.blobID, peerID: schedclient.PeerID(),
		lay: newLayout(uint64(spec.size), m.pieceLength(uint64(spec.size))), bl: bl, seed: spec.seed, backToSource: spec.backToSource, src: spec.src,
		ctx: ctx, cancel: cancel, blocked: map[string]bool{}, noRanges: map[string]bool{}, scheduled: make(chan struct{}),
		pieces: map[uint32]*pieceCall{}, toComplete: map[uint32]bool{}, origin: map[uint32]string{}, reported: map[uint32]uint32{}, crc: map[uint32]uint32{}}
	t.log = m.log.With(zap.String("task", spec.id), zap.String("blob", spec.blobID))
	t.stopBlame = bl.OnBlame(t.blamed)
	return t
}

// start registers the task with the scheduler and follows what the store verifies.
func (t *task) start() {
	if t.m.sched == nil {
		close(t.scheduled)
		t.answered = true
	} else {
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			t.schedule()
		}()
	}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		t.watch()
	}()
	if t.seed {
		t.touch()
	}
}

func (t *task) setSource(src source.Source) {
	t.mu.Lock()
	t.src = src
	t.mu.Unlock()
}

func (t *task) source() source.Source {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.src
}

// touch keeps a seed task alive for another SeedTaskIdle.
func (t *task) touch() {
	if !t.seed {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.idleDone {
		return
	}
	if t.idle != nil {
		t.idle.Reset(t.m.cfg.SeedTaskIdle)
		return
	}
	t.idle = time.AfterFunc(t.m.cfg.SeedTaskIdle, func() {
		t.mu.Lock()
		done := t.idleDone
		t.idleDone = true
		t.mu.Unlock()
		if !done {
			t.log.Info("seed task unused: released", zap.Duration("idle", t.m.cfg.SeedTaskIdle))
			t.m.release(t)
		}
	})
}

// close ends the task: its fetches stop, the scheduler session ends (the peer leaves the task),
// and its goroutines are gone before close returns.
func (t *task) close() {
	t.cancel()
	t.mu.Lock()
	sess := t.sess
	if t.idle != nil {
		t.idle.Stop()
	}
	t.mu.Unlock()
	if sess != nil {
		_ = sess.Close()
	}
	t.wg.Wait()
	t.stopBlame()
	t.bl.Release()
}

// held reports whether piece n is held: every byte of it verified in the store.
func (t *task) held(n uint32) bool {
	off, l := t.lay.bounds(n)
	return t.bl.Store().Verified(int64(off), int64(l))
}
