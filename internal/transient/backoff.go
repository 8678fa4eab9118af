package transient

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff is the wait before retry number attempt (0-based): base doubled attempt times, capped at
// max, with "equal jitter" (a random point in the upper half) so that clients that failed together
// do not retry in lockstep.
func Backoff(attempt int, base, max time.Duration) time.Duration {
	d := base
	for i := 0; i < attempt && d < max; i++ {
		d *= 2
	}
	d = min(d, max)
	half := d / 2
	if half <= 0 {
		return d
	}
	return half + rand.N(half+1)
}

// Sleep waits d or until ctx is done, whichever comes first, and says which (ctx.Err()).
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
