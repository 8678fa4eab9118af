package registry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"

	"github.com/dfnydus/dfnydus/internal/transient"
)

// Client talks to OCI distribution registries. It is safe for concurrent use.
type Client struct {
	opts  Options
	log   *zap.Logger
	http  *http.Client
	creds *credentials

	mu    sync.Mutex
	hosts map[string]*hostState

	tokenFlight singleflight.Group
	stats       stats

	// sleep waits between retries; tests replace it to record delays instead of sleeping.
	sleep func(ctx context.Context, d time.Duration) error
}

// Stats are a Client's running totals.
type Stats struct {
	BytesUploaded   int64 // request body bytes handed to the network (all requests)
	BytesDownloaded int64 // response body bytes read (all requests)
	Requests        int64 // HTTP requests sent, including retries and token requests
	Retries         int64 // requests repeated after a transient failure
}

type stats struct {
	up, down, requests, retries atomic.Int64
}

// Stats returns the totals so far.
func (c *Client) Stats() Stats {
	return Stats{
		BytesUploaded:   c.stats.up.Load(),
		BytesDownloaded: c.stats.down.Load(),
		Requests:        c.stats.requests.Load(),
		Retries:         c.stats.retries.Load(),
	}
}

// New makes a Client. It fails when the CA file or an explicitly named docker config cannot be read.
func New(opts Options) (*Client, error) {
	opts = opts.withDefaults()
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: opts.Insecure} //nolint:gosec // asked for
	if opts.CAFile != "" {
		pem, err := os.ReadFile(opts.CAFile)
		if err != nil {
			return nil, fmt.Errorf("registry CA file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("registry CA file %s: no PEM certificates found", opts.CAFile)
		}
		tlsCfg.RootCAs = pool
	}
	creds, err := loadCredentials(opts)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tlsCfg,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   15 * time.Second,
		ExpectContinueTimeout: time.Second,
		ResponseHeaderTimeout: 5 * time.Minute,
	}
	c := &Client{
		opts:  opts,
		log:   opts.Logger,
		creds: creds,
		hosts: map[string]*hostState{},
		sleep: transient.Sleep,
	}
	c.http = &http.Client{Transport: tr, CheckRedirect: c.checkRedirect}
	return c, nil
}

// Close releases idle connections.
func (c *Client) Close() error {
	c.http.CloseIdleConnections()
	return nil
}

// maxRedirects bounds redirect chains: blob GETs are commonly redirected once, to storage on
// another host; a registry needs no more than a few hops.
const maxRedirects = 5

// ErrRedirect: a redirect the client refuses to follow (too many, or from https to http).
var ErrRedirect = errors.New("registry: redirect refused")

// checkRedirect follows redirects, dropping credentials when the target is another host than the
// registry the request was for (storage URLs carry their own signature, and our credentials must
// not leak to them), and refusing a downgrade from https to plain http anywhere in the chain (a
// man in the middle, or a hostile registry, could otherwise read what we send and feed us bytes).
func (c *Client) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return fmt.Errorf("%w: more than %d redirects", ErrRedirect, maxRedirects)
	}
	if req.URL.Scheme != "https" {
		for _, v := range via {
			if v.URL.Scheme == "https" {
				return fmt.Errorf("%w: from https to %s://%s", ErrRedirect, req.URL.Scheme, req.URL.Host)
			}
		}
	}
	if !strings.EqualFold(req.URL.Host, via[0].URL.Host) {
		req.Header.Del("Authorization")
		req.Header.Del("Cookie")
	}
	c.log.Debug("redirect", zap.String("method", req.Method), zap.String("to", req.URL.Host+req.URL.Path))
	return nil
}

// host returns the state for a registry, contacting it first (GET /v2/) to learn its scheme and
// how it wants requests authenticated.
func (c *Client) host(ctx context.Context, host string) (*hostState, error) {
	c.mu.Lock()
	hs := c.hosts[host]
	if hs == nil {
		hs = &hostState{host: host}
		c.hosts[host] = hs
	}
	c.mu.Unlock()

	hs.pingMu.Lock()
	defer hs.pingMu.Unlock()
	if hs.pinged {
		return hs, nil
	}
	schemes := []string{"https"}
	switch {
	case c.opts.PlainHTTP:
		schemes = []string{"http"}
	case isLoopback(host):
		schemes = []string{"https", "http"}
	}
	var errs []string
	var last error
	for i, scheme := range schemes {
		u := scheme + "://" + host + "/v2/"
		build := func() (*http.Request, error) { return c.newRequest(ctx, http.MethodGet, u, nil) }
		// Only the last scheme tried gets retries: an HTTPS attempt at a plain-HTTP loopback
		// registry fails for good.
		resp, err := c.send(ctx, host, build, i == len(schemes)-1)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			errs = append(errs, scheme+": "+err.Error())
			last = err
			if isCertError(err) {
				// A TLS registry we do not trust: say so rather than try plain HTTP.
				return nil, fmt.Errorf("registry %s: %w (use a CA file, or skip verification with the insecure option)", host, err)
			}
			continue
		}
		if resp.StatusCode == http.StatusUnauthorized {
			hs.learn(parseChallenges(resp.Header))
		}
		drain(resp)
		hs.mu.Lock()
		hs.scheme = scheme
		hs.mu.Unlock()
		hs.pinged = true
		c.log.Debug("registry contacted", zap.String("registry", host), zap.String("scheme", scheme),
			zap.Int("status", resp.StatusCode))
		return hs, nil
	}
	if len(errs) == 1 {
		return nil, fmt.Errorf("registry %s: cannot reach /v2/: %w", host, last)
	}
	return nil, fmt.Errorf("registry %s: cannot reach /v2/ (%s): %w", host, strings.Join(errs[:len(errs)-1], "; "), last)
}

// isCertError reports whether err is a failure to verify a server's certificate.
func isCertError(err error) bool {
	var cve *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	var ci x509.CertificateInvalidError
	return errors.As(err, &cve) || errors.As(err, &ua) || errors.As(err, &he) || errors.As(err, &ci)
}

// baseURL is scheme://host of a contacted registry.
func (hs *hostState) baseURL() *url.URL {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return &url.URL{Scheme: hs.scheme, Host: hs.host}
}

func (c *Client) newRequest(ctx context.Context, method, u string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", c.opts.UserAgent)
	return req, nil
}

// send runs one HTTP exchange built by build, retrying transient failures (network errors, 408,
// 429, 5xx) with backoff when idempotent. Response bodies are counted into the download total.
func (c *Client) send(ctx context.Context, host string, build func() (*http.Request, error), idempotent bool) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		req, err := build()
		if err != nil {
			return nil, err
		}
		if req.Header.Get("User-Agent") == "" {
			req.Header.Set("User-Agent", c.opts.UserAgent)
		}
		c.stats.requests.Add(1)
		resp, err := c.http.Do(req)
		canRetry := idempotent && attempt < c.opts.Retries
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if !canRetry || !retryableError(err) {
				return nil, unwrapURLError(err)
			}
			if werr := c.waitRetry(ctx, host, req, attempt, 0, err.Error()); werr != nil {
				return nil, werr
			}
			continue
		}
		resp.Body = &countingReadCloser{rc: resp.Body, total: &c.stats.down}
		if canRetry && transient.Status(resp.StatusCode) {
			wait := retryAfter(resp.Header, time.Now())
			drain(resp)
			if werr := c.waitRetry(ctx, host, req, attempt, wait, resp.Status); werr != nil {
				return nil, werr
			}
			continue
		}
		return resp, nil
	}
}

// unwrapURLError strips net/http's *url.Error (whose message repeats the whole URL, query and all)
// and keeps the cause.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func (c *Client) waitRetry(ctx context.Context, host string, req *http.Request, attempt int, wait time.Duration, why string) error {
	if wait <= 0 {
		wait = transient.Backoff(attempt, c.opts.RetryBaseDelay, c.opts.RetryMaxDelay)
	}
	c.stats.retries.Add(1)
	c.log.Warn("registry request failed; retrying", zap.String("registry", host),
		zap.String("method", req.Method), zap.String("path", req.URL.Path), zap.String("error", why),
		zap.Int("attempt", attempt+1), zap.Duration("wait", wait))
	return c.sleep(ctx, wait)
}

// drain discards (a bounded amount of) a response body so the connection can be reused, and
// closes it.
func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}

// request describes one registry API call for do.
type request struct {
	method string
	host   string     // the registry
	path   string     // "/v2/..." on the registry, or
	url    string     // an absolute or host-relative URL the registry gave us (upload Location)
	query  url.Values // added to the URL's query
	header http.Header
	// body returns a fresh reader of size bytes for each attempt; nil means no body.
	body       func() io.Reader
	size       int64
	scopes     []string
	idempotent bool
	// sent, when non-nil, also accumulates the request body bytes handed to the network.
	sent *atomic.Int64
}

// do sends r with authentication: it attaches credentials or a bearer token for r's scopes, and on
// a 401 learns the registry's challenge, refreshes the token and tries once more. A second 401
// becomes an *AuthError. Other statuses are returned for the caller to judge.
func (c *Client) do(ctx context.Context, r *request) (*http.Response, error) {
	hs, err := c.host(ctx, r.host)
	if err != nil {
		return nil, err
	}
	u := hs.baseURL()
	if r.url != "" {
		ref, err := url.Parse(r.url)
		if err != nil {
			return nil, fmt.Errorf("registry %s: bad URL %q: %w", r.host, r.url, err)
		}
		u = u.ResolveReference(ref)
	} else {
		u.Path = r.path
	}
	if len(r.query) > 0 {
		q := u.Query()
		for k, vs := range r.query {
			for _, v := range vs {
				q.Add(k, v)
			}
		}
		u.RawQuery = q.Encode()
	}
	scopes := append([]string(nil), r.scopes...)
	refresh := false
	for try := 0; ; try++ {
		build := func() (*http.Request, error) {
			var body io.Reader
			if r.body != nil {
				body = &countingReader{r: r.body(), total: &c.stats.up, op: r.sent}
			}
			req, err := c.newRequest(ctx, r.method, u.String(), body)
			if err != nil {
				return nil, err
			}
			if r.body != nil {
				req.ContentLength = r.size
				if r.size == 0 {
					req.Body = http.NoBody
				}
				req.GetBody = func() (io.ReadCloser, error) {
					return io.NopCloser(&countingReader{r: r.body(), total: &c.stats.up, op: r.sent}), nil
				}
			}
			for k, vs := range r.header {
				req.Header[k] = vs
			}
			if u.Host == hs.host {
				if err := c.authorize(ctx, hs, req, scopes, refresh); err != nil {
					return nil, err
				}
			}
			return req, nil
		}
		resp, err := c.send(ctx, hs.host, build, r.idempotent)
		if err != nil {
			var ae *AuthError
			var se *sourceError
			if errors.As(err, &ae) || errors.As(err, &se) || ctx.Err() != nil {
				return nil, err
			}
			return nil, fmt.Errorf("registry %s: %s %s: %w", r.host, r.method, u.Path, err)
		}
		if resp.StatusCode != http.StatusUnauthorized {
			return resp, nil
		}
		if try == 0 {
			if scope, ok := hs.learn(parseChallenges(resp.Header)); ok {
				if scope != "" {
					scopes = append(scopes, scope)
				}
				drain(resp)
				refresh = true
				continue
			}
		}
		he := newHTTPError(r.host, resp)
		cred, err := c.credential(ctx, hs)
		if err != nil {
			return nil, err
		}
		return nil, &AuthError{Registry: r.host, User: cred.user(), Cause: he}
	}
}

// countingReader counts bytes read through it into a Client total and an optional per-operation
// total, and marks read errors as the source's.
type countingReader struct {
	r     io.Reader
	total *atomic.Int64
	op    *atomic.Int64
}

func (cr *countingReader) Read(p []byte) (int, error) {
	n, err := cr.r.Read(p)
	if n > 0 {
		cr.total.Add(int64(n))
		if cr.op != nil {
			cr.op.Add(int64(n))
		}
	}
	if err != nil && err != io.EOF {
		err = &sourceError{err: err}
	}
	return n, err
}

type countingReadCloser struct {
	rc    io.ReadCloser
	total *atomic.Int64
}

func (c *countingReadCloser) Read(p []byte) (int, error) {
	n, err := c.rc.Read(p)
	if n > 0 {
		c.total.Add(int64(n))
	}
	return n, err
}

func (c *countingReadCloser) Close() error { return c.rc.Close() }
