package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"unicode/utf8"
)

var (
	// ErrDigestMismatch is wrapped by every error reporting content that does not match its
	// descriptor: wrong digest or wrong length.
	ErrDigestMismatch = errors.New("digest mismatch")
	// ErrNotFound is matched (errors.Is) by registry responses with status 404.
	ErrNotFound = errors.New("not found")
	// ErrUnauthorized is matched by authentication failures and 401/403 responses.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrManifestTooLarge is wrapped when a manifest exceeds MaxManifestSize.
	ErrManifestTooLarge = errors.New("manifest too large")
	// ErrPlatformNotFound is wrapped when an index has no manifest for the wanted platform.
	ErrPlatformNotFound = errors.New("no manifest for platform")
)

// maxErrorBody bounds how much of an error response is read and kept.
const maxErrorBody = 64 << 10

// ErrorInfo is one entry of a registry's {"errors": [...]} body.
type ErrorInfo struct {
	Code    string          `json:"code"`
	Message string          `json:"message"`
	Detail  json.RawMessage `json:"detail,omitempty"`
}

// HTTPError is an unexpected response from a registry.
type HTTPError struct {
	Registry   string
	Method     string
	Path       string // URL path, without the query (which may carry upload state)
	StatusCode int
	Status     string      // e.g. "404 Not Found"
	Errors     []ErrorInfo // parsed from the body when it is a registry error document
	Body       string      // a printable prefix of the body when it is not
}

// HTTPStatus is the response's status, by which transient.Is decides whether to retry.
func (e *HTTPError) HTTPStatus() int { return e.StatusCode }

func (e *HTTPError) Error() string {
	return fmt.Sprintf("registry %s: %s %s: %s", e.Registry, e.Method, e.Path, e.detail())
}

// detail is the status and the registry's explanation, without the request.
func (e *HTTPError) detail() string {
	s := e.Status
	if s == "" {
		s = fmt.Sprintf("%d %s", e.StatusCode, http.StatusText(e.StatusCode))
	}
	var parts []string
	for _, ei := range e.Errors {
		p := ei.Code
		if ei.Message != "" {
			p += ": " + ei.Message
		}
		parts = append(parts, p)
	}
	if len(parts) > 0 {
		return s + ": " + strings.Join(parts, "; ")
	}
	if e.Body != "" {
		return s + ": " + e.Body
	}
	return s
}

// Is lets errors.Is match ErrNotFound and ErrUnauthorized by status.
func (e *HTTPError) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.StatusCode == http.StatusNotFound
	case ErrUnauthorized:
		return e.StatusCode == http.StatusUnauthorized || e.StatusCode == http.StatusForbidden
	}
	return false
}

// hasCode reports whether the registry named error code c (e.g. "BLOB_UPLOAD_UNKNOWN").
func (e *HTTPError) hasCode(c string) bool {
	for _, ei := range e.Errors {
		if ei.Code == c {
			return true
		}
	}
	return false
}

// newHTTPError reads (a bounded prefix of) resp's body, closes it and describes the response.
func newHTTPError(registry string, resp *http.Response) *HTTPError {
	e := &HTTPError{
		Registry:   registry,
		Method:     resp.Request.Method,
		Path:       resp.Request.URL.Path,
		StatusCode: resp.StatusCode,
		Status:     resp.Status,
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	resp.Body.Close()
	var doc struct {
		Errors []ErrorInfo `json:"errors"`
	}
	if json.Unmarshal(body, &doc) == nil && len(doc.Errors) > 0 {
		e.Errors = doc.Errors
	} else {
		e.Body = printable(body, 200)
	}
	return e
}

// printable returns up to n bytes of b as a one-line string, or "" when b is not text.
func printable(b []byte, n int) string {
	if len(b) > n {
		b = b[:n]
	}
	s := strings.TrimSpace(string(b))
	if !utf8.ValidString(s) {
		return ""
	}
	for _, r := range s {
		if r < 0x20 && r != '\n' && r != '\t' && r != '\r' {
			return ""
		}
	}
	return strings.Join(strings.Fields(s), " ")
}

// AuthError reports that a registry refused our credentials, or wanted some and we had none.
type AuthError struct {
	Registry string
	User     string // "" when no credentials were configured for Registry
	Cause    error
}

func (e *AuthError) Error() string {
	cause := e.Cause.Error()
	var he *HTTPError
	if errors.As(e.Cause, &he) {
		cause = he.detail()
	}
	if e.User == "" {
		return fmt.Sprintf("registry %s: authentication required (no credentials configured for %s): %s",
			e.Registry, e.Registry, cause)
	}
	return fmt.Sprintf("registry %s: authentication failed for user %s: %s", e.Registry, e.User, cause)
}

func (e *AuthError) Unwrap() error { return e.Cause }

// Is matches ErrUnauthorized.
func (e *AuthError) Is(target error) bool { return target == ErrUnauthorized }
