// Package edge_test attacks a running `dfnydus daemon` at its network edge, the upload port
// (DfdaemonUpload gRPC) and the piece port (Vortex), with the real Dragonfly scheduler at
// 127.0.0.1 and callers on other loopback addresses.
package edge_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	commonv2 "d7y.io/api/v2/pkg/apis/common/v2"
	dfdaemonv2 "d7y.io/api/v2/pkg/apis/dfdaemon/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dfnydus/dfnydus/peer/daemon"
	"github.com/dfnydus/dfnydus/peer/upload"
	"github.com/dfnydus/dfnydus/peer/vortex"
	schedclient "github.com/dfnydus/dfnydus/scheduler-client"
	"github.com/dfnydus/dfnydus/test/internal/schedtest"
)

// Callers: the scheduler runs at 127.0.0.1; strangers and the one allowed caller use other
// loopback addresses (Linux routes all of 127.0.0.0/8 to lo).
const (
	stranger = "127.0.0.9"
	allowed  = "127.0.0.10"
)

// Limits of the seed under test.
const (
	pieceLength = 16 << 20 // larger than what loopback socket buffers hold; the store's largest chunk
	rateLimit   = 8 << 20  // bytes/s
	ioTimeout   = time.Second
	idleConns   = 300
)

func content(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed)})
	_, _ = r.Read(b)
	return b
}

// downloadTask asks cc to download d and returns the stream's end (io.EOF on success).
func downloadTask(t *testing.T, cc *grpc.ClientConn, d *commonv2.Download) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
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

func wantStatus(t *testing.T, what string, err error, code codes.Code, msg string) {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != code || st.Message() != msg {
		t.Errorf("%s: %v, want %s %q", what, err, code, msg)
	}
}

// downloadPieceRequest is a raw Vortex DownloadPiece packet.
func downloadPieceRequest(taskID string, number uint32) []byte {
	b := []byte{1, 0}
	b = binary.BigEndian.AppendUint32(b, vortex.TaskIDSize+4)
	b = append(b, taskID...)
	return binary.BigEndian.AppendUint32(b, number)
}

func TestEdge(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	sched := schedtest.Start(t, schedtest.Options{})
	blobA := content(1, pieceLength+(5<<20)) // two pieces
	blobB := content(2, 1<<20)
	reg := newOrigin(t, blobA, blobB)

	seed := startPeer(t, sched.Addr(), true, "  pieceLength: 16MiB", `upload:
  allowedCallers: ["`+allowed+`"]
  maxConnections: `+strconv.Itoa(idleConns)+`
  maxConcurrentPieces: 1
  rateLimit: 8MiB
  ioTimeout: 1s
`)
	normal := startPeer(t, sched.Addr(), false, "", "")

	t.Run("300 idle piece connections: bounded memory, control API answers, extra ones closed", func(t *testing.T) {
		idleConnections(t, seed)
	})
	t.Run("DownloadTask from a caller that is not the scheduler is refused", func(t *testing.T) {
		url := reg.blobURL(blobB)
		for _, p := range []struct {
			name string
			p    *peerProc
		}{{"seed", seed}, {"normal peer", normal}} {
			err := downloadTask(t, p.p.dialUpload(t, stranger), &commonv2.Download{Url: url})
			wantStatus(t, p.name, err, codes.PermissionDenied, upload.MsgPermissionDenied)
		}
		// A normal peer refuses the allowed caller too: only seeds download for others.
		err := downloadTask(t, normal.dialUpload(t, allowed), &commonv2.Download{Url: url})
		wantStatus(t, "normal peer, allowed caller", err, codes.PermissionDenied, upload.MsgPermissionDenied)
		if n := reg.requests.Load(); n != 0 {
			t.Errorf("the origin received %d requests from refused downloads", n)
		}
	})
	t.Run("hijacked task ids and foreign URLs are refused", func(t *testing.T) {
		urlA, urlB := reg.blobURL(blobA), reg.blobURL(blobB)
		// The exact id of blob A's task (URL-based, as the scheduler computes it), with blob B's URL.
		hijack := urlA + commonv2.TaskType_STANDARD.String()
		if schedclient.TaskIDByContent(hijack) != schedclient.TaskID(urlA, 0) {
			t.Fatal("the hijack content does not produce blob A's task id")
		}
		other := "other"
		cc := seed.dialUpload(t, allowed)
		for _, tc := range []struct {
			name string
			d    *commonv2.Download
		}{
			{"blob A's task id, blob B's URL", &commonv2.Download{Url: urlB, ContentForCalculatingTaskId: &hijack}},
			{"content_for_calculating_task_id", &commonv2.Download{Url: urlA, ContentForCalculatingTaskId: &other}},
			{"blob-digest task id", &commonv2.Download{Url: urlB, EnableTaskIdBasedBlobDigest: true}},
			{"https for a plain-http registry", &commonv2.Download{Url: strings.Replace(urlA, "http://", "https://", 1)}},
			{"not a blob URL", &commonv2.Download{Url: reg.srv.URL + "/v2/edge/app/manifests/latest"}},
			{"internal service", &commonv2.Download{Url: "http://169.254.169.254/latest/meta-data/"}},
		} {
			wantStatus(t, tc.name, downloadTask(t, cc, tc.d), codes.InvalidArgument, upload.MsgInvalid)
		}
		if n := reg.requests.Load(); n != 0 {
			t.Errorf("the origin received %d requests from refused downloads", n)
		}
	})

	taskA := ""
	t.Run("the allowed caller's DownloadTask is served", func(t *testing.T) {
		pl := uint64(pieceLength)
		d := &commonv2.Download{Url: reg.blobURL(blobA), PieceLength: &pl}
		if err := downloadTask(t, seed.dialUpload(t, allowed), d); !errors.Is(err, io.EOF) {
			t.Fatalf("DownloadTask: %v", err)
		}
		taskA = schedclient.TaskIDByURL(d.GetUrl(), d.PieceLength, "", "", nil, "")
	})
	if taskA == "" {
		t.FailNow()
	}
	t.Run("piece errors carry a fixed message", func(t *testing.T) {
		c := vortex.NewClient(vortex.ClientOptions{})
		defer c.Close()
		unknown := strings.Repeat("ab", 32)
		for _, req := range []struct {
			task   string
			number uint32
		}{{unknown, 0}, {taskA, 7}} {
			_, _, err := c.DownloadPiece(context.Background(), seed.pieceAddr, req.task, req.number)
			var re *vortex.RemoteError
			if !errors.As(err, &re) || re.Code != vortex.CodeNotFound || re.Message != vortex.MsgNotFound {
				t.Errorf("piece %d of %s: %v, want NotFound %q", req.number, req.task[:8], err, vortex.MsgNotFound)
			}
		}
	})
	t.Run("a reader that never reads is cut after ioTimeout and frees its piece slot", func(t *testing.T) {
		slowReader(t, seed, taskA, blobA[:pieceLength])
	})
	t.Run("the scheduler's DownloadTask is accepted", func(t *testing.T) {
		schedulerTriggersSeed(t, sched, seed, reg.blobURL(blobB), len(blobB))
	})
	t.Run("the upload rate limit holds", func(t *testing.T) {
		c := vortex.NewClient(vortex.ClientOptions{})
		defer c.Close()
		start := time.Now()
		_, got, err := c.DownloadPiece(context.Background(), seed.pieceAddr, taskA, 0)
		if err != nil || !bytes.Equal(got, blobA[:pieceLength]) {
			t.Fatalf("piece 0: %v", err)
		}
		el := time.Since(start)
		bps := float64(len(got)) / el.Seconds()
		t.Logf("%d MiB in %s: %.1f MiB/s (limit %d MiB/s)", len(got)>>20, el.Round(time.Millisecond), bps/(1<<20), rateLimit>>20)
		// One burst (64 KiB) may go ahead of the rate; the margin is for a busy machine's timing only.
		if bps > rateLimit*1.25 {
			t.Errorf("served at %.1f MiB/s, over the %d MiB/s limit", bps/(1<<20), rateLimit>>20)
		}
	})
}

func idleConnections(t *testing.T, p *peerProc) {
	before := p.rss(t)
	conns := make([]net.Conn, 0, idleConns)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range idleConns {
		c, err := net.Dial("tcp", p.pieceAddr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	// Connections over the cap are closed at once.
	for i := range 5 {
		c, err := net.Dial("tcp", p.pieceAddr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := c.Read(make([]byte, 1))
		c.Close()
		var ne net.Error
		if n != 0 || err == nil || (errors.As(err, &ne) && ne.Timeout()) {
			t.Errorf("connection %d over the cap: read %d, %v; want it closed", idleConns+i+1, n, err)
		}
	}
	cl, err := daemon.Dial(p.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cl.List(ctx); err != nil {
		t.Fatalf("control API: %v", err)
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("control API answered in %s with %d idle connections open, want < 1s", el, idleConns)
	}
	after := p.rss(t)
	t.Logf("daemon RSS %d MiB before, %d MiB with %d idle piece connections", before>>20, after>>20, idleConns)
	if after-before >= 64<<20 {
		t.Errorf("RSS grew by %d MiB for %d idle connections, want < 64 MiB", (after-before)>>20, idleConns)
	}
	// Held connections still work: the first one answers a request.
	if _, err := conns[0].Write(downloadPieceRequest(strings.Repeat("cd", 32), 0)); err != nil {
		t.Fatal(err)
	}
	_ = conns[0].SetReadDeadline(time.Now().Add(5 * time.Second))
	hdr := make([]byte, vortex.HeaderSize)
	if _, err := io.ReadFull(conns[0], hdr); err != nil || vortex.Tag(hdr[1]) != vortex.TagError {
		t.Errorf("a held connection's request: %v, tag %d; want an Error packet", err, hdr[1])
	}
}

func slowReader(t *testing.T, p *peerProc, taskID string, want []byte) {
	nc, err := net.Dial("tcp", p.pieceAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := nc.Write(downloadPieceRequest(taskID, 0)); err != nil {
		t.Fatal(err)
	}
	// The seed has one piece slot. Never reading, this reader stalls the seed's writes once the
	// socket buffers are full (a piece is larger than they hold); ioTimeout later the seed cuts
	// the connection and frees the slot. Were the slot still held, the download below would wait
	// ioTimeout for it and get "unavailable".
	time.Sleep(3 * ioTimeout)
	c := vortex.NewClient(vortex.ClientOptions{})
	defer c.Close()
	if _, got, err := c.DownloadPiece(context.Background(), p.pieceAddr, taskID, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("download while the slow reader is connected: %v", err)
	}
	// What the seed had written before the cut is still in the socket buffers; then the stream
	// ends short of the piece.
	_ = nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	n, err := io.Copy(io.Discard, nc)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the slow reader's connection is still open: %d bytes read", n)
	}
	if n >= int64(len(want)) {
		t.Errorf("the slow reader got %d bytes, the whole piece: the seed did not cut it", n)
	}
	t.Logf("the slow reader got %d of %d bytes, then the cut (%v)", n, len(want), err)
}
