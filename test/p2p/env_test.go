// Package p2p_test is the end-to-end suite of issue 5: dfnydus daemons in network namespaces, each
// a Dragonfly peer coordinated by the real scheduler (d7y.io/dragonfly/v2 v2.5.1), mounting the same
// nydus image from the real docker-registry behind a 100 Mbit/s tc link. It prints the figures the
// issue asks for (registry bytes against the unique bytes the workload needs, the slowest peer
// against one peer alone) and checks the fault scenarios. Figures are printed, never compared with
// timing thresholds; byte ratios are asserted.
package p2p_test

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dfnydus/dfnydus/peer"
	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/bootstrap"
	"github.com/dfnydus/dfnydus/test/internal/netns"
	"github.com/dfnydus/dfnydus/test/internal/schedtest"
	"github.com/dfnydus/dfnydus/test/internal/testenv"
)

const (
	linkMbit     = 100
	dataFiles    = 12
	dataFileSize = 10 << 20
	cmdTimeout   = 10 * time.Minute
)

// cluster is the network, the registry, the scheduler and the image every scenario shares.
type cluster struct {
	nw        *netns.Network
	regNode   *netns.Node
	reg       *netns.Registry
	sched     *schedtest.Scheduler
	ref       string      // the nydus image
	img       *rafs.Image // its bootstrap
	blobs     []string    // registry URLs of its data blobs
	unique    int64       // compressed bytes of its distinct chunks: what reading every file needs
	nodes     map[string]*netns.Node
	schedNode *netns.Node
}

func requireTools(t *testing.T) {
	t.Helper()
	testenv.RequireRoot(t)
	for _, tool := range []string{"skopeo", "umoci", "tar", "nsenter", schedtest.RedisBinary} {
		testenv.RequireTool(t, tool)
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
}

// p2pLayout builds (once, cached next to the debootstrap tree) an OCI layout "img" of two gzip
// layers: a Debian minbase rootfs and 120 MiB of random data: a 330 MB image.
func p2pLayout(t *testing.T) string {
	t.Helper()
	root := testenv.Rootfs(t)
	layout := filepath.Join(filepath.Dir(root), "p2p-layout")
	if _, err := os.Stat(filepath.Join(layout, "index.json")); err == nil {
		return layout
	}
	tmp := layout + ".tmp"
	os.RemoveAll(tmp)
	work := testenv.TempDir(t)
	data := filepath.Join(work, "data", "opt", "p2p-data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < dataFiles; i++ {
		f, err := os.Create(filepath.Join(data, fmt.Sprintf("blob-%02d.bin", i)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.CopyN(f, rand.Reader, dataFileSize); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	testenv.MustExec(t, "umoci", "init", "--layout", tmp)
	testenv.MustExec(t, "umoci", "new", "--image", tmp+":img")
	for i, src := range []string{root, filepath.Join(work, "data")} {
		tarball := filepath.Join(work, fmt.Sprintf("l%d.tar", i))
		testenv.MustExec(t, "tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-C", src, "-cf", tarball, ".")
		testenv.MustExec(t, "umoci", "raw", "add-layer", "--image", tmp+":img", tarball)
		os.Remove(tarball)
	}
	if err := os.Rename(tmp, layout); err != nil {
		t.Fatal(err)
	}
	return layout
}

func newCluster(t *testing.T, peers ...string) *cluster {
	t.Helper()
	requireTools(t)
	layout := p2pLayout(t)
	c := &cluster{nodes: map[string]*netns.Node{}}
	c.nw = netns.Start(t, netns.Options{})
	c.regNode = c.nw.MustAddNode(t, "registry")
	schedNode := c.nw.MustAddNode(t, "sched")
	c.schedNode = schedNode
	for _, p := range peers {
		c.nodes[p] = c.nw.MustAddNode(t, p)
	}
	c.reg = netns.MustStartRegistry(t, c.regNode, 5000)
	ociRef := c.reg.Host + "/p2p:v1"
	c.ref = c.reg.Host + "/p2p-nydus:v1"
	mustRun(t, c.regNode.Command, "skopeo", "copy", "--quiet", "--dest-tls-verify=false", "oci:"+layout+":img", "docker://"+ociRef)
	mustRun(t, c.regNode.Command, testenv.Binary(t), "convert", "--log-level", "warn", "--plain-http",
		"--work-dir", filepath.Join(testenv.TempDir(t), "work"), ociRef, c.ref)
	c.loadImage(t)
	c.sched = schedtest.Start(t, schedtest.Options{ListenIP: schedNode.Addr.String(), Port: 8002, Redis: true,
		Command: func(name string, args ...string) *exec.Cmd {
			return schedNode.Command(context.Background(), name, args...)
		},
		DialContext: schedNode.DialContext})
	if err := c.regNode.ShapeEgress(context.Background(), netns.Shape{Rate: netns.Mbit(linkMbit)}); err != nil {
		t.Fatal(err)
	}
	return c
}

// loadImage reads the nydus manifest and bootstrap from the registry (from inside its node) and
// sums the compressed sizes of the image's distinct chunks.
func (c *cluster) loadImage(t *testing.T) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: c.regNode.DialContext}}
	defer hc.CloseIdleConnections()
	repo, tag, _ := strings.Cut(strings.TrimPrefix(c.ref, c.reg.Host+"/"), ":")
	req, _ := http.NewRequest("GET", "http://"+c.reg.Host+"/v2/"+repo+"/manifests/"+tag, nil)
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Layers []struct {
			Digest      string            `json:"digest"`
			Annotations map[string]string `json:"annotations"`
		} `json:"layers"`
	}
	err = json.NewDecoder(resp.Body).Decode(&m)
	resp.Body.Close()
	if err != nil || len(m.Layers) == 0 {
		t.Fatalf("manifest of %s: %v", c.ref, err)
	}
	boot := m.Layers[len(m.Layers)-1]
	resp, err = hc.Get("http://" + c.reg.Host + "/v2/" + repo + "/blobs/" + boot.Digest)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var raw []byte
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("bootstrap layer: no image.boot: %v", err)
		}
		if strings.HasSuffix(h.Name, "image.boot") {
			raw, err = io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	c.img, err = bootstrap.Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	_ = c.img.Walk(func(_ string, n *rafs.Node) error {
		if !n.Inode.IsReg() {
			return nil
		}
		for _, ch := range n.Inode.Chunks {
			k := fmt.Sprintf("%d:%d", ch.BlobIndex, ch.CompressedOffset)
			if !seen[k] {
				seen[k] = true
				c.unique += int64(ch.CompressedSize)
			}
		}
		return nil
	})
	for _, l := range m.Layers[:len(m.Layers)-1] {
		c.blobs = append(c.blobs, "http://"+c.reg.Host+"/v2/"+repo+"/blobs/"+l.Digest)
	}
}

// registryBytes is what the registry has sent over its (limited) link so far.
func (c *cluster) registryBytes(t *testing.T) int64 {
	t.Helper()
	cn, err := c.regNode.Counters(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return int64(cn.TxBytes)
}

// peerProc is a `dfnydus daemon` in a node's namespace with one mount of the image.
type peerProc struct {
	name   string
	node   *netns.Node
	dir    string
	socket string
	cache  string
	mp     string
	cmd    *exec.Cmd
	stderr *testenv.LogBuffer
	done   chan struct{}
}

type peerOpts struct {
	p2p      bool   // with the scheduler
	seed     bool   // announce as a super seed
	prefetch string // default off: only the workload reads
	env      []string
	dir      string // reuse a cache (restart)
}

func (c *cluster) startPeer(t *testing.T, name string, o peerOpts) *peerProc {
	t.Helper()
	nd := c.nodes[name]
	dir := o.dir
	if dir == "" {
		dir = testenv.TempDir(t)
	}
	sockDir, err := os.MkdirTemp("", "dfp2p-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	p := &peerProc{name: name, node: nd, dir: dir, socket: filepath.Join(sockDir, "c.sock"), cache: filepath.Join(dir, "cache"),
		mp: filepath.Join(dir, "mnt"), stderr: &testenv.LogBuffer{}, done: make(chan struct{})}
	if o.prefetch == "" {
		o.prefetch = "off"
	}
	sched := ""
	if o.p2p {
		sched = fmt.Sprintf(`scheduler:
  addrs: [%q]
  seed: %v
  advertiseIP: %s
  hostname: %s
`, c.sched.Addr(), o.seed, nd.Addr, name)
	}
	cfg := filepath.Join(dir, "dfnydus.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`cacheDir: %s
controlSocket: %s
prefetch:
  mode: %s
registry:
  plainHTTP: true
log:
  level: info
%s`, p.cache, p.socket, o.prefetch, sched)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(p.mp, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := testenv.Binary(t)
	if len(o.env) > 0 {
		bin = testenv.FaultBinary(t) // the faults are environment variables only that build reads
	}
	p.cmd = nd.Command(context.Background(), bin, "daemon", "--config", cfg)
	p.cmd.Env = append(os.Environ(), o.env...)
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("peer %s log (tail):\n%s", name, tail(p.stderr.String(), 40))
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(p.socket); err == nil {
			break
		}
		select {
		case <-p.done:
			t.Fatalf("peer %s exited: %s", name, p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("peer %s: no control socket: %s", name, p.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return p
}

// mount asks the peer's daemon to mount the image.
func (p *peerProc) mount(t *testing.T, ref string) {
	t.Helper()
	mustRun(t, p.node.Command, testenv.Binary(t), "mount", "--daemon-socket", p.socket, "--plain-http", ref, p.mp)
}

// stop ends the daemon with SIGTERM (it unmounts), then SIGKILL; a mount left behind is detached.
func (p *peerProc) stop(t *testing.T) {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(20 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	_ = unix.Unmount(p.mp, unix.MNT_DETACH)
}

// kill9 kills the daemon and detaches its dead mount.
func (p *peerProc) kill9() {
	_ = p.cmd.Process.Kill()
	<-p.done
	_ = unix.Unmount(p.mp, unix.MNT_DETACH)
}

// workload reads every regular file of the mount (like a container whose start touches the whole
// image) and returns a digest of names and contents, and how long it took.
func (p *peerProc) workload(t *testing.T) (string, time.Duration, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	start := time.Now()
	cmd := exec.CommandContext(ctx, "sh", "-c", `cd "$1" && find . -type f -print0 | sort -z | xargs -0 cat | md5sum`, "sh", p.mp)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", time.Since(start), fmt.Errorf("workload on %s: %v: %s", p.name, err, out)
	}
	return strings.Fields(string(out))[0], time.Since(start), nil
}

// metricLabel sums the samples of a metric whose labels contain label (e.g. from="parent").
func (p *peerProc) metricLabel(t *testing.T, name, label string) float64 {
	t.Helper()
	return p.metricMatching(t, name, label)
}

// metric reads one sample of the daemon's Prometheus metrics from the mount's API socket.
func (p *peerProc) metric(t *testing.T, name string) float64 {
	t.Helper()
	return p.metricMatching(t, name, "")
}

func (p *peerProc) metricMatching(t *testing.T, name, label string) float64 {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", peer.SocketPath(p.cache, p.mp))
	}}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get("http://mount/metrics")
	if err != nil {
		t.Fatalf("peer %s metrics: %v", p.name, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var sum float64
	for sc.Scan() {
		line := sc.Text()
		if (strings.HasPrefix(line, name+" ") || strings.HasPrefix(line, name+"{")) && strings.Contains(line, label) {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			sum += v
		}
	}
	return sum
}

func mustRun(t *testing.T, ex func(ctx context.Context, prog string, args ...string) *exec.Cmd, prog string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := ex(ctx, prog, args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", prog, strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// runAll runs the workload on every peer at once and returns each digest and duration.
func runAll(t *testing.T, peers []*peerProc) ([]string, []time.Duration) {
	t.Helper()
	sums := make([]string, len(peers))
	durs := make([]time.Duration, len(peers))
	errs := make([]error, len(peers))
	var wg sync.WaitGroup
	for i, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sums[i], durs[i], errs[i] = p.workload(t)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return sums, durs
}
