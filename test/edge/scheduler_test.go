package edge_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	commonv2 "d7y.io/api/v2/pkg/apis/common/v2"
	dfdaemonv2 "d7y.io/api/v2/pkg/apis/dfdaemon/v2"

	"github.com/dfnydus/dfnydus/peer/upload"
	schedclient "github.com/dfnydus/dfnydus/scheduler-client"
	"github.com/dfnydus/dfnydus/test/internal/schedtest"
)

// schedulerTriggersSeed registers a peer for blob b with a priority that makes the real scheduler
// ask a seed peer to download it (DownloadTask from the scheduler's own address), and waits until
// the seed holds the task: the scheduler's calls are accepted.
func schedulerTriggersSeed(t *testing.T, sched *schedtest.Scheduler, seed *peerProc, url string, size int) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := schedclient.New(ctx, schedclient.Config{Addrs: []string{sched.Addr()},
		Host: schedclient.Host{Hostname: "edge-client", IP: "127.0.0.1", Port: freePort(t), DownloadPort: freePort(t)}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	stat := dfdaemonv2.NewDfdaemonUploadClient(seed.dialUpload(t, stranger))
	// The scheduler finds seed peers by health-checking them every 30 s, and triggers one only for
	// a task it has not scheduled yet: register new tasks (the same blob in another repository)
	// until it knows this seed and triggers it.
	deadline := time.Now().Add(2*schedtest.SeedPeerRefreshInterval + 30*time.Second)
	taskID := ""
	for i := 0; time.Now().Before(deadline); i++ {
		url := strings.Replace(url, "/v2/edge/app/", fmt.Sprintf("/v2/edge/app%d/", i), 1)
		taskID = schedclient.TaskID(url, pieceLength)
		s, err := c.Register(ctx, schedclient.TaskSpec{TaskID: taskID, URL: url, PieceLength: pieceLength,
			ContentLength: uint64(size), Priority: commonv2.Priority_LEVEL6})
		if err != nil {
			t.Fatal(err)
		}
		for wait := time.Now().Add(5 * time.Second); time.Now().Before(wait); time.Sleep(200 * time.Millisecond) {
			task, err := stat.StatTask(ctx, &dfdaemonv2.StatTaskRequest{TaskId: taskID})
			if err == nil && task.GetState() == upload.TaskStateSucceeded {
				s.Close()
				return
			}
		}
		s.Close()
	}
	t.Fatalf("the seed never held task %s: the scheduler's DownloadTask was not accepted\n%s", taskID, tail(sched.Log(), 30))
}
