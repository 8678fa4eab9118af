package registrytest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TokenServer issues registry bearer tokens (distribution's token auth, docs/spec/auth/token.md):
// JWTs signed with ES256 by a self-signed key whose certificate is the registry's rootcertbundle and
// travels in the token's x5c header.
type TokenServer struct {
	Service, Issuer string

	srv        *httptest.Server
	key        *ecdsa.PrivateKey
	certDER    []byte
	user, pass string
	ttl        time.Duration

	mu       sync.Mutex
	requests []TokenRequest
}

// TokenRequest is one request the token server answered.
type TokenRequest struct {
	User   string   // "" for anonymous
	Scopes []string // as requested
	Status int
}

// NewTokenServer starts a token server on 127.0.0.1 accepting user/pass (ttl 0: 5 minutes).
func NewTokenServer(t testing.TB, user, pass string, ttl time.Duration) *TokenServer {
	t.Helper()
	if ttl <= 0 {
		ttl = 5 * time.Minute
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("registrytest: token key: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "registrytest token signer"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("registrytest: token certificate: %v", err)
	}
	ts := &TokenServer{Service: "registrytest", Issuer: "registrytest-issuer", key: key, certDER: der,
		user: user, pass: pass, ttl: ttl}
	ts.srv = httptest.NewServer(http.HandlerFunc(ts.serve))
	t.Cleanup(ts.srv.Close)
	return ts
}

// Realm is the token endpoint URL.
func (ts *TokenServer) Realm() string { return ts.srv.URL + "/token" }

// CertPEM is the signing certificate, for the registry's rootcertbundle.
func (ts *TokenServer) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.certDER})
}

// Requests lists the token requests answered so far.
func (ts *TokenServer) Requests() []TokenRequest {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]TokenRequest(nil), ts.requests...)
}

type resourceActions struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

func (ts *TokenServer) serve(w http.ResponseWriter, r *http.Request) {
	var scopes []string
	for _, s := range r.URL.Query()["scope"] {
		scopes = append(scopes, strings.Fields(s)...)
	}
	user, pass, hasAuth := r.BasicAuth()
	record := func(status int) {
		ts.mu.Lock()
		ts.requests = append(ts.requests, TokenRequest{User: user, Scopes: scopes, Status: status})
		ts.mu.Unlock()
	}
	if r.URL.Path != "/token" || r.Method != http.MethodGet {
		record(http.StatusNotFound)
		http.NotFound(w, r)
		return
	}
	if hasAuth && (user != ts.user || pass != ts.pass) {
		record(http.StatusUnauthorized)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"errors":[{"code":"UNAUTHORIZED","message":"invalid username or password"}]}`)
		return
	}
	access := []resourceActions{}
	if hasAuth {
		for _, s := range scopes {
			typ, rest, ok := strings.Cut(s, ":")
			i := strings.LastIndexByte(rest, ':')
			if !ok || i < 0 {
				continue
			}
			access = append(access, resourceActions{Type: typ, Name: rest[:i], Actions: strings.Split(rest[i+1:], ",")})
		}
	}
	now := time.Now()
	claims := jwt.MapClaims{
		"iss":    ts.Issuer,
		"sub":    user,
		"aud":    ts.Service, // distribution 2.8 wants a string, not an array
		"exp":    now.Add(ts.ttl).Unix(),
		"nbf":    now.Add(-time.Minute).Unix(),
		"iat":    now.Unix(),
		"jti":    fmt.Sprintf("%d", now.UnixNano()),
		"access": access,
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	tok.Header["x5c"] = []string{base64.StdEncoding.EncodeToString(ts.certDER)}
	signed, err := tok.SignedString(ts.key)
	if err != nil {
		record(http.StatusInternalServerError)
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	record(http.StatusOK)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"token":        signed,
		"access_token": signed,
		"expires_in":   int(ts.ttl / time.Second),
		"issued_at":    now.UTC().Format(time.RFC3339),
	})
}
