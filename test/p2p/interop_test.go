package p2p_test

import (
	"context"
	"encoding/binary"
	"hash/crc32"
	"io"
	"net"
	"regexp"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"

	schedclient "github.com/dfnydus/dfnydus/scheduler-client"
)

// peerLogLine finds a task id and this peer's id in a daemon's "blob is a P2P task" log line.
var peerLogLine = regexp.MustCompile(`blob is a P2P task.*"task": "([0-9a-f]{64})", "peer": "([^"]+)"`)

// observer is a scheduler client that only looks (StatTask, StatPeer, ListHosts).
func (c *cluster) observer(t *testing.T, ctx context.Context) *schedclient.Client {
	t.Helper()
	sc, err := schedclient.New(ctx, schedclient.Config{Addrs: []string{c.sched.Addr()},
		Host: schedclient.Host{Hostname: "observer", IP: c.schedNode.Addr.String(), Port: 4999, DisableShared: true},
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return c.schedNode.DialContext(ctx, "tcp", addr)
		})}})
	if err != nil {
		t.Fatal(err)
	}
	return sc
}

// taskID is the Dragonfly task id of a blob URL when the piece length is not forced.
func taskID(blobURL string) string { return schedclient.TaskID(blobURL, 0) }

// checkInterop asserts what a Rust peer would see of our peers at the scheduler: task ids are
// TaskIDV2ByURLBased of the blob URLs, the tasks succeeded with the blobs' sizes and were
// downloaded by all the peers, the hosts are announced with their ports; and a piece fetched over
// Vortex from a peer decodes with the spec's field layout.
func (c *cluster) checkInterop(t *testing.T, peers []*peerProc) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sc := c.observer(t, ctx)
	defer sc.Close(ctx)
	for _, u := range c.blobs {
		id := taskID(u)
		// The peers fetch the pieces no file lives in (the blob's chunk table) after the workload,
		// to finish the task: wait for that.
		task, err := sc.StatTask(ctx, id)
		for err == nil && task.GetState() != "Succeeded" && ctx.Err() == nil {
			time.Sleep(200 * time.Millisecond)
			task, err = sc.StatTask(ctx, id)
		}
		if err != nil {
			t.Errorf("scheduler StatTask(%s) for %s: %v", id, u, err)
			continue
		}
		if task.GetState() != "Succeeded" || task.GetPeerCount() < uint32(len(peers)) || task.GetContentLength() == 0 || task.GetPieceCount() == 0 {
			t.Errorf("task %s: state %s, %d peers, %d bytes in %d pieces; want Succeeded by %d peers", id, task.GetState(), task.GetPeerCount(),
				task.GetContentLength(), task.GetPieceCount(), len(peers))
		}
	}
	// StatPeer of one of our peers, found by the ids its daemon logs, looks like a Rust peer's: the
	// task's peer on our host (ip and ports), finished.
	if m := peerLogLine.FindStringSubmatch(peers[0].stderr.String()); m == nil {
		t.Errorf("peer %s did not log its task and peer ids", peers[0].name)
	} else {
		sp, err := sc.StatPeer(ctx, m[1], m[2])
		for err == nil && sp.GetState() != "Succeeded" && ctx.Err() == nil {
			time.Sleep(200 * time.Millisecond)
			sp, err = sc.StatPeer(ctx, m[1], m[2])
		}
		switch {
		case err != nil:
			t.Errorf("scheduler StatPeer(%s, %s): %v", m[1], m[2], err)
		case sp.GetId() != m[2] || sp.GetTask().GetId() != m[1] || sp.GetState() != "Succeeded" ||
			sp.GetHost().GetIp() != peers[0].node.Addr.String() || sp.GetHost().GetPort() != 4000 || sp.GetHost().GetDownloadPort() != 4005:
			t.Errorf("scheduler StatPeer: peer %s of task %s in state %s on host %s:%d/%d; want %s of %s Succeeded on %s:4000/4005",
				sp.GetId(), sp.GetTask().GetId(), sp.GetState(), sp.GetHost().GetIp(), sp.GetHost().GetPort(), sp.GetHost().GetDownloadPort(),
				m[2], m[1], peers[0].node.Addr)
		}
	}
	// Only now, with the peer finished (the task may be Succeeded while this peer still completes
	// its last pieces), ask it for a piece.
	for _, u := range c.blobs {
		id := taskID(u)
		task, err := sc.StatTask(ctx, id)
		if err != nil {
			continue // reported above
		}
		// A piece over Vortex, decoded by hand from the spec (vortex-protocol docs/README.md):
		// header = packet id u8, tag u8, length u32 BE; DownloadPiece = 64-byte task id + u32 piece
		// number; PieceContent = u32 metadata length, metadata (number u32, offset u64, length u64,
		// digest len u32 + bytes, parent id len u32 + bytes, traffic type u8, cost u64, created at
		// u64), then the piece bytes.
		c.vortexPiece(t, peers[0], id, task.GetPieceCount()-1)
	}
	hosts, err := sc.ListHosts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, h := range hosts {
		if h.GetPort() == 4000 && h.GetDownloadPort() == 4005 {
			found[h.GetIp()] = true
		}
	}
	for _, p := range peers {
		if !found[p.node.Addr.String()] {
			t.Errorf("scheduler ListHosts has no host %s with ports 4000/4005", p.node.Addr)
		}
	}
}

func (c *cluster) vortexPiece(t *testing.T, p *peerProc, taskID string, number uint32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := p.node.DialContext(ctx, "tcp", net.JoinHostPort(p.node.Addr.String(), "4005"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	req := []byte{7, 0, 0, 0, 0, 68}
	req = append(req, taskID...)
	req = binary.BigEndian.AppendUint32(req, number)
	if _, err := conn.Write(req); err != nil {
		t.Fatal(err)
	}
	hdr := make([]byte, 6)
	if _, err := io.ReadFull(conn, hdr); err != nil {
		t.Fatal(err)
	}
	if hdr[1] != 1 {
		t.Fatalf("vortex answer tag %d, want 1 (PieceContent)", hdr[1])
	}
	// The header's length covers the metadata length and the metadata; the piece bytes follow
	// the TLV (vortex-protocol src/tlv/piece_content.rs).
	value := make([]byte, binary.BigEndian.Uint32(hdr[2:]))
	if _, err := io.ReadFull(conn, value); err != nil {
		t.Fatal(err)
	}
	mlen := binary.BigEndian.Uint32(value)
	if int(mlen) != len(value)-4 {
		t.Fatalf("PieceContent value of %d bytes with a metadata length of %d", len(value), mlen)
	}
	md := value[4 : 4+mlen]
	num := binary.BigEndian.Uint32(md)
	off := binary.BigEndian.Uint64(md[4:])
	length := binary.BigEndian.Uint64(md[12:])
	dlen := binary.BigEndian.Uint32(md[20:])
	digest := string(md[24 : 24+dlen])
	rest := md[24+dlen:]
	plen := binary.BigEndian.Uint32(rest)
	rest = rest[4+plen:]
	if len(rest) != 17 {
		t.Fatalf("piece metadata: %d bytes after the parent id, want 17 (traffic type, cost, created at)", len(rest))
	}
	traffic := rest[0]
	content := make([]byte, length)
	if _, err := io.ReadFull(conn, content); err != nil {
		t.Fatal(err)
	}
	if num != number || length != uint64(len(content)) || off == 0 && number != 0 {
		t.Errorf("vortex piece: number %d offset %d length %d with %d content bytes; asked for piece %d", num, off, length, len(content), number)
	}
	if want := "crc32:" + strconv.FormatUint(uint64(crc32.ChecksumIEEE(content)), 10); digest != want {
		t.Errorf("vortex piece digest %q, want %q", digest, want)
	}
	if traffic != 1 {
		t.Errorf("vortex traffic type %d, want 1 (REMOTE_PEER)", traffic)
	}
}
