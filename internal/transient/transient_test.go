package transient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"syscall"
	"testing"
)

type statusErr int

func (e statusErr) Error() string   { return fmt.Sprintf("HTTP %d", int(e)) }
func (e statusErr) HTTPStatus() int { return int(e) }

// timeoutErr is a network timeout that is not a context's deadline (a dial or read deadline).
type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestStatus(t *testing.T) {
	for _, tt := range []struct {
		code int
		want bool
	}{
		{200, false}, {304, false},
		{400, false}, {401, false}, {403, false}, {404, false}, {416, false},
		{408, true}, // Request Timeout: the server gave up waiting for us
		{429, true}, // Too Many Requests: later
		{500, true}, {502, true}, {503, true}, {504, true}, {599, true},
		{501, false}, // Not Implemented: never will be
		{505, false}, // HTTP Version Not Supported: never will be
	} {
		if got := Status(tt.code); got != tt.want {
			t.Errorf("Status(%d) = %v, want %v", tt.code, got, tt.want)
		}
	}
}

func TestIs(t *testing.T) {
	dial := func(err error) error { return &net.OpError{Op: "dial", Net: "tcp", Err: err} }
	viaHTTP := func(err error) error { return &url.Error{Op: "Get", URL: "https://r.example/v2/", Err: err} }
	for _, tt := range []struct {
		name string
		err  error
		want bool
	}{
		{"no error", nil, false},

		{"HTTP 429", statusErr(429), true},
		{"HTTP 503, wrapped", fmt.Errorf("fetch: %w", statusErr(503)), true},
		{"HTTP 408", statusErr(408), true},
		{"HTTP 404", statusErr(404), false},
		{"HTTP 401", statusErr(401), false},
		{"HTTP 501", statusErr(501), false},

		{"connection reset", fmt.Errorf("read: %w", syscall.ECONNRESET), true},
		{"connection refused", dial(os.NewSyscallError("connect", syscall.ECONNREFUSED)), true},
		{"connection aborted", fmt.Errorf("read: %w", syscall.ECONNABORTED), true},
		{"connection timed out", fmt.Errorf("read: %w", syscall.ETIMEDOUT), true},
		{"broken pipe", fmt.Errorf("write: %w", syscall.EPIPE), true},
		{"stale NFS handle", fmt.Errorf("read: %w", syscall.ESTALE), true},
		{"body cut short", fmt.Errorf("copy: %w", io.ErrUnexpectedEOF), true},
		{"connection closed before the response", viaHTTP(io.EOF), true},
		{"network timeout", viaHTTP(dial(timeoutErr{})), true},
		{"network unreachable", dial(os.NewSyscallError("connect", syscall.ENETUNREACH)), true},
		{"host unreachable", dial(os.NewSyscallError("connect", syscall.EHOSTUNREACH)), true},

		{"DNS timeout", dial(&net.DNSError{Err: "timeout", Name: "r.example", IsTimeout: true}), true},
		{"DNS server failure", dial(&net.DNSError{Err: "server misbehaving", Name: "r.example", IsTemporary: true}), true},
		{"no such host", dial(&net.DNSError{Err: "no such host", Name: "r.exmaple", IsNotFound: true}), false},

		{"context canceled", fmt.Errorf("fetch: %w", context.Canceled), false},
		{"context canceled while a connection reset", fmt.Errorf("%w (%w)", context.Canceled, syscall.ECONNRESET), false},
		{"deadline exceeded", viaHTTP(context.DeadlineExceeded), false},

		{"certificate signed by an unknown authority", viaHTTP(&tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}), false},
		{"certificate for another host", viaHTTP(x509.HostnameError{Host: "r.example"}), false},
		{"expired certificate", viaHTTP(x509.CertificateInvalidError{Reason: x509.Expired}), false},
		{"TLS alert from the server", viaHTTP(&net.OpError{Op: "remote error", Err: errors.New("tls: bad certificate")}), false},
		{"TLS alert sent to the server", viaHTTP(&net.OpError{Op: "local error", Err: errors.New("tls: unexpected message")}), false},
		{"TLS spoken to a plain-HTTP server", viaHTTP(tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}), false},

		{"bad URL", viaHTTP(errors.New("unsupported protocol scheme")), false},
		{"local file missing", &os.PathError{Op: "open", Path: "/x", Err: syscall.ENOENT}, false},
		{"local file permission", &os.PathError{Op: "open", Path: "/x", Err: syscall.EACCES}, false},
		{"unforeseen", errors.New("something odd"), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := Is(tt.err); got != tt.want {
				t.Errorf("Is(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}
