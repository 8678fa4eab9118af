package source

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dfnydus/dfnydus/registry"
)

func TestTransient(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"500", &registry.HTTPError{StatusCode: 500}, true},
		{"502", &registry.HTTPError{StatusCode: 502}, true},
		{"503", &registry.HTTPError{StatusCode: 503}, true},
		{"429", &registry.HTTPError{StatusCode: 429}, true},
		{"408", &registry.HTTPError{StatusCode: 408}, true},
		{"501", &registry.HTTPError{StatusCode: 501}, false},
		{"400", &registry.HTTPError{StatusCode: 400}, false},
		{"404 wrapped in ErrNotFound", fmt.Errorf("%w: %w", ErrNotFound, &registry.HTTPError{StatusCode: 404}), false},
		{"connection reset", fmt.Errorf("read: %w", syscall.ECONNRESET), true},
		{"connection refused", &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, true},
		{"body cut short", fmt.Errorf("x: %w", io.ErrUnexpectedEOF), true},
		{"range", fmt.Errorf("x: %w", ErrRange), false},
		{"range with a short body", fmt.Errorf("%w: %w", ErrRange, io.ErrUnexpectedEOF), false},
		{"invalid id", fmt.Errorf("x: %w", ErrInvalidBlobID), false},
		{"unauthorized", fmt.Errorf("x: %w", ErrUnauthorized), false},
		{"cancelled", fmt.Errorf("x: %w", context.Canceled), false},
		{"deadline", fmt.Errorf("x: %w (%v)", context.DeadlineExceeded, syscall.ECONNRESET), false},
		{"unknown", errors.New("something odd"), false},
		{"permission", fmt.Errorf("open: %w", os.ErrPermission), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Transient(tc.err); got != tc.want {
				t.Fatalf("Transient(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

// step is what a scripted source does on one ReadRange call.
type step struct {
	openErr  error // fail the call
	cutAfter int64 // else deliver this many bytes, then fail with cutErr (0: no cut)
	cutErr   error
}

// scripted wraps a real Local source and misbehaves as its script says, call by call; calls
// past the script behave.
type scripted struct {
	Source
	mu     sync.Mutex
	script []step
	calls  [][2]int64 // off, n of each call
}

func (s *scripted) ReadRange(ctx context.Context, id string, off, n int64) (io.ReadCloser, error) {
	s.mu.Lock()
	s.calls = append(s.calls, [2]int64{off, n})
	var st step
	if len(s.script) > 0 {
		st, s.script = s.script[0], s.script[1:]
	}
	s.mu.Unlock()
	if st.openErr != nil {
		return nil, st.openErr
	}
	rc, err := s.Source.ReadRange(ctx, id, off, n)
	if err != nil || st.cutAfter == 0 {
		return rc, err
	}
	return &cutReader{rc: rc, left: st.cutAfter, err: st.cutErr}, nil
}

type cutReader struct {
	rc   io.ReadCloser
	left int64
	err  error
}

func (c *cutReader) Read(p []byte) (int, error) {
	if c.left == 0 {
		return 0, c.err
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.rc.Read(p)
	c.left -= int64(n)
	return n, err
}

func (c *cutReader) Close() error { return c.rc.Close() }

func TestRetrying(t *testing.T) {
	dir := t.TempDir()
	data := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
	id := idOf(data)
	noErr(t, os.WriteFile(filepath.Join(dir, id), data, 0o644))
	reset := fmt.Errorf("read tcp: %w", syscall.ECONNRESET)
	e503 := &registry.HTTPError{StatusCode: 503, Status: "503 Service Unavailable"}
	const off, n = 100, 50000

	for _, tc := range []struct {
		name      string
		script    []step
		attempts  int
		wantErr   error // nil: the read succeeds
		wantCalls [][2]int64
		retries   int64
	}{
		{
			name: "no failure", attempts: 3,
			wantCalls: [][2]int64{{off, n}},
		},
		{
			name: "failed opens are retried", attempts: 3,
			script:    []step{{openErr: e503}, {openErr: reset}},
			wantCalls: [][2]int64{{off, n}, {off, n}, {off, n}}, retries: 2,
		},
		{
			name: "cuts resume where they broke", attempts: 3,
			script:    []step{{cutAfter: 1000, cutErr: reset}, {cutAfter: 2000, cutErr: io.ErrUnexpectedEOF}},
			wantCalls: [][2]int64{{off, n}, {off + 1000, n - 1000}, {off + 3000, n - 3000}}, retries: 2,
		},
		{
			name: "attempts bound the tries", attempts: 2,
			script:    []step{{openErr: e503}, {cutAfter: 10, cutErr: reset}, {}},
			wantErr:   syscall.ECONNRESET,
			wantCalls: [][2]int64{{off, n}, {off, n}}, retries: 1,
		},
		{
			name: "one attempt means no retry", attempts: 1,
			script:    []step{{openErr: e503}},
			wantErr:   e503,
			wantCalls: [][2]int64{{off, n}},
		},
		{
			name: "not found is final", attempts: 5,
			script:    []step{{openErr: fmt.Errorf("x: %w", ErrNotFound)}},
			wantErr:   ErrNotFound,
			wantCalls: [][2]int64{{off, n}},
		},
		{
			name: "refused credentials are final", attempts: 5,
			script:    []step{{cutAfter: 10, cutErr: fmt.Errorf("x: %w", ErrUnauthorized)}},
			wantErr:   ErrUnauthorized,
			wantCalls: [][2]int64{{off, n}},
		},
		{
			name: "unknown errors are final", attempts: 5,
			script:    []step{{openErr: os.ErrPermission}},
			wantErr:   os.ErrPermission,
			wantCalls: [][2]int64{{off, n}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := &scripted{Source: NewLocal(dir), script: tc.script}
			r := NewRetrying(src, RetryOptions{Attempts: tc.attempts, Base: 10 * time.Millisecond})
			var waits []time.Duration
			r.sleep = func(ctx context.Context, d time.Duration) error { waits = append(waits, d); return nil }

			rc, err := r.ReadRange(context.Background(), id, off, n)
			var got []byte
			if err == nil {
				got, err = io.ReadAll(rc)
				rc.Close()
			}
			if tc.wantErr == nil {
				noErr(t, err)
				if !bytes.Equal(got, data[off:off+n]) {
					t.Fatalf("got %d bytes, not the range", len(got))
				}
			} else if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if fmt.Sprint(src.calls) != fmt.Sprint(tc.wantCalls) {
				t.Errorf("calls (off, n) = %v, want %v", src.calls, tc.wantCalls)
			}
			if r.Retries() != tc.retries || int64(len(waits)) != tc.retries {
				t.Errorf("retries = %d after %d waits, want %d", r.Retries(), len(waits), tc.retries)
			}
			for i, w := range waits {
				if full := 10 * time.Millisecond << i; w < full/2 || w > full {
					t.Errorf("wait %d = %v, want within [%v, %v]", i, w, full/2, full)
				}
			}
		})
	}
}

func TestRetryingStopsWaitingWhenContextIsDone(t *testing.T) {
	src := &scripted{Source: NewLocal(t.TempDir()), script: []step{{openErr: &registry.HTTPError{StatusCode: 500}}}}
	r := Retrying(src, 5, time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		// Cancel once the first try has failed and the hour-long wait began.
		for {
			src.mu.Lock()
			n := len(src.calls)
			src.mu.Unlock()
			if n > 0 {
				cancel()
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	_, err := r.ReadRange(ctx, idOf(nil), 0, 10)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if len(src.calls) != 1 {
		t.Errorf("%d tries, want 1", len(src.calls))
	}
}

func TestRetryingRejectsBadArgumentsWithoutCalling(t *testing.T) {
	src := &scripted{Source: NewLocal(t.TempDir())}
	r := Retrying(src, 3, time.Millisecond)
	for _, tc := range []struct {
		id     string
		off, n int64
		want   error
	}{
		{"nope", 0, 1, ErrInvalidBlobID},
		{idOf(nil), -1, 1, ErrRange},
		{idOf(nil), 0, -1, ErrRange},
	} {
		if _, err := r.ReadRange(context.Background(), tc.id, tc.off, tc.n); !errors.Is(err, tc.want) {
			t.Errorf("ReadRange(%q, %d, %d): err = %v, want %v", tc.id, tc.off, tc.n, err, tc.want)
		}
	}
	if len(src.calls) != 0 {
		t.Errorf("the wrapped source was called %d times", len(src.calls))
	}
	if r.String() != "local" {
		t.Errorf("String() = %q, want the wrapped kind", r.String())
	}
}

func TestCounting(t *testing.T) {
	dir := t.TempDir()
	data := []byte("counted bytes")
	id := idOf(data)
	noErr(t, os.WriteFile(filepath.Join(dir, id), data, 0o644))
	c := Counting(NewLocal(dir))
	ctx := context.Background()

	for _, r := range []struct{ off, n int64 }{{0, 7}, {7, 6}, {0, 0}} {
		rc, err := c.ReadRange(ctx, id, r.off, r.n)
		noErr(t, err)
		_, err = io.ReadAll(rc)
		noErr(t, err)
		rc.Close()
	}
	_, err := c.ReadRange(ctx, idOf(nil), 0, 1) // missing
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
	want := Stats{Requests: 3, Bytes: 13, Errors: 1}
	if got := c.Stats(); got != want {
		t.Fatalf("Stats() = %+v, want %+v", got, want)
	}
}
