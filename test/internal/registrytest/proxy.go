package registrytest

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// Kind classifies registry requests for the Proxy's counters.
type Kind string

const (
	KindBlobGet    Kind = "blob-get"    // GET/HEAD/DELETE /v2/<name>/blobs/<digest>
	KindBlobUpload Kind = "blob-upload" // /v2/<name>/blobs/uploads/... (POST, PATCH, PUT, GET status)
	KindManifest   Kind = "manifest"    // /v2/<name>/manifests/<reference>
	KindOther      Kind = "other"       // /v2/ and everything else
)

// Counts are what a Proxy saw for one kind of request.
type Counts struct {
	Requests int
	BytesIn  int64 // request body bytes received from clients
	BytesOut int64 // response body bytes sent to clients
}

// Request is one request the Proxy handled.
type Request struct {
	Method, Path      string
	Range             string // the request's Range header (blob reads, upload status)
	ContentRange      string // the request's Content-Range header (upload chunks)
	Kind              Kind
	Status            int // 0 when the connection was reset before a response
	BytesIn, BytesOut int64
	Fault             string // "" or what was injected
}

// Fault is a misbehaviour the Proxy applies to matching requests.
type Fault struct {
	// Match is a regular expression matched against "METHOD /path" (no query), e.g.
	// `^PATCH /v2/.*/blobs/uploads/` or `^GET /v2/.*/blobs/sha256:`.
	Match string
	// Times is how many matching requests get the fault; a negative value means all of them until
	// ClearFaults. Zero means one.
	Times int
	// Skip lets this many matching requests through untouched before the fault applies.
	Skip int
	// Status, when non-zero, is answered at once (the registry never sees the request), with Header
	// added (e.g. Retry-After).
	Status int
	Header http.Header
	// Reset drops the connection with a TCP reset after ResetAfter body bytes: of the request body
	// when the request has one (the registry never sees the request), else of the response body.
	Reset      bool
	ResetAfter int64
	// Corrupt flips the first byte of the response body: a blob served with wrong bytes.
	Corrupt bool
}

type fault struct {
	Fault
	re   *regexp.Regexp
	skip int
	left int
}

func (f *fault) describe() string {
	switch {
	case f.Status != 0:
		return fmt.Sprintf("status %d", f.Status)
	case f.Reset:
		return fmt.Sprintf("reset after %d bytes", f.ResetAfter)
	case f.Corrupt:
		return "corrupt"
	}
	return "none"
}

// Proxy is a loopback reverse proxy in front of a registry that counts traffic per kind of request
// and injects faults on demand. Request bodies are received whole before they are forwarded (as
// nginx does), so a fault on an upload never leaves a half-written chunk in the registry.
type Proxy struct {
	t         testing.TB
	target    *url.URL
	srv       *httptest.Server
	transport *http.Transport

	mu       sync.Mutex
	faults   []*fault
	counts   map[Kind]*Counts
	requests []*Request
}

// maxLoggedRequests bounds the request log.
const maxLoggedRequests = 100000

// NewProxy starts a proxy on 127.0.0.1 forwarding to target ("127.0.0.1:5000" or a URL); it stops
// when the test ends.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	if !strings.Contains(target, "://") {
		target = "http://" + target
	}
	u, err := url.Parse(target)
	if err != nil || u.Host == "" {
		t.Fatalf("registrytest: bad proxy target %q: %v", target, err)
	}
	p := &Proxy{
		t:         t,
		target:    u,
		transport: &http.Transport{Proxy: nil, DisableCompression: true, MaxIdleConnsPerHost: 16},
		counts:    map[Kind]*Counts{},
	}
	p.srv = httptest.NewServer(p)
	t.Cleanup(func() {
		p.srv.Close()
		p.transport.CloseIdleConnections()
	})
	return p
}

// Host is the proxy's "127.0.0.1:PORT".
func (p *Proxy) Host() string { return p.srv.Listener.Addr().String() }

// URL is "http://127.0.0.1:PORT".
func (p *Proxy) URL() string { return p.srv.URL }

// Ref is "127.0.0.1:PORT/repo:tag" through the proxy.
func (p *Proxy) Ref(repo, tag string) string { return makeRef(p.Host(), repo, tag) }

// Inject adds a fault; faults are tried in the order added, and one request gets at most one.
func (p *Proxy) Inject(f Fault) {
	re, err := regexp.Compile(f.Match)
	if err != nil {
		p.t.Fatalf("registrytest: fault pattern %q: %v", f.Match, err)
	}
	left := f.Times
	if left == 0 {
		left = 1
	}
	p.mu.Lock()
	p.faults = append(p.faults, &fault{Fault: f, re: re, skip: f.Skip, left: left})
	p.mu.Unlock()
}

// FailNext answers the next n requests matching pattern with status.
func (p *Proxy) FailNext(pattern string, n, status int) {
	p.Inject(Fault{Match: pattern, Times: n, Status: status})
}

// ResetAfter resets the connection of the next n requests matching pattern after k body bytes.
func (p *Proxy) ResetAfter(pattern string, n int, k int64) {
	p.Inject(Fault{Match: pattern, Times: n, Reset: true, ResetAfter: k})
}

// CorruptBlob serves wrong bytes for the next n GETs of blob dgst ("sha256:...").
func (p *Proxy) CorruptBlob(dgst string, n int) {
	p.Inject(Fault{Match: `^GET /v2/.+/blobs/` + regexp.QuoteMeta(dgst) + `$`, Times: n, Corrupt: true})
}

// ClearFaults removes all pending faults.
func (p *Proxy) ClearFaults() {
	p.mu.Lock()
	p.faults = nil
	p.mu.Unlock()
}

// Counts returns the counters of one kind of request.
func (p *Proxy) Counts(k Kind) Counts {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c := p.counts[k]; c != nil {
		return *c
	}
	return Counts{}
}

// Total sums the counters of all kinds.
func (p *Proxy) Total() Counts {
	p.mu.Lock()
	defer p.mu.Unlock()
	var t Counts
	for _, c := range p.counts {
		t.Requests += c.Requests
		t.BytesIn += c.BytesIn
		t.BytesOut += c.BytesOut
	}
	return t
}

// Requests returns the log of handled requests, oldest first.
func (p *Proxy) Requests() []Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Request, len(p.requests))
	for i, r := range p.requests {
		out[i] = *r
	}
	return out
}

// ResetCounts zeroes the counters and the request log.
func (p *Proxy) ResetCounts() {
	p.mu.Lock()
	p.counts = map[Kind]*Counts{}
	p.requests = nil
	p.mu.Unlock()
}

var (
	uploadPathRE   = regexp.MustCompile(`^/v2/.+/blobs/uploads/`)
	blobPathRE     = regexp.MustCompile(`^/v2/.+/blobs/[a-z0-9+._-]+:[a-zA-Z0-9=_-]+$`)
	manifestPathRE = regexp.MustCompile(`^/v2/.+/manifests/[^/]+$`)
)

// Classify says which Kind a request path is.
func Classify(path string) Kind {
	switch {
	case uploadPathRE.MatchString(path):
		return KindBlobUpload
	case blobPathRE.MatchString(path):
		return KindBlobGet
	case manifestPathRE.MatchString(path):
		return KindManifest
	}
	return KindOther
}

// takeFault returns (and uses up) the first fault matching r.
func (p *Proxy) takeFault(r *http.Request) *fault {
	key := r.Method + " " + r.URL.Path
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, f := range p.faults {
		if !f.re.MatchString(key) {
			continue
		}
		if f.skip > 0 {
			f.skip--
			continue
		}
		if f.left > 0 {
			f.left--
			if f.left == 0 {
				p.faults = append(p.faults[:i:i], p.faults[i+1:]...)
			}
		}
		return f
	}
	return nil
}

// track is one in-flight request's entry in the counters and the log. Counters are updated
// before bytes are handed to the network, so a client that has received a response sees it counted.
type track struct {
	p   *Proxy
	rec *Request
}

func (p *Proxy) begin(rec Request) *track {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counts[rec.Kind] = p.countsFor(rec.Kind)
	p.counts[rec.Kind].Requests++
	tr := &track{p: p, rec: &rec}
	if len(p.requests) < maxLoggedRequests {
		p.requests = append(p.requests, tr.rec)
	}
	return tr
}

func (p *Proxy) countsFor(k Kind) *Counts {
	if c := p.counts[k]; c != nil {
		return c
	}
	return &Counts{}
}

func (tr *track) in(n int64) {
	tr.p.mu.Lock()
	defer tr.p.mu.Unlock()
	c := tr.p.countsFor(tr.rec.Kind)
	tr.p.counts[tr.rec.Kind] = c
	c.BytesIn += n
	tr.rec.BytesIn += n
}

func (tr *track) out(n int64) {
	tr.p.mu.Lock()
	defer tr.p.mu.Unlock()
	c := tr.p.countsFor(tr.rec.Kind)
	tr.p.counts[tr.rec.Kind] = c
	c.BytesOut += n
	tr.rec.BytesOut += n
}

func (tr *track) status(code int, fault string) {
	tr.p.mu.Lock()
	defer tr.p.mu.Unlock()
	tr.rec.Status = code
	if fault != "" {
		tr.rec.Fault = fault
	}
}

// countingBody counts request body bytes as they are received.
type countingBody struct {
	r  io.Reader
	tr *track
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.tr.in(int64(n))
	return n, err
}

// countingWriter counts response body bytes just before writing them.
type countingWriter struct {
	w  io.Writer
	tr *track
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.tr.out(int64(len(p)))
	n, err := c.w.Write(p)
	if n < len(p) {
		c.tr.out(int64(n - len(p)))
	}
	return n, err
}

// hopHeaders are not forwarded (RFC 7230 section 6.1).
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Proxy-Connection", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

func copyHeaders(dst, src http.Header) {
	for k, vs := range src {
		dst[k] = append([]string(nil), vs...)
	}
	for _, h := range hopHeaders {
		dst.Del(h)
	}
}

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	tr := p.begin(Request{Method: r.Method, Path: r.URL.Path, Range: r.Header.Get("Range"),
		ContentRange: r.Header.Get("Content-Range"), Kind: Classify(r.URL.Path)})
	f := p.takeFault(r)
	desc := ""
	if f != nil {
		desc = f.describe()
		tr.status(0, desc)
	}
	in := &countingBody{r: r.Body, tr: tr}
	out := &countingWriter{w: w, tr: tr}
	hasBody := r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody
	if f != nil && f.Reset && hasBody {
		_, _ = io.CopyN(io.Discard, in, f.ResetAfter)
		resetConn(w)
		return
	}
	body, err := io.ReadAll(in)
	if err != nil {
		tr.status(http.StatusBadGateway, "")
		http.Error(w, "proxy: read request body: "+err.Error(), http.StatusBadGateway)
		return
	}
	if f != nil && f.Status != 0 {
		for k, vs := range f.Header {
			w.Header()[k] = vs
		}
		w.Header().Set("Content-Type", "application/json")
		tr.status(f.Status, "")
		w.WriteHeader(f.Status)
		fmt.Fprintf(out, `{"errors":[{"code":"UNKNOWN","message":"registrytest proxy: injected status %d"}]}`, f.Status)
		return
	}

	req, err := http.NewRequestWithContext(r.Context(), r.Method, p.target.Scheme+"://"+p.target.Host+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		tr.status(http.StatusBadGateway, "")
		http.Error(w, "proxy: "+err.Error(), http.StatusBadGateway)
		return
	}
	copyHeaders(req.Header, r.Header)
	req.ContentLength = int64(len(body))
	if len(body) == 0 {
		req.Body = http.NoBody
	}
	// Keep the client's Host so the registry's Location headers point back at the proxy.
	req.Host = r.Host
	resp, err := p.transport.RoundTrip(req)
	if err != nil {
		tr.status(http.StatusBadGateway, "")
		http.Error(w, "proxy: "+err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	copyHeaders(w.Header(), resp.Header)
	tr.status(resp.StatusCode, "")
	w.WriteHeader(resp.StatusCode)

	var src io.Reader = resp.Body
	if f != nil && f.Corrupt {
		src = &flipFirstByte{r: src}
	}
	if f != nil && f.Reset {
		_, _ = io.CopyN(out, src, f.ResetAfter)
		if fl, ok := w.(http.Flusher); ok {
			fl.Flush()
		}
		resetConn(w)
		return
	}
	_, _ = io.Copy(out, src)
}

// resetConn drops the client's connection with a TCP RST.
func resetConn(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	conn.Close()
}

// flipFirstByte inverts the first byte read through it.
type flipFirstByte struct {
	r    io.Reader
	done bool
}

func (f *flipFirstByte) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if n > 0 && !f.done {
		p[0] ^= 0xff
		f.done = true
	}
	return n, err
}
