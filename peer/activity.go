package peer

import (
	"context"
	"sync"
	"time"
)

// activity tracks on-demand fetches in flight so that background prefetch can step aside: it waits
// on a channel closed when the last on-demand fetch ends, and a timer for the quiet period after
// it, never polling.
type activity struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed while n == 0
	last time.Time     // when the latest on-demand fetch ended
}

func newActivity() activity {
	idle := make(chan struct{})
	close(idle)
	return activity{idle: idle}
}

func (a *activity) begin() {
	a.mu.Lock()
	if a.n == 0 {
		a.idle = make(chan struct{})
	}
	a.n++
	a.mu.Unlock()
}

func (a *activity) end() {
	a.mu.Lock()
	a.n--
	a.last = time.Now()
	if a.n == 0 {
		close(a.idle)
	}
	a.mu.Unlock()
}

// sinceLast returns how long ago the latest on-demand fetch ended (a large value if none did).
func (a *activity) sinceLast() time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.last.IsZero() {
		return time.Hour
	}
	return time.Since(a.last)
}

// waitQuiet returns once no on-demand fetch is in flight and none ended within quiet.
func (a *activity) waitQuiet(ctx context.Context, quiet time.Duration) error {
	for {
		a.mu.Lock()
		n, idle, last := a.n, a.idle, a.last
		a.mu.Unlock()
		if n > 0 {
			select {
			case <-idle:
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		wait := quiet - time.Since(last)
		if last.IsZero() || wait <= 0 {
			return nil
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
}
