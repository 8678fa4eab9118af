package upload

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// ErrNotScheduler: a DownloadTask caller that is not a scheduler.
var ErrNotScheduler = errors.New("upload: caller is not a scheduler")

// DefaultResolveInterval is how often scheduler host names are resolved again.
const DefaultResolveInterval = time.Minute

// Authorizer decides who may call DownloadTask on a seed peer: the schedulers (the gRPC peer's
// source IP is one of the resolved addresses of scheduler.addrs), callers in the allowed CIDRs,
// or, when the upload server requires client certificates, any caller whose certificate the
// server verified. DownloadTask makes this peer fetch from the network and store what it got:
// left open, anyone reaching the upload port could use the seed as a proxy into its network
// (SSRF) or fill its disk.
type Authorizer struct {
	addrs   []string
	allowed []netip.Prefix
	log     *zap.Logger
	lookup  func(ctx context.Context, host string) ([]netip.Addr, error)

	mu  sync.RWMutex
	ips map[netip.Addr]bool // by host:port entry's resolution, flattened
}

// NewAuthorizer returns an Authorizer for the schedulers at addrs (host:port) and the CIDRs in
// allowed; it resolves the addresses once before returning (a name that does not resolve yet is
// logged, and tried again at each Refresh).
func NewAuthorizer(ctx context.Context, addrs, allowed []string, log *zap.Logger) (*Authorizer, error) {
	if log == nil {
		log = zap.NewNop()
	}
	a := &Authorizer{addrs: addrs, log: log, ips: map[netip.Addr]bool{}, lookup: lookupIP}
	for _, c := range allowed {
		p, err := ParseCaller(c)
		if err != nil {
			return nil, err
		}
		a.allowed = append(a.allowed, p)
	}
	a.Refresh(ctx)
	return a, nil
}

// ParseCaller parses an allowed-caller entry: a CIDR or a single IP.
func ParseCaller(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("allowed caller %q: want a CIDR or an IP address", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// Refresh resolves the scheduler addresses again. A name that fails to resolve keeps the
// addresses it had: a DNS hiccup must not lock the scheduler out.
func (a *Authorizer) Refresh(ctx context.Context) {
	next := map[netip.Addr]bool{}
	a.mu.RLock()
	old := a.ips
	a.mu.RUnlock()
	for _, hp := range a.addrs {
		host, _, err := net.SplitHostPort(hp)
		if err != nil {
			host = hp
		}
		if ip, err := netip.ParseAddr(host); err == nil {
			next[ip.Unmap()] = true
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		ips, err := a.lookup(rctx, host)
		cancel()
		if err != nil || len(ips) == 0 {
			a.log.Warn("upload: cannot resolve scheduler address; keeping the previous ones", zap.String("scheduler", hp), zap.Error(err))
			for ip := range old {
				next[ip] = true
			}
			continue
		}
		for _, ip := range ips {
			next[ip.Unmap()] = true
		}
	}
	a.mu.Lock()
	a.ips = next
	a.mu.Unlock()
}

func lookupIP(ctx context.Context, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}

// Run refreshes the resolution every interval until ctx ends.
func (a *Authorizer) Run(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = DefaultResolveInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			a.Refresh(ctx)
		}
	}
}

// Authorize reports whether the caller of the RPC in ctx may ask for downloads.
func (a *Authorizer) Authorize(ctx context.Context) error {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return fmt.Errorf("%w: no peer address", ErrNotScheduler)
	}
	if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 {
		return nil
	}
	ap, err := netip.ParseAddrPort(p.Addr.String())
	if err != nil {
		return fmt.Errorf("%w: peer address %s: %v", ErrNotScheduler, p.Addr, err)
	}
	ip := ap.Addr().Unmap()
	a.mu.RLock()
	ok = a.ips[ip]
	a.mu.RUnlock()
	if ok {
		return nil
	}
	for _, pre := range a.allowed {
		if pre.Contains(ip) {
			return nil
		}
	}
	return fmt.Errorf("%w: %s", ErrNotScheduler, ip)
}
