package source_test

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dfnydus/dfnydus/peer/source"
)

// Failures between the peer and a server, injected by a proxy: Retrying retries what is transient
// and only that. The same cases run against the registry and S3.
func TestRetryingOverFaults(t *testing.T) {
	for _, tc := range []struct {
		name string
		make func(testing.TB) *backend
	}{
		{"registry", registryBackend},
		{"s3", s3Backend},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runFaults(t, tc.make(t))
		})
	}
}

func runFaults(t *testing.T, b *backend) {
	blob := randomBytes(2, 2<<20+99)
	id := b.put(t, blob)
	const off, n = 1000, 1 << 20
	want := blob[off : off+n]
	retrying := func(attempts int) *source.RetryingSource {
		return source.NewRetrying(b.src, source.RetryOptions{Attempts: attempts, Base: time.Millisecond})
	}
	fresh := func(t *testing.T) {
		b.proxy.ClearFaults()
		b.proxy.ResetCounts()
		t.Cleanup(b.proxy.ClearFaults)
	}

	t.Run("5xx answers are retried", func(t *testing.T) {
		for _, status := range []int{http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable} {
			t.Run(fmt.Sprint(status), func(t *testing.T) {
				fresh(t)
				b.proxy.FailNext(b.blobGet, 2, status)
				r := retrying(4)
				got, err := readRange(ctxT(t), r, id, off, n)
				noErr(t, err)
				if !bytes.Equal(got, want) {
					t.Fatal("wrong bytes after retries")
				}
				if r.Retries() != 2 || b.blobGets() != 3 {
					t.Errorf("retries = %d, blob requests = %d; want 2 and 3", r.Retries(), b.blobGets())
				}
			})
		}
	})

	t.Run("retries stop after the attempts", func(t *testing.T) {
		fresh(t)
		b.proxy.FailNext(b.blobGet, 10, http.StatusInternalServerError)
		r := retrying(3)
		_, err := readRange(ctxT(t), r, id, off, n)
		if err == nil || !source.Transient(err) {
			t.Fatalf("err = %v, want a transient error", err)
		}
		if !strings.Contains(err.Error(), "giving up after 3 tries") || !strings.Contains(err.Error(), "500") {
			t.Errorf("error %q should say it gave up and why", err)
		}
		if r.Retries() != 2 || b.blobGets() != 3 {
			t.Errorf("retries = %d, blob requests = %d; want 2 and 3", r.Retries(), b.blobGets())
		}
	})

	t.Run("a connection reset mid-body resumes where it broke", func(t *testing.T) {
		fresh(t)
		const cut = 256 << 10
		b.proxy.ResetAfter(b.blobGet, 1, cut)
		r := retrying(3)
		got, err := readRange(ctxT(t), r, id, off, n)
		noErr(t, err)
		if !bytes.Equal(got, want) {
			t.Fatal("wrong bytes after a resumed transfer")
		}
		if r.Retries() != 1 {
			t.Errorf("retries = %d, want 1", r.Retries())
		}
		ranges := b.blobRanges()
		if len(ranges) != 2 {
			t.Fatalf("blob requests with ranges %q, want 2", ranges)
		}
		var start, end int64
		if _, err := fmt.Sscanf(ranges[1], "bytes=%d-%d", &start, &end); err != nil {
			t.Fatalf("second range %q: %v", ranges[1], err)
		}
		// Bytes in flight when the connection dropped may be lost; none may be asked twice
		// beyond what the first response delivered.
		if end != off+n-1 || start < off || start > off+cut {
			t.Errorf("resumed with %q after %d bytes of bytes=%d-%d", ranges[1], cut, off, off+n-1)
		}
	})

	t.Run("a missing blob is not retried", func(t *testing.T) {
		fresh(t)
		r := retrying(5)
		_, err := readRange(ctxT(t), r, blobID([]byte("absent")), 0, 10)
		if !errors.Is(err, source.ErrNotFound) {
			t.Fatalf("err = %v, want ErrNotFound", err)
		}
		if r.Retries() != 0 || b.blobGets() != 1 {
			t.Errorf("retries = %d, blob requests = %d; want 0 and 1", r.Retries(), b.blobGets())
		}
	})

	t.Run("a range past the end is not retried", func(t *testing.T) {
		fresh(t)
		r := retrying(5)
		_, err := readRange(ctxT(t), r, id, int64(len(blob))-10, 20)
		if !errors.Is(err, source.ErrRange) {
			t.Fatalf("err = %v, want ErrRange", err)
		}
		if r.Retries() != 0 || b.blobGets() != 1 {
			t.Errorf("retries = %d, blob requests = %d; want 0 and 1", r.Retries(), b.blobGets())
		}
	})

	t.Run("wrong credentials fail clearly and are not retried", func(t *testing.T) {
		fresh(t)
		_, err := readRange(ctxT(t), b.wrongCreds, id, off, 10)
		if !errors.Is(err, source.ErrUnauthorized) {
			t.Fatalf("err = %v, want ErrUnauthorized", err)
		}
		oneTry := b.blobGets()

		fresh(t)
		r := source.NewRetrying(b.wrongCreds, source.RetryOptions{Attempts: 5, Base: time.Millisecond})
		_, err = readRange(ctxT(t), r, id, off, 10)
		if !errors.Is(err, source.ErrUnauthorized) || source.Transient(err) {
			t.Fatalf("err = %v, want a permanent ErrUnauthorized", err)
		}
		if !strings.Contains(err.Error(), b.refusal) {
			t.Errorf("error %q does not say %q", err, b.refusal)
		}
		if r.Retries() != 0 || b.blobGets() != oneTry {
			t.Errorf("retries = %d, blob requests = %d; want 0 and %d (one try)", r.Retries(), b.blobGets(), oneTry)
		}
	})
}
