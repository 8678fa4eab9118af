package schedclient

import (
	"sync"

	schedulerv2 "d7y.io/api/v2/pkg/apis/scheduler/v2"
)

// DefaultReportQueueLimit is Config.ReportQueueLimit's default.
const DefaultReportQueueLimit = 1024

// reportKind says what a queued report is and whether it may be dropped when the queue is full.
type reportKind int

const (
	// reportState is Started or the outcome: part of the state a re-register replays, never dropped.
	reportState reportKind = iota
	// reportPiece is a finished piece, sent from the session's piece records at send time; dropped
	// oldest first when the queue is full (the records still hold it, and the next re-register
	// replays every record).
	reportPiece
	// reportAdvice is PieceFailed or Reschedule: advice about the current stream's parents, dropped
	// oldest first when no piece can be, and dropped at a re-register (the scheduler then answers
	// afresh).
	reportAdvice
)

type report struct {
	kind   reportKind
	number uint32                           // reportPiece
	req    *schedulerv2.AnnouncePeerRequest // the others
}

// reportQueue holds the reports not yet handed to the stream, in order. Its owner's mutex guards
// it; it never blocks. At most limit reports are queued (state reports aside); a finished piece
// already queued is coalesced (its record holds the newest report).
type reportQueue struct {
	items   []report
	pending map[uint32]bool // pieces in items
	limit   int
	dropped int // reports dropped because the queue was full, for the log
}

func newReportQueue(limit int) *reportQueue {
	if limit <= 0 {
		limit = DefaultReportQueueLimit
	}
	return &reportQueue{pending: map[uint32]bool{}, limit: limit}
}

func (q *reportQueue) len() int { return len(q.items) }

func (q *reportQueue) push(r report) {
	if r.kind == reportPiece {
		if q.pending[r.number] {
			return
		}
		q.pending[r.number] = true
	}
	if r.kind != reportState && len(q.items) >= q.limit {
		q.dropOldest()
	}
	q.items = append(q.items, r)
}

// dropOldest removes the oldest piece, or else the oldest advice.
func (q *reportQueue) dropOldest() {
	for _, kind := range []reportKind{reportPiece, reportAdvice} {
		for i, r := range q.items {
			if r.kind != kind {
				continue
			}
			if kind == reportPiece {
				delete(q.pending, r.number)
			}
			q.items = append(q.items[:i], q.items[i+1:]...)
			q.dropped++
			return
		}
	}
}

// pop removes the oldest report.
func (q *reportQueue) pop() (report, bool) {
	if len(q.items) == 0 {
		return report{}, false
	}
	r := q.items[0]
	q.items[0] = report{}
	q.items = q.items[1:]
	if r.kind == reportPiece {
		delete(q.pending, r.number)
	}
	if len(q.items) == 0 {
		q.items = nil // let the backing array go
	}
	return r, true
}

// reset empties the queue: a re-register replays the state instead.
func (q *reportQueue) reset() {
	q.items = nil
	clear(q.pending)
}

// eventQueue is an unbounded FIFO feeding a channel, so the receive loop never blocks on a slow
// reader.
type eventQueue struct {
	mu    sync.Mutex
	items []Event
	done  bool
	wake  chan struct{}
	out   chan Event
}

func newEventQueue() *eventQueue {
	return &eventQueue{wake: make(chan struct{}, 1), out: make(chan Event)}
}

func (q *eventQueue) push(ev Event) {
	q.mu.Lock()
	if !q.done {
		q.items = append(q.items, ev)
	}
	q.mu.Unlock()
	q.signal()
}

// end lets the pump close the channel once the queued events are delivered.
func (q *eventQueue) end() {
	q.mu.Lock()
	q.done = true
	q.mu.Unlock()
	q.signal()
}

func (q *eventQueue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// pump delivers events until the queue ends and is drained, or stop closes.
func (q *eventQueue) pump(stop <-chan struct{}) {
	defer close(q.out)
	for {
		q.mu.Lock()
		if len(q.items) == 0 {
			done := q.done
			q.mu.Unlock()
			if done {
				return
			}
			select {
			case <-q.wake:
			case <-stop:
				return
			}
			continue
		}
		ev := q.items[0]
		q.items = q.items[1:]
		q.mu.Unlock()
		select {
		case q.out <- ev:
		case <-stop:
			return
		}
	}
}
