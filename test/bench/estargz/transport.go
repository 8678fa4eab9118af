package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/pkg/reference"
	"github.com/containerd/stargz-snapshotter/fs/source"
	rhttp "github.com/hashicorp/go-retryablehttp"
)

// fetchStats counts what the store received from the registry: HTTP requests sent and response
// body bytes read.
type fetchStats struct {
	requests atomic.Int64
	bytes    atomic.Int64
}

func (s *fetchStats) String() string {
	return fmt.Sprintf("requests=%d bytes=%d", s.requests.Load(), s.bytes.Load())
}

// countingTransport counts requests and response body bytes into stats.
type countingTransport struct {
	inner http.RoundTripper
	stats *fetchStats
}

func (t *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.stats.requests.Add(1)
	resp, err := t.inner.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	resp.Body = &countingBody{ReadCloser: resp.Body, n: &t.stats.bytes}
	return resp, nil
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// newCountingTransport is a pooled HTTP transport (no proxy from the environment: the registry
// is on loopback or a caller's bridge) that counts into stats.
func newCountingTransport(stats *fetchStats) *countingTransport {
	return &countingTransport{
		inner: &http.Transport{
			DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:          100,
			MaxIdleConnsPerHost:   16,
			IdleConnTimeout:       90 * time.Second,
			ExpectContinueTimeout: time.Second,
		},
		stats: stats,
	}
}

// plainHTTPHosts is the store's registry configuration: every image's host is reached over plain
// HTTP, without credentials, through transport. Requests are retried by go-retryablehttp as in
// stargz-store's own resolver (the store tunes its retry policy on this client type), each with
// timeout.
func plainHTTPHosts(transport http.RoundTripper, timeout time.Duration) source.RegistryHosts {
	return func(ref reference.Spec) ([]docker.RegistryHost, error) {
		client := rhttp.NewClient()
		client.Logger = nil // no log line per request
		client.HTTPClient = &http.Client{Transport: transport, Timeout: timeout}
		return []docker.RegistryHost{{
			Client:       client.StandardClient(),
			Host:         ref.Hostname(),
			Scheme:       "http",
			Path:         "/v2",
			Capabilities: docker.HostCapabilityPull | docker.HostCapabilityResolve,
		}}, nil
	}
}
