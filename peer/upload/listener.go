package upload

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
)

// LimitListener returns a listener that keeps at most max of its connections open: a connection
// accepted over the cap is closed at once (not queued, so a flood cannot hold the accept loop),
// and counted in refused.
func LimitListener(ln net.Listener, max int, log *zap.Logger) net.Listener {
	if log == nil {
		log = zap.NewNop()
	}
	return &limitListener{Listener: ln, max: int64(max), log: log}
}

type limitListener struct {
	net.Listener
	max     int64
	open    atomic.Int64
	refused atomic.Uint64
	log     *zap.Logger
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.open.Add(1) > l.max {
			l.open.Add(-1)
			_ = c.Close()
			if n := l.refused.Add(1); n%100 == 1 {
				l.log.Warn("upload: too many connections, closing new ones", zap.Int64("max_connections", l.max),
					zap.Stringer("remote", c.RemoteAddr()), zap.Uint64("refused_so_far", n))
			}
			continue
		}
		return &limitConn{Conn: c, l: l}, nil
	}
}

type limitConn struct {
	net.Conn
	l    *limitListener
	once sync.Once
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.open.Add(-1) })
	return err
}

// TLSFiles name PEM files for TLS.
type TLSFiles struct {
	CAFile, CertFile, KeyFile string
}

// ServerTLS is the upload server's TLS configuration for f: its certificate, and when CAFile is
// set, client certificates required and verified against it (mutual TLS, as the Rust dfdaemon's
// upload.server.caCert/cert/key). nil when f names no certificate.
func ServerTLS(f TLSFiles) (*tls.Config, error) {
	if f.CertFile == "" && f.KeyFile == "" && f.CAFile == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("upload tls: load certificate %s: %w", f.CertFile, err)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if f.CAFile != "" {
		pool, err := certPool(f.CAFile)
		if err != nil {
			return nil, fmt.Errorf("upload tls: %w", err)
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// ClientTLS is a client TLS configuration for f: servers verified against CAFile (else the system
// roots), and the client certificate when CertFile is set. nil when f is empty.
func ClientTLS(f TLSFiles) (*tls.Config, error) {
	if f.CertFile == "" && f.KeyFile == "" && f.CAFile == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.CAFile != "" {
		pool, err := certPool(f.CAFile)
		if err != nil {
			return nil, fmt.Errorf("client tls: %w", err)
		}
		cfg.RootCAs = pool
	}
	if f.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("client tls: load certificate %s: %w", f.CertFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

func certPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA file %s: no PEM certificates", file)
	}
	return pool, nil
}

// GRPCLimits bound what callers of the upload gRPC server can hold.
type GRPCLimits struct {
	// MaxConcurrentStreams per connection (DefaultMaxConcurrentStreams when 0).
	MaxConcurrentStreams uint32
	// IdleTimeout closes a connection without an RPC for this long.
	IdleTimeout time.Duration
	// IOTimeout bounds the connection handshake and the wait for a keepalive answer.
	IOTimeout time.Duration
	// TLS, when set, serves TLS (mutual when it requires client certificates).
	TLS *tls.Config
}

// DefaultMaxConcurrentStreams bounds the RPCs one connection runs at once. SyncPieces streams are
// long-lived (one per parent per task); this leaves room for many tasks per peer.
const DefaultMaxConcurrentStreams = 256

// maxRecvMsgSize bounds a request message: the largest is a SyncPieces with its piece numbers.
const maxRecvMsgSize = 1 << 20

// GRPCServerOptions are the options of an upload gRPC server with limits l.
func GRPCServerOptions(l GRPCLimits) []grpc.ServerOption {
	if l.MaxConcurrentStreams == 0 {
		l.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	if l.IOTimeout <= 0 {
		l.IOTimeout = 30 * time.Second
	}
	opts := []grpc.ServerOption{
		grpc.MaxConcurrentStreams(l.MaxConcurrentStreams),
		grpc.MaxRecvMsgSize(maxRecvMsgSize),
		grpc.ConnectionTimeout(l.IOTimeout),
		// Clients that ping more often than this are cut off (ENHANCE_YOUR_CALM): keepalive pings
		// are otherwise a free way to keep the server busy.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: l.IdleTimeout, Time: 2 * time.Minute, Timeout: l.IOTimeout}),
	}
	if l.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(l.TLS)))
	}
	return opts
}
