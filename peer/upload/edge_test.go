package upload

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	commonv2 "d7y.io/api/v2/pkg/apis/common/v2"
	dfdaemonv2 "d7y.io/api/v2/pkg/apis/dfdaemon/v2"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	schedclient "github.com/dfnydus/dfnydus/scheduler-client"
)

// dialFrom connects to addr from the loopback address local.
func dialFrom(t *testing.T, addr, local string) *grpc.ClientConn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return d.DialContext(ctx, "tcp", a) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// serveAddr runs a Server over f and returns its address.
func serveAddr(t *testing.T, cfg Config, f Tasks) string {
	t.Helper()
	cfg.Log = zaptest.NewLogger(t)
	s := NewServer(cfg, f)
	g := grpc.NewServer()
	s.Register(g)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(ln) }()
	t.Cleanup(g.Stop)
	return ln.Addr().String()
}

// downloadCall asks cc for testBlobURL and returns the stream's error.
func downloadCall(t *testing.T, cc *grpc.ClientConn, d *commonv2.Download) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := dfdaemonv2.NewDfdaemonUploadClient(cc).DownloadTask(ctx, &dfdaemonv2.DownloadTaskRequest{Download: d})
	if err != nil {
		return err
	}
	for {
		if _, err := stream.Recv(); err != nil {
			return err
		}
	}
}

// countingTasks counts DownloadTask calls and completes them at once.
func countingTasks(calls *atomic.Int32) *fakeTasks {
	f := newFakeTasks()
	f.download = func(context.Context, *fakeTasks, string, *commonv2.Download, func(PieceInfo)) (TaskInfo, error) {
		calls.Add(1)
		return TaskInfo{}, nil
	}
	return f
}

func TestDownloadTaskAuthorization(t *testing.T) {
	authz, err := NewAuthorizer(context.Background(), []string{"127.0.0.1:8002"}, nil, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	d := &commonv2.Download{Url: testBlobURL}
	for _, tc := range []struct {
		name     string
		seed     bool
		from     string
		wantCode codes.Code
	}{
		{"a normal peer refuses even the scheduler", false, "127.0.0.1", codes.PermissionDenied},
		{"a seed refuses another caller", true, "127.0.0.9", codes.PermissionDenied},
		{"a seed accepts the scheduler", true, "127.0.0.1", codes.OK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int32
			cfg := testConfig
			cfg.Seed, cfg.Authorizer = tc.seed, authz
			cc := dialFrom(t, serveAddr(t, cfg, countingTasks(&calls)), tc.from)
			err := downloadCall(t, cc, d)
			if tc.wantCode == codes.OK {
				if !errors.Is(err, io.EOF) || calls.Load() != 1 {
					t.Fatalf("err = %v, %d downloads started; want 1", err, calls.Load())
				}
				return
			}
			if st, _ := status.FromError(err); st.Code() != tc.wantCode || st.Message() != MsgPermissionDenied {
				t.Fatalf("err = %v, want %s %q", err, tc.wantCode, MsgPermissionDenied)
			}
			if calls.Load() != 0 {
				t.Errorf("%d downloads started for a refused caller", calls.Load())
			}
		})
	}
}

func TestAuthorizer(t *testing.T) {
	a, err := NewAuthorizer(context.Background(), []string{"localhost:8002", "10.1.2.3:8002"}, []string{"192.168.7.0/24", "fd00::1"}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	at := func(addr string, auth credentials.AuthInfo) context.Context {
		ap := netip.MustParseAddrPort(addr)
		return peer.NewContext(context.Background(), &peer.Peer{Addr: net.TCPAddrFromAddrPort(ap), AuthInfo: auth})
	}
	verified := credentials.TLSInfo{State: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{{}}}}}
	for _, tc := range []struct {
		name string
		ctx  context.Context
		ok   bool
	}{
		{"scheduler by name (localhost)", at("127.0.0.1:40000", nil), true},
		{"scheduler by IP", at("10.1.2.3:40000", nil), true},
		{"scheduler as IPv4-mapped IPv6", at("[::ffff:10.1.2.3]:40000", nil), true},
		{"allowed CIDR", at("192.168.7.77:1", nil), true},
		{"allowed single IP", at("[fd00::1]:1", nil), true},
		{"another loopback address", at("127.0.0.9:40000", nil), false},
		{"another host", at("10.1.2.4:40000", nil), false},
		{"verified client certificate", at("10.9.9.9:1", verified), true},
		{"TLS without a verified certificate", at("10.9.9.9:1", credentials.TLSInfo{}), false},
		{"no peer", context.Background(), false},
	} {
		err := a.Authorize(tc.ctx)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrNotScheduler)) {
			t.Errorf("%s: Authorize = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
	// A failed resolution keeps what was resolved before.
	a.lookup = func(context.Context, string) ([]netip.Addr, error) { return nil, errors.New("dns down") }
	a.Refresh(context.Background())
	if err := a.Authorize(at("127.0.0.1:1", nil)); err != nil {
		t.Errorf("after a failed refresh the scheduler is refused: %v", err)
	}
	a.lookup = func(context.Context, string) ([]netip.Addr, error) {
		return []netip.Addr{netip.MustParseAddr("10.5.5.5")}, nil
	}
	a.Refresh(context.Background())
	if err := a.Authorize(at("10.5.5.5:1", nil)); err != nil {
		t.Errorf("after a refresh the new address is refused: %v", err)
	}
	if _, err := NewAuthorizer(context.Background(), nil, []string{"nonsense"}, nil); err == nil {
		t.Error("a bad allowed caller was accepted")
	}
}

func TestValidateDownload(t *testing.T) {
	const (
		blobA = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
		blobB = "sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
	)
	urlA := "https://registry.example.com/v2/library/app/blobs/" + blobA
	urlB := "https://registry.example.com/v2/library/app/blobs/" + blobB
	urlID := func(u string) string { return schedclient.TaskID(u, 0) }
	pl := func(n uint64) *uint64 { return &n }
	content := "anything"
	for _, tc := range []struct {
		name   string
		d      *commonv2.Download
		taskID string // "" means TaskID(d)
		policy URLPolicy
		ok     bool
	}{
		{name: "blob URL", d: &commonv2.Download{Url: urlA}, ok: true},
		{name: "nested repository, tag, application, piece length", d: &commonv2.Download{Url: "https://r.example.com:5000/v2/a/b-c/d__e.f/blobs/" + blobA,
			Tag: ptr("t"), Application: ptr("app"), PieceLength: pl(8 << 20), FilteredQueryParams: []string{"X-Amz-Signature"}}, ok: true},
		{name: "plain http when registries are plain http", d: &commonv2.Download{Url: "http://127.0.0.1:5000/v2/a/blobs/" + blobA}, policy: URLPolicy{PlainHTTP: true}, ok: true},
		{name: "http for an https registry", d: &commonv2.Download{Url: "http://registry.example.com/v2/library/app/blobs/" + blobA}},
		{name: "https for a plain-http registry", d: &commonv2.Download{Url: urlA}, policy: URLPolicy{PlainHTTP: true}},
		{name: "other scheme", d: &commonv2.Download{Url: "file:///v2/a/blobs/" + blobA}},
		{name: "not a blob URL", d: &commonv2.Download{Url: "https://registry.example.com/v2/library/app/manifests/latest"}},
		{name: "metadata service", d: &commonv2.Download{Url: "https://169.254.169.254/v2/a/blobs/" + blobA}},
		{name: "query", d: &commonv2.Download{Url: urlA + "?x=1"}},
		{name: "user info", d: &commonv2.Download{Url: "https://u:p@registry.example.com/v2/a/blobs/" + blobA}},
		{name: "percent-encoding", d: &commonv2.Download{Url: "https://registry.example.com/v2/a%2Fb/blobs/" + blobA}},
		{name: "upper-case repository", d: &commonv2.Download{Url: "https://registry.example.com/v2/Library/blobs/" + blobA}},
		{name: "dot-dot repository", d: &commonv2.Download{Url: "https://registry.example.com/v2/a/../b/blobs/" + blobA}},
		{name: "sha512 digest", d: &commonv2.Download{Url: "https://registry.example.com/v2/a/blobs/sha512:" + strings.Repeat("a", 128)}},
		{name: "short digest", d: &commonv2.Download{Url: "https://registry.example.com/v2/a/blobs/sha256:abc"}},
		{name: "host not configured", d: &commonv2.Download{Url: urlA}, policy: URLPolicy{Hosts: []string{"other.example.com"}}},
		{name: "host configured", d: &commonv2.Download{Url: urlA}, policy: URLPolicy{Hosts: []string{"Registry.Example.com"}}, ok: true},
		{name: "piece length below the minimum", d: &commonv2.Download{Url: urlA, PieceLength: pl(1 << 20)}},
		{name: "hijack: id of blob A, URL of blob B", d: &commonv2.Download{Url: urlB}, taskID: urlID(urlA)},
		{name: "content_for_calculating_task_id", d: &commonv2.Download{Url: urlA, ContentForCalculatingTaskId: &content}},
		{name: "content_for_calculating_task_id equal to the URL", d: &commonv2.Download{Url: urlB, ContentForCalculatingTaskId: &urlA}},
		{name: "blob-digest task id", d: &commonv2.Download{Url: urlA, EnableTaskIdBasedBlobDigest: true}},
		{name: "another task type", d: &commonv2.Download{Url: urlA, Type: commonv2.TaskType_PERSISTENT_CACHE}},
		{name: "no url", d: &commonv2.Download{}},
		{name: "nil", d: nil},
	} {
		id := tc.taskID
		if id == "" && tc.d != nil && tc.d.GetUrl() != "" {
			id, _ = TaskID(tc.d)
		}
		dg, err := ValidateDownload(tc.d, id, tc.policy)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrInvalidDownload)) {
			t.Errorf("%s: ValidateDownload = %q, %v; want ok=%v", tc.name, dg, err, tc.ok)
		}
		if tc.ok && !strings.HasPrefix(dg, "sha256:") {
			t.Errorf("%s: digest %q", tc.name, dg)
		}
	}
}

// Refused requests never reach the peer's tasks, and the caller learns nothing but a fixed message.
func TestDownloadTaskRefusesInvalidRequests(t *testing.T) {
	var calls atomic.Int32
	_, cc := serve(t, testConfig, countingTasks(&calls))
	content := testBlobURL
	for _, d := range []*commonv2.Download{
		{Url: "http://registry.example.com/v2/a/blobs/sha256:" + strings.Repeat("0", 64)},
		{Url: "https://10.0.0.1:6379/"},
		{Url: strings.Replace(testBlobURL, "0123", "4567", 1), ContentForCalculatingTaskId: &content},
	} {
		err := downloadCall(t, cc, d)
		if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument || st.Message() != MsgInvalid {
			t.Errorf("DownloadTask(%s) = %v, want InvalidArgument %q", d.GetUrl(), err, MsgInvalid)
		}
	}
	if calls.Load() != 0 {
		t.Errorf("%d refused downloads reached the tasks", calls.Load())
	}
}

// Internal errors reach the caller as a fixed message.
func TestErrorMessagesAreFixed(t *testing.T) {
	f := newFakeTasks()
	f.download = func(context.Context, *fakeTasks, string, *commonv2.Download, func(PieceInfo)) (TaskInfo, error) {
		return TaskInfo{}, errors.New("dial tcp 10.0.0.7:443: connection refused; GET /secret: 401")
	}
	_, cc := serve(t, testConfig, f)
	err := downloadCall(t, cc, &commonv2.Download{Url: testBlobURL})
	if st, _ := status.FromError(err); st.Code() != codes.Internal || st.Message() != MsgInternal {
		t.Errorf("err = %v, want Internal %q", err, MsgInternal)
	}
	_, err = dfdaemonv2.NewDfdaemonUploadClient(cc).StatTask(context.Background(), &dfdaemonv2.StatTaskRequest{TaskId: "nope"})
	if st, _ := status.FromError(err); st.Code() != codes.NotFound || st.Message() != MsgNotFound {
		t.Errorf("StatTask err = %v, want NotFound %q", err, MsgNotFound)
	}
}

func TestLimitListener(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := LimitListener(inner, 2, zaptest.NewLogger(t))
	defer ln.Close()
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	var clients []net.Conn
	for i := 0; i < 3; i++ {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients = append(clients, c)
	}
	a, b := <-accepted, <-accepted
	_ = clients[2].SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := clients[2].Read(make([]byte, 1)); n != 0 || err == nil || isTimeout(err) {
		t.Fatalf("third connection: read %d, %v; want it closed", n, err)
	}
	a.Close()
	a.Close() // closing twice frees one slot only
	c, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case got := <-accepted:
		got.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("no connection accepted after one closed")
	}
	b.Close()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
