package registry

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/dfnydus/dfnydus/internal/transient"
)

// sourceError marks a failure to read the caller's data (PushBlob's ReaderAt), which no retry fixes.
type sourceError struct{ err error }

func (e *sourceError) Error() string { return "read source: " + e.err.Error() }
func (e *sourceError) Unwrap() error { return e.err }

// retryableError reports whether a failure is worth retrying (transient.Is), except a failure to
// read the caller's data, which no retry fixes.
func retryableError(err error) bool {
	if _, ok := errors.AsType[*sourceError](err); ok {
		return false
	}
	return transient.Is(err)
}

// retryAfter parses a Retry-After header (seconds or an HTTP date); 0 when absent or unusable.
func retryAfter(h http.Header, now time.Time) time.Duration {
	v := h.Get("Retry-After")
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		if secs > int64(maxRetryAfter/time.Second) {
			return maxRetryAfter
		}
		d = time.Duration(secs) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	if d <= 0 {
		return 0
	}
	return min(d, maxRetryAfter)
}
