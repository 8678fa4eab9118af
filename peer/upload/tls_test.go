package upload

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	commonv2 "d7y.io/api/v2/pkg/apis/common/v2"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// testPKI writes a CA and a certificate signed by it for each name (server certificates are
// valid for 127.0.0.1) and returns the file paths: ca, then cert and key per name.
func testPKI(t *testing.T, names ...string) (ca string, files map[string][2]string) {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test ca"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	ca = write("ca.pem", "CERTIFICATE", caDER)
	files = map[string][2]string{}
	for i, n := range names {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 2)), Subject: pkix.Name{CommonName: n},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			KeyUsage: x509.KeyUsageDigitalSignature, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kd, _ := x509.MarshalECPrivateKey(key)
		files[n] = [2]string{write(n+".pem", "CERTIFICATE", der), write(n+".key", "EC PRIVATE KEY", kd)}
	}
	return ca, files
}

// With mutual TLS a caller needs a certificate from the CA; one that has it may call
// DownloadTask from any address.
func TestMutualTLS(t *testing.T) {
	ca, files := testPKI(t, "server", "scheduler")
	srvTLS, err := ServerTLS(TLSFiles{CAFile: ca, CertFile: files["server"][0], KeyFile: files["server"][1]})
	if err != nil {
		t.Fatal(err)
	}
	// No scheduler address matches: only the certificate can make the caller acceptable.
	authz, err := NewAuthorizer(context.Background(), []string{"10.255.255.1:8002"}, nil, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	cfg := testConfig
	cfg.Authorizer, cfg.Log = authz, zaptest.NewLogger(t)
	s := NewServer(cfg, countingTasks(&calls))
	g := grpc.NewServer(GRPCServerOptions(GRPCLimits{TLS: srvTLS, IOTimeout: 5 * time.Second})...)
	s.Register(g)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(LimitListener(ln, 8, nil)) }()
	t.Cleanup(g.Stop)

	dial := func(files TLSFiles) *grpc.ClientConn {
		cliTLS, err := ClientTLS(files)
		if err != nil {
			t.Fatal(err)
		}
		cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(cliTLS)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return cc
	}
	d := &commonv2.Download{Url: testBlobURL}
	if err := downloadCall(t, dial(TLSFiles{CAFile: ca}), d); err == nil || errors.Is(err, io.EOF) {
		t.Errorf("a caller without a client certificate: %v, want the handshake refused", err)
	}
	if err := downloadCall(t, dial(TLSFiles{CAFile: ca, CertFile: files["scheduler"][0], KeyFile: files["scheduler"][1]}), d); !errors.Is(err, io.EOF) || calls.Load() != 1 {
		t.Errorf("a caller with a verified certificate: %v, %d downloads; want served", err, calls.Load())
	}
}
