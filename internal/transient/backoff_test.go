package transient

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestBackoffGrowsWithJitterUpToMax(t *testing.T) {
	base, ceiling := 10*time.Millisecond, 100*time.Millisecond
	for attempt, full := range []time.Duration{10, 20, 40, 80, 100, 100, 100} {
		full *= time.Millisecond
		lo, hi := full, time.Duration(0)
		for range 200 {
			d := Backoff(attempt, base, ceiling)
			if d < full/2 || d > full {
				t.Fatalf("Backoff(%d) = %v, want within [%v, %v]", attempt, d, full/2, full)
			}
			lo, hi = min(lo, d), max(hi, d)
		}
		if lo == hi {
			t.Errorf("Backoff(%d) returned %v 200 times: no jitter", attempt, lo)
		}
	}
	if d := Backoff(3, 0, time.Second); d != 0 {
		t.Errorf("Backoff with a zero base = %v, want 0", d)
	}
}

func TestSleep(t *testing.T) {
	if err := Sleep(context.Background(), time.Millisecond); err != nil {
		t.Errorf("Sleep ran out: %v, want nil", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Sleep(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Errorf("Sleep with a cancelled context: %v, want context.Canceled", err)
	}
	if err := Sleep(ctx, 0); !errors.Is(err, context.Canceled) {
		t.Errorf("Sleep(0) with a cancelled context: %v, want context.Canceled", err)
	}
}
