package schedtest_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	commonv2 "d7y.io/api/v2/pkg/apis/common/v2"
	dfdaemonv2 "d7y.io/api/v2/pkg/apis/dfdaemon/v2"
	schedulerv2 "d7y.io/api/v2/pkg/apis/scheduler/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	schedclient "github.com/dfnydus/dfnydus/scheduler-client"
	"github.com/dfnydus/dfnydus/test/internal/netns"
	"github.com/dfnydus/dfnydus/test/internal/schedtest"
)

// TestRedisSchedulerAcceptsFullHostAndChecksPreheat runs the scheduler with Redis (jobs and the
// persistent resources on): announcing a host with full statistics must not break it, and
// PreheatImage requests it cannot act on fail with a message naming the reason.
func TestRedisSchedulerAcceptsFullHostAndChecksPreheat(t *testing.T) {
	t.Parallel()
	sched := schedtest.Start(t, schedtest.Options{Redis: true})
	c := newClient(t, peerHost("peer-redis", 48000), []string{sched.Addr()})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	hosts, err := c.ListHosts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(hosts, func(h *commonv2.Host) bool { return h.GetId() == c.HostID() }) {
		t.Fatalf("host %s not listed", c.HostID())
	}

	for _, tc := range []struct {
		name string
		req  *schedulerv2.PreheatImageRequest
		code codes.Code
		says string // part of the message
	}{
		{
			name: "scope is required on the wire",
			req:  &schedulerv2.PreheatImageRequest{Url: "http://10.0.0.1:5000/v2/a/manifests/v1"},
			code: codes.InvalidArgument, says: "Scope",
		},
		{
			name: "registry on loopback is refused",
			req:  &schedulerv2.PreheatImageRequest{Url: "http://127.0.0.1:5000/v2/a/manifests/v1", Scope: "single_seed_peer"},
			code: codes.InvalidArgument, says: "ip 127.0.0.1 is invalid",
		},
		{
			name: "URL must be a manifest URL",
			req:  &schedulerv2.PreheatImageRequest{Url: "http://10.0.0.1:5000/v2/a/blobs/sha256:00", Scope: "single_seed_peer"},
			code: codes.InvalidArgument, says: "parse access url failed",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := c.PreheatImage(ctx, tc.req)
			if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("PreheatImage: %v; want %s saying %q", err, tc.code, tc.says)
			}
			t.Logf("scheduler says: %v", err)
		})
	}
	if !sched.Running() {
		t.Fatal("the scheduler exited")
	}
}

// TestPreheatImageDrivesSuperSeed runs, in network namespaces, a registry holding an image, the
// scheduler with Redis, and a stub super-seed peer (grpc.health.v1 + DfdaemonUpload.DownloadTask
// only). After the seed is announced and found healthy, PreheatImage must make the scheduler call
// the seed's DownloadTask once per blob the manifest references, with task ids our TaskID agrees
// with. This is the contract a dfnydus seed peer has to serve.
func TestPreheatImageDrivesSuperSeed(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("-short: waits for the scheduler's 30 s seed refresh")
	}
	nw := netns.Start(t, netns.Options{})
	schedNode, regNode, seedNode := nw.MustAddNode(t, "sched"), nw.MustAddNode(t, "reg"), nw.MustAddNode(t, "seed")
	reg := netns.MustStartRegistry(t, regNode, 5000)

	// An image with two layers (plus its config blob), pushed from the seed node.
	push := &http.Client{Transport: &http.Transport{DialContext: seedNode.DialContext}}
	defer push.CloseIdleConnections()
	blobs := pushImage(t, push, "http://"+reg.Host, "preheat/app", "v1")
	var wantURLs []string
	for _, d := range blobs {
		wantURLs = append(wantURLs, fmt.Sprintf("http://%s/v2/preheat/app/blobs/%s", reg.Host, d))
	}
	slices.Sort(wantURLs)

	sched := schedtest.Start(t, schedtest.Options{
		ListenIP: schedNode.Addr.String(), Port: 8002, Redis: true,
		Command: func(name string, args ...string) *exec.Cmd {
			return schedNode.Command(context.Background(), name, args...)
		},
		DialContext: schedNode.DialContext,
	})

	// The stub seed, serving in the seed node.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const seedPort = 4000
	ln, err := seedNode.Listen(ctx, "tcp", net.JoinHostPort(seedNode.Addr.String(), strconv.Itoa(seedPort)))
	if err != nil {
		t.Fatal(err)
	}
	seed := &stubSeed{checked: make(chan struct{}), calls: make(chan *dfdaemonv2.DownloadTaskRequest, 16)}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, &countingHealth{Server: health.NewServer(), checked: seed.checked})
	dfdaemonv2.RegisterDfdaemonUploadServer(srv, seed)
	go func() { _ = srv.Serve(ln) }()
	defer srv.Stop()

	seedHost := schedclient.Host{Type: schedclient.HostTypeSuperSeed, Hostname: "seed", IP: seedNode.Addr.String(), Port: seedPort}
	seedClient := newClient(t, seedHost, []string{sched.Addr()}, grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
		return seedNode.DialContext(ctx, "tcp", addr)
	}))
	seed.hostID = seedClient.HostID()

	// The scheduler health-checks seed hosts every 30 s (not configurable).
	select {
	case <-seed.checked:
	case <-time.After(2*schedtest.SeedPeerRefreshInterval + 30*time.Second):
		t.Fatal("the scheduler never health-checked the seed")
	}

	url := fmt.Sprintf("http://%s/v2/preheat/app/manifests/v1", reg.Host)
	if err := seedClient.PreheatImage(ctx, &schedulerv2.PreheatImageRequest{Url: url, Scope: "single_seed_peer"}); err != nil {
		t.Fatal(err)
	}
	var gotURLs []string
	for len(gotURLs) < len(wantURLs) {
		select {
		case req := <-seed.calls:
			d := req.GetDownload()
			gotURLs = append(gotURLs, d.GetUrl())
			t.Logf("DownloadTask: url %s, piece_length %v, type %s, priority %s, tag %q, application %q, filtered_query_params %d, request_header %v, remote_ip %s, timeout %s",
				d.GetUrl(), d.PieceLength, d.GetType(), d.GetPriority(), d.GetTag(), d.GetApplication(),
				len(d.GetFilteredQueryParams()), d.GetRequestHeader(), d.GetRemoteIp(), d.GetTimeout().AsDuration())
			// The task id travels only in the scheduler's balancer context: the seed computes it.
			if got, want := seed.taskID(d), schedclient.TaskID(d.GetUrl(), 0); got != want {
				t.Errorf("seed's task id %s for %s, TaskID says %s", got, d.GetUrl(), want)
			}
		case <-time.After(eventWait):
			t.Fatalf("DownloadTask for %v only, want %v\n%s", gotURLs, wantURLs, tail(sched.Log(), 30))
		}
	}
	slices.Sort(gotURLs)
	if !slices.Equal(gotURLs, wantURLs) {
		t.Errorf("DownloadTask URLs %v, want %v", gotURLs, wantURLs)
	}
}

// pushImage pushes an OCI image (a config and two small layers) to repo:tag and returns the
// digests of the blobs its manifest references.
func pushImage(t *testing.T, client *http.Client, base, repo, tag string) []string {
	t.Helper()
	type desc struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
		Size      int    `json:"size"`
	}
	put := func(mediaType string, data []byte) desc {
		sum := sha256.Sum256(data)
		d := desc{MediaType: mediaType, Digest: "sha256:" + hex.EncodeToString(sum[:]), Size: len(data)}
		resp, err := client.Post(base+"/v2/"+repo+"/blobs/uploads/", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc, err := resp.Location()
		if err != nil || resp.StatusCode != http.StatusAccepted {
			t.Fatalf("start upload: %s, %v", resp.Status, err)
		}
		q := loc.Query()
		q.Set("digest", d.Digest)
		loc.RawQuery = q.Encode()
		req, err := http.NewRequest(http.MethodPut, loc.String(), bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/octet-stream")
		resp, err = client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("upload %s: %s", d.Digest, resp.Status)
		}
		return d
	}
	config := put("application/vnd.oci.image.config.v1+json", []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`))
	var layers []desc
	for i := range 2 {
		layers = append(layers, put("application/vnd.oci.image.layer.v1.tar", bytes.Repeat([]byte{byte('a' + i)}, 4096)))
	}
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": config, "layers": layers,
	})
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPut, base+"/v2/"+repo+"/manifests/"+tag, bytes.NewReader(manifest))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("put manifest: %s", resp.Status)
	}
	return []string{config.Digest, layers[0].Digest, layers[1].Digest}
}

// stubSeed records DownloadTask calls and answers like a seed that already has the task.
type stubSeed struct {
	dfdaemonv2.UnimplementedDfdaemonUploadServer
	hostID  string
	checked chan struct{}
	calls   chan *dfdaemonv2.DownloadTaskRequest
}

// taskID computes the task id the way a seed must: from the download's own fields (Dragonfly's v2 URL-based id).
func (s *stubSeed) taskID(d interface {
	GetUrl() string
	GetTag() string
	GetApplication() string
	GetFilteredQueryParams() []string
}) string {
	return schedclient.TaskIDFor(d.GetUrl(), 0, d.GetTag(), d.GetApplication(), d.GetFilteredQueryParams())
}

func (s *stubSeed) DownloadTask(req *dfdaemonv2.DownloadTaskRequest, stream dfdaemonv2.DfdaemonUpload_DownloadTaskServer) error {
	s.calls <- req
	return stream.Send(&dfdaemonv2.DownloadTaskResponse{
		HostId: s.hostID, TaskId: s.taskID(req.GetDownload()), PeerId: schedclient.PeerID(),
		Response: &dfdaemonv2.DownloadTaskResponse_DownloadTaskStartedResponse{
			DownloadTaskStartedResponse: &dfdaemonv2.DownloadTaskStartedResponse{IsFinished: true},
		},
	})
}

// countingHealth closes checked at the first Check.
type countingHealth struct {
	*health.Server
	checked chan struct{}
	once    sync.Once
}

func (h *countingHealth) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	h.once.Do(func() { close(h.checked) })
	return h.Server.Check(ctx, req)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
