// Package transient decides which failures are worth retrying, for the registry client and for the
// peer's back-to-source readers alike, so that a failure is retried, or not, whichever path met it.
//
// A retry is worth it when the same request can succeed a moment later without anyone changing
// anything: the server was overloaded or restarting, the network dropped a connection, a body was
// cut short. It is not when only a person can fix the cause (a wrong name, refused credentials, a
// certificate that does not verify), or when the caller gave up: retrying those only makes a user
// wait longer for the same error.
package transient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"syscall"
)

// Status reports whether an HTTP response status is worth retrying: 408 Request Timeout, 429 Too
// Many Requests and 5xx, except 501 Not Implemented and 505 HTTP Version Not Supported, which say
// the server will never do this, not that it cannot right now. Other 4xx are the request's fault.
func Status(code int) bool {
	switch code {
	case http.StatusRequestTimeout, http.StatusTooManyRequests:
		return true
	case http.StatusNotImplemented, http.StatusHTTPVersionNotSupported:
		return false
	}
	return code >= 500 && code <= 599
}

// StatusError is an error that carries the HTTP status of a response (registry.HTTPError).
type StatusError interface {
	error
	HTTPStatus() int
}

// Is reports whether err is worth retrying. In order:
//
//   - a cancelled context or an exceeded deadline is not: the caller gave up, and its budget is
//     spent (net/http's timeout waiting for response headers counts as a deadline too);
//   - an error carrying an HTTP status is what Status says;
//   - TLS failures are not: a certificate that does not verify, a TLS alert, or a plain-HTTP
//     server spoken to in TLS stay so until someone changes a configuration;
//   - a name that does not resolve is not (a typo, most of the time), but a DNS timeout or a
//     server failure is;
//   - connections reset, aborted, refused or timed out, broken pipes, stale NFS handles, bodies
//     cut short (io.ErrUnexpectedEOF, or the io.EOF of a connection closed before its response)
//     and network timeouts are;
//   - any other failure of a network operation (dial, read, write) is: the network, not the
//     request, failed;
//   - anything else is not, so that an error nobody foresaw is reported at once, not after a round
//     of retries.
func Is(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	if se, ok := errors.AsType[StatusError](err); ok {
		return Status(se.HTTPStatus())
	}
	if isTLS(err) {
		return false
	}
	if de, ok := errors.AsType[*net.DNSError](err); ok {
		return !de.IsNotFound && (de.IsTimeout || de.IsTemporary)
	}
	for _, e := range []error{io.ErrUnexpectedEOF, io.EOF, syscall.ECONNRESET, syscall.ECONNABORTED,
		syscall.ECONNREFUSED, syscall.ETIMEDOUT, syscall.EPIPE, syscall.ESTALE} {
		if errors.Is(err, e) {
			return true
		}
	}
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		return true
	}
	_, ok := errors.AsType[*net.OpError](err)
	return ok
}

// isTLS reports whether err is a TLS handshake or certificate failure.
func isTLS(err error) bool {
	// crypto/tls reports alerts, sent or received, as *net.OpError with these Ops.
	if oe, ok := errors.AsType[*net.OpError](err); ok && (oe.Op == "remote error" || oe.Op == "local error") {
		return true
	}
	if _, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
		return true
	}
	if _, ok := errors.AsType[tls.RecordHeaderError](err); ok {
		return true
	}
	if _, ok := errors.AsType[tls.AlertError](err); ok {
		return true
	}
	if _, ok := errors.AsType[x509.UnknownAuthorityError](err); ok {
		return true
	}
	if _, ok := errors.AsType[x509.HostnameError](err); ok {
		return true
	}
	_, ok := errors.AsType[x509.CertificateInvalidError](err)
	return ok
}
