package registry

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"
)

func TestRetryAfter(t *testing.T) {
	now := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		header string
		want   time.Duration
	}{
		{"", 0},
		{"3", 3 * time.Second},
		{"0", 0},
		{"-5", 0},
		{"100000", maxRetryAfter},
		{now.Add(10 * time.Second).Format(http.TimeFormat), 10 * time.Second},
		{now.Add(-10 * time.Second).Format(http.TimeFormat), 0},
		{"soon", 0},
	}
	for _, tt := range tests {
		h := http.Header{}
		if tt.header != "" {
			h.Set("Retry-After", tt.header)
		}
		if got := retryAfter(h, now); got != tt.want {
			t.Errorf("retryAfter(%q) = %v, want %v", tt.header, got, tt.want)
		}
	}
}

// TestRetryableError: the registry retries what transient.Is retries, except failures to read the
// caller's data.
func TestRetryableError(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"body cut short", io.ErrUnexpectedEOF, true},
		{"connection reset", fmt.Errorf("read: %w", syscall.ECONNRESET), true},
		{"connection refused", &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, true},
		{"HTTP 503", &HTTPError{StatusCode: 503}, true},
		{"HTTP 404", &HTTPError{StatusCode: 404}, false},
		{"context canceled", context.Canceled, false},
		{"the caller's data cut short", &sourceError{err: io.ErrUnexpectedEOF}, false},
		{"the caller's data cut short, wrapped", fmt.Errorf("push: %w", &sourceError{err: syscall.ECONNRESET}), false},
		{"no error", nil, false},
	}
	for _, tt := range tests {
		if got := retryableError(tt.err); got != tt.want {
			t.Errorf("%s: retryableError(%v) = %v, want %v", tt.name, tt.err, got, tt.want)
		}
	}
}

func TestParseRanges(t *testing.T) {
	cr := []struct {
		in           string
		start, total int64
		ok           bool
	}{
		{"bytes 0-99/1000", 0, 1000, true},
		{"bytes 10-19/*", 10, -1, true},
		{"bytes 10-9/100", 0, 0, false},
		{"bytes 0-100/100", 0, 0, false},
		{"0-99/100", 0, 0, false},
		{"bytes x-1/2", 0, 0, false},
	}
	for _, tt := range cr {
		s, tot, ok := ParseContentRange(tt.in)
		if ok != tt.ok || (ok && (s != tt.start || tot != tt.total)) {
			t.Errorf("ParseContentRange(%q) = %d, %d, %v", tt.in, s, tot, ok)
		}
	}
	ur := []struct {
		in  string
		end int64
		ok  bool
	}{
		{"0-0", 0, true},
		{"0-1048575", 1048575, true},
		{"bytes=0-10", 10, true},
		{"5-10", 0, false},
		{"0--1", 0, false},
		{"", 0, false},
	}
	for _, tt := range ur {
		end, ok := parseUploadRange(tt.in)
		if ok != tt.ok || end != tt.end {
			t.Errorf("parseUploadRange(%q) = %d, %v", tt.in, end, ok)
		}
	}
}

func FuzzParseRanges(f *testing.F) {
	for _, s := range []string{"bytes 0-99/1000", "bytes 10-19/*", "0-0", "bytes=0-10", "bytes 9223372036854775806-9223372036854775807/*"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if start, total, ok := ParseContentRange(s); ok && (start < 0 || (total != -1 && total <= start)) {
			t.Fatalf("ParseContentRange(%q) = %d, %d", s, start, total)
		}
		if end, ok := parseUploadRange(s); ok && end < 0 {
			t.Fatalf("parseUploadRange(%q) = %d", s, end)
		}
		h := http.Header{"Retry-After": {s}}
		if d := retryAfter(h, time.Now()); d < 0 || d > maxRetryAfter {
			t.Fatalf("retryAfter(%q) = %v", s, d)
		}
	})
}
