// Package p2p_test is the end-to-end P2P suite: dfnydus daemons in network namespaces, each a
// Dragonfly peer coordinated by the real scheduler (d7y.io/dragonfly/v2 v2.5.1), mounting the same
// nydus image from the real docker-registry behind a 100 Mbit/s tc link. Every scenario prints one
// row of a table (slowest and median peer against the limit of the measured link, registry bytes
// against the unique bytes the workload needs, the daemons' CPU per GB read) and asserts what can
// be asserted without timing thresholds: the bytes every peer reads and the registry byte ratios.
// TestP2P runs small versions (make test), TestP2PBench and TestP2PLarge the full ones
// (make bench-p2p, make bench-p2p-large).
package p2p_test

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
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

const cmdTimeout = 20 * time.Minute

// cluster is the network, the registry, the scheduler and the image every scenario shares.
type cluster struct {
	nw        *netns.Network
	regNode   *netns.Node
	reg       *netns.Registry
	sched     *schedtest.Scheduler
	schedNode *netns.Node
	nodes     map[string]*netns.Node
	linkMbit  int64  // the registry's egress shape; 0: unshaped
	ref       string // the nydus image
	img       *rafs.Image
	blobs     []string // registry URLs of its data blobs
	blobSizes []int64
	files     []imageFile // its regular files, sorted by path
	unique    int64       // compressed bytes of its distinct chunks: what reading every file needs
	fileBytes int64       // the sizes of its regular files summed: what reading every file reads
	metaBytes int64       // manifest, config and bootstrap layer: what each peer fetches itself to mount
	probeURL  string      // a blob of probeBytes in the registry, to time the link with
	lists     string      // directory of workload file lists
	srcs      []layerSrc  // the trees the image was built from; nil when not kept
}

// imageFile is a regular file of the image and the chunks it needs.
type imageFile struct {
	path   string
	size   int64
	chunks []string // blob index and compressed offset: a chunk's identity
	csize  []int64
}

// clusterOpts say what a cluster is made of.
type clusterOpts struct {
	layout   string     // OCI layout with the image tagged "img"
	peers    []string   // node names for peers
	linkMbit int64      // registry egress rate; 0 leaves the link unshaped (veth speed)
	convert  []string   // extra `dfnydus convert` flags
	srcs     []layerSrc // the layout's trees, to check what peers read against; nil: peers only agree
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

// minbaseLayout is the image of `make test`: the Debian minbase tree as one layer (~170 MB of real
// files), built once and cached next to the debootstrap tree.
func minbaseLayout(t *testing.T) (string, []layerSrc) {
	t.Helper()
	root := testenv.Rootfs(t)
	srcs := []layerSrc{{dir: root}}
	return cachedLayout(t, filepath.Join(filepath.Dir(root), "p2p-minbase-layout"), srcs), srcs
}

// realisticLayout is the benchmark's image: the Debian minbase tree as one layer and the Go
// toolchain tree under /usr/local/go as a second (403 MB of real files, 20k files):
// the mix of small and large files a real container image has, and no random padding.
func realisticLayout(t *testing.T) (string, []layerSrc) {
	t.Helper()
	root := testenv.Rootfs(t)
	srcs := []layerSrc{{dir: root}, {dir: testenv.GoRoot(t), under: "usr/local/go"}}
	return cachedLayout(t, filepath.Join(filepath.Dir(root), "p2p-realistic-layout"), srcs), srcs
}

// layerSrc is a directory tree that becomes one layer, placed under a path of the image.
type layerSrc struct {
	dir   string
	under string // "" for the image's root
}

// cachedLayout builds (once) an OCI layout at dst with the image "img" of one gzip layer per src.
func cachedLayout(t *testing.T, dst string, srcs []layerSrc) string {
	t.Helper()
	if _, err := os.Stat(filepath.Join(dst, "index.json")); err == nil {
		return dst
	}
	tmp := dst + ".tmp"
	os.RemoveAll(tmp)
	work := testenv.TempDir(t)
	testenv.MustExec(t, "umoci", "init", "--layout", tmp)
	testenv.MustExec(t, "umoci", "new", "--image", tmp+":img")
	for i, src := range srcs {
		tarball := filepath.Join(work, fmt.Sprintf("l%d.tar", i))
		args := []string{"--xattrs", "--xattrs-include=*", "--numeric-owner", "-C", src.dir}
		if src.under != "" {
			args = append(args, "--transform", `s,^\.,`+src.under+`,`)
		}
		testenv.MustExec(t, "tar", append(args, "-cf", tarball, ".")...)
		testenv.MustExec(t, "umoci", "raw", "add-layer", "--image", tmp+":img", tarball)
		os.Remove(tarball)
	}
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
	return dst
}

// newCluster starts the network (a node for the registry, one for the scheduler, one per peer),
// pushes the layout to the registry, converts it to nydus there, starts the scheduler and shapes
// the registry's link.
func newCluster(t *testing.T, o clusterOpts) *cluster {
	t.Helper()
	requireTools(t)
	c := &cluster{nodes: map[string]*netns.Node{}, linkMbit: o.linkMbit, lists: testenv.TempDir(t), srcs: o.srcs}
	c.nw = netns.Start(t, netns.Options{})
	c.regNode = c.nw.MustAddNode(t, "registry")
	c.schedNode = c.nw.MustAddNode(t, "sched")
	for _, p := range o.peers {
		c.nodes[p] = c.nw.MustAddNode(t, p)
	}
	c.reg = netns.MustStartRegistry(t, c.regNode, 5000)
	ociRef := c.reg.Host + "/p2p:v1"
	c.ref = c.reg.Host + "/p2p-nydus:v1"
	mustRun(t, c.regNode.Command, "skopeo", "copy", "--quiet", "--dest-tls-verify=false", "oci:"+o.layout+":img", "docker://"+ociRef)
	work := testenv.TempDir(t)
	mustRun(t, c.regNode.Command, testenv.Binary(t), append([]string{"convert", "--log-level", "warn", "--plain-http",
		"--work-dir", filepath.Join(work, "work")}, append(o.convert, ociRef, c.ref)...)...)
	os.RemoveAll(work) // convert keeps built blobs there: as large as the image
	c.loadImage(t)
	c.pushProbe(t)
	// The upstream retryInterval (500ms), not schedtest's quicker 100ms: peers that start together
	// wait for the first to hold a piece, and 4 pauses of 100ms under CI load were too short for
	// that (the scheduler sent 3 of 8 peers back to source and the registry sent 2x the blob).
	c.sched = schedtest.Start(t, schedtest.Options{ListenIP: c.schedNode.Addr.String(), Port: 8002, Redis: true,
		RetryInterval: 500 * time.Millisecond,
		Command: func(name string, args ...string) *exec.Cmd {
			return c.schedNode.Command(context.Background(), name, args...)
		},
		DialContext: c.schedNode.DialContext})
	if o.linkMbit > 0 {
		if err := c.regNode.ShapeEgress(context.Background(), netns.Shape{Rate: netns.Mbit(o.linkMbit)}); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// registryClient talks to the registry from inside its own node.
func (c *cluster) registryClient() *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: c.regNode.DialContext}}
}

// loadImage reads the nydus manifest and bootstrap from the registry (from inside its node), lists
// the image's regular files and sums the compressed sizes of its distinct chunks.
func (c *cluster) loadImage(t *testing.T) {
	t.Helper()
	hc := c.registryClient()
	defer hc.CloseIdleConnections()
	repo, tag, _ := strings.Cut(strings.TrimPrefix(c.ref, c.reg.Host+"/"), ":")
	req, _ := http.NewRequest("GET", "http://"+c.reg.Host+"/v2/"+repo+"/manifests/"+tag, nil)
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Config struct {
			Size int64 `json:"size"`
		} `json:"config"`
		Layers []struct {
			Digest string `json:"digest"`
			Size   int64  `json:"size"`
		} `json:"layers"`
	}
	err = json.NewDecoder(resp.Body).Decode(&m)
	resp.Body.Close()
	if err != nil || len(m.Layers) == 0 {
		t.Fatalf("manifest of %s: %v", c.ref, err)
	}
	boot := m.Layers[len(m.Layers)-1]
	c.metaBytes = resp.ContentLength + m.Config.Size + boot.Size
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
	_ = c.img.Walk(func(p string, n *rafs.Node) error {
		if !n.Inode.IsReg() {
			return nil
		}
		f := imageFile{path: p, size: int64(n.Inode.Size)}
		for _, ch := range n.Inode.Chunks {
			f.chunks = append(f.chunks, fmt.Sprintf("%d:%d", ch.BlobIndex, ch.CompressedOffset))
			f.csize = append(f.csize, int64(ch.CompressedSize))
		}
		c.files = append(c.files, f)
		c.fileBytes += f.size
		return nil
	})
	sort.Slice(c.files, func(i, j int) bool { return c.files[i].path < c.files[j].path })
	c.unique = uniqueBytes(c.files)
	for _, l := range m.Layers[:len(m.Layers)-1] {
		c.blobs = append(c.blobs, "http://"+c.reg.Host+"/v2/"+repo+"/blobs/"+l.Digest)
		c.blobSizes = append(c.blobSizes, l.Size)
	}
}

// uniqueBytes is the compressed size of the distinct chunks files need: what reading them fetches
// at the least.
func uniqueBytes(files []imageFile) int64 {
	seen := map[string]bool{}
	var n int64
	for _, f := range files {
		for i, k := range f.chunks {
			if !seen[k] {
				seen[k] = true
				n += f.csize[i]
			}
		}
	}
	return n
}

// workload is a list of the image's files a peer reads (cat, in sorted order) and digests.
type workload struct {
	name   string
	list   string // NUL-separated relative paths
	files  int
	bytes  int64 // file data one run reads
	unique int64 // distinct compressed chunk bytes those files need
}

// wholeImage reads every regular file, like a container whose start touches the whole image.
func (c *cluster) wholeImage(t *testing.T) workload {
	return c.newWorkload(t, "every file", c.files)
}

// startSlice reads every 20th file in sorted path order: 5% of the files, spread over the whole
// image the way a container start touches a few files of every package.
func (c *cluster) startSlice(t *testing.T) workload {
	var fs []imageFile
	for i := 0; i < len(c.files); i += 20 {
		fs = append(fs, c.files[i])
	}
	return c.newWorkload(t, "every 20th file", fs)
}

func (c *cluster) newWorkload(t *testing.T, name string, fs []imageFile) workload {
	t.Helper()
	w := workload{name: name, files: len(fs), unique: uniqueBytes(fs)}
	var b strings.Builder
	for _, f := range fs {
		b.WriteString("." + f.path + "\x00")
		w.bytes += f.size
	}
	f, err := os.CreateTemp(c.lists, "list-")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(b.String()); err != nil {
		t.Fatal(err)
	}
	w.list = f.Name()
	return w
}

// checkSource fails t unless sum is the digest of w's files read from the trees the image was built
// from (a later layer wins, as in the image): peers agreeing is not enough, they must read the
// right bytes.
func (c *cluster) checkSource(t *testing.T, w workload, sum string) {
	t.Helper()
	if c.srcs == nil {
		return
	}
	raw, err := os.ReadFile(w.list)
	if err != nil {
		t.Fatal(err)
	}
	h := md5.New()
	for _, rel := range strings.Split(strings.TrimSuffix(string(raw), "\x00"), "\x00") {
		p := strings.TrimPrefix(rel, ".")
		src := ""
		for _, l := range c.srcs {
			if l.under == "" {
				src = filepath.Join(l.dir, p)
			} else if r, ok := strings.CutPrefix(p, "/"+l.under+"/"); ok {
				src = filepath.Join(l.dir, r)
			}
		}
		f, err := os.Open(src)
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	if want := hex.EncodeToString(h.Sum(nil)); sum != want {
		t.Fatalf("the peers read md5 %s of %q; the source trees give %s", sum, w.name, want)
	}
}

// probeBytes is the size of the blob the link is timed with.
const probeBytes = 32 << 20

// pushProbe uploads probeBytes of random data as a blob (before the link is shaped).
func (c *cluster) pushProbe(t *testing.T) {
	t.Helper()
	body := make([]byte, probeBytes)
	_, _ = rand.Read(body)
	dgst := fmt.Sprintf("sha256:%x", sha256.Sum256(body))
	hc := c.registryClient()
	defer hc.CloseIdleConnections()
	resp, err := hc.Post("http://"+c.reg.Host+"/v2/linkprobe/blobs/uploads/", "application/octet-stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := resp.Location()
	if err != nil {
		t.Fatalf("blob upload: %s: %v", resp.Status, err)
	}
	q := loc.Query()
	q.Set("digest", dgst)
	loc.RawQuery = q.Encode()
	req, _ := http.NewRequest("PUT", loc.String(), bytes.NewReader(body))
	req.ContentLength = int64(len(body))
	resp, err = hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("blob upload: %s", resp.Status)
	}
	c.probeURL = "http://" + c.reg.Host + "/v2/linkprobe/blobs/" + dgst
}

// linkRate times a GET of the probe blob from a peer's node through the registry's link: the
// rate every limit of the run is computed with, in bytes per second.
func (c *cluster) linkRate(t *testing.T, from string) float64 {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: c.nodes[from].DialContext}}
	defer hc.CloseIdleConnections()
	start := time.Now()
	resp, err := hc.Get(c.probeURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil || n != probeBytes {
		t.Fatalf("link probe: %d bytes: %v", n, err)
	}
	return float64(n) / time.Since(start).Seconds()
}

// settledRegistryBytes waits until the registry's link has been quiet for 3 s (at most 3 minutes)
// and returns registryBytes: a P2P task finishes its blob after the workload (the pieces no file
// it read lives in), and those bytes are part of what a run costs the registry.
func (c *cluster) settledRegistryBytes(t *testing.T) int64 {
	t.Helper()
	last, quiet := c.registryBytes(t), 0
	for deadline := time.Now().Add(3 * time.Minute); quiet < 3 && time.Now().Before(deadline); {
		time.Sleep(time.Second)
		n := c.registryBytes(t)
		if n-last < 64<<10 {
			quiet++
		} else {
			quiet = 0
		}
		last = n
	}
	return last
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
	p2p         bool   // with the scheduler
	seed        bool   // announce as a super seed
	prefetch    string // default off: only the workload reads
	pieceLength string // scheduler.pieceLength; "" lets the blob's size decide
	env         []string
	dir         string // reuse a cache (restart)
	fsDriver    string // the daemon's fsDriver; "" keeps the default (fuse)
}

// driverLine is the config line choosing the daemon's fsDriver, if one is given.
func driverLine(d string) string {
	if d == "" {
		return ""
	}
	return "fsDriver: " + d + "\n"
}

// peerMemoryCache keeps each daemon lean: 64 of them share the machine.
const peerMemoryCache = "8MiB"

func (c *cluster) startPeer(t *testing.T, name string, o peerOpts) *peerProc {
	t.Helper()
	return c.startPeers(t, []string{name}, o)[0]
}

// startPeers launches a daemon on each named node at once and waits until each answers.
func (c *cluster) startPeers(t *testing.T, names []string, o peerOpts) []*peerProc {
	t.Helper()
	var peers []*peerProc
	for _, n := range names {
		peers = append(peers, c.launchPeer(t, n, o))
	}
	for _, p := range peers {
		p.waitReady(t)
	}
	return peers
}

func (c *cluster) launchPeer(t *testing.T, name string, o peerOpts) *peerProc {
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
		if o.pieceLength != "" {
			sched += "  pieceLength: " + o.pieceLength + "\n"
		}
	}
	cfg := filepath.Join(dir, "dfnydus.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`cacheDir: %s
controlSocket: %s
memoryCache: %s
prefetch:
  mode: %s
registry:
  plainHTTP: true
log:
  level: info
%s%s`, p.cache, p.socket, peerMemoryCache, o.prefetch, driverLine(o.fsDriver), sched)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(p.mp, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := testenv.Binary(t)
	if len(o.env) > 0 {
		bin = testenv.FaultBinary(t) // the faults are environment variables only that build reads
	}
	args := []string{"daemon", "--config", cfg}
	if dir := os.Getenv("DFNYDUS_LAB_CPU_PROFILES"); dir != "" {
		// Profiling a lab run: each daemon writes its CPU profile there when it stops.
		args = append(args, "--cpu-profile", filepath.Join(dir, fmt.Sprintf("%s-%d.prof", name, time.Now().UnixNano())))
	}
	p.cmd = nd.Command(context.Background(), bin, args...)
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
	return p
}

func (p *peerProc) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := os.Stat(p.socket); err == nil {
			return
		}
		select {
		case <-p.done:
			t.Fatalf("peer %s exited: %s", p.name, p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("peer %s: no control socket: %s", p.name, p.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
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
			t.Logf("peer %s ignored SIGTERM for 20 s: killed", p.name)
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

// cpuSeconds is the daemon's user + system CPU time so far (/proc/PID/stat utime and stime; nsenter
// execs the daemon, so the pid is the daemon's). The FUSE readers (cat) are not counted: this is
// what the daemon costs.
func (p *peerProc) cpuSeconds(t *testing.T) float64 {
	t.Helper()
	s, err := processCPU(p.cmd.Process.Pid)
	if err != nil {
		t.Fatalf("peer %s: %v", p.name, err)
	}
	return s
}

// processCPU is a process's utime + stime so far, in seconds (/proc/PID/stat).
func processCPU(pid int) (float64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:])) // the name may hold spaces
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / clockTicks, nil
}

// machineCPU is the CPU-seconds every core of the machine has spent busy since boot (/proc/stat's
// cpu line: user, nice, system, irq, softirq and steal; idle and iowait left out).
func machineCPU(t *testing.T) float64 {
	t.Helper()
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		t.Fatal(err)
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		t.Fatalf("/proc/stat starts with %q", line)
	}
	var busy float64
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			t.Fatalf("/proc/stat: %q: %v", line, err)
		}
		busy += v
	}
	return busy / clockTicks
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat times: 100 on every Linux architecture Go runs.
const clockTicks = 100

// rss is the daemon's resident set (VmRSS of /proc/PID/status), in bytes.
func (p *peerProc) rss(t *testing.T) int64 {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatalf("peer %s: %v", p.name, err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// read runs the workload on the peer's mount: cat of its files in order, digested. It returns the
// digest and the CPU-seconds the readers spent (xargs, cat and md5sum, user + system: with FUSE the
// kernel's copies for cat, with kernel mode also EROFS's work, which runs in the reader's read).
func (p *peerProc) read(w workload) (string, float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	// times prints the shell's own and then its children's user and system time.
	cmd := exec.CommandContext(ctx, "bash", "-c", `set -o pipefail; cd "$1" && xargs -0 cat < "$2" | md5sum && times`, "bash", p.mp, w.list)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", 0, fmt.Errorf("workload %q on %s: %v: %s", w.name, p.name, err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) < 3 {
		return "", 0, fmt.Errorf("workload %q on %s: want md5sum and times, got %q", w.name, p.name, out)
	}
	cpu, err := childTimes(lines[len(lines)-1])
	if err != nil {
		return "", 0, fmt.Errorf("workload %q on %s: %w", w.name, p.name, err)
	}
	return strings.Fields(lines[0])[0], cpu, nil
}

// childTimes sums the user and system time of bash's `times` line ("0m1.250s 0m0.500s").
func childTimes(line string) (float64, error) {
	var sum float64
	f := strings.Fields(line)
	if len(f) != 2 {
		return 0, fmt.Errorf("times line %q", line)
	}
	for _, v := range f {
		m, s, ok := strings.Cut(strings.TrimSuffix(v, "s"), "m")
		mins, err1 := strconv.ParseFloat(m, 64)
		secs, err2 := strconv.ParseFloat(s, 64)
		if !ok || err1 != nil || err2 != nil {
			return 0, fmt.Errorf("times line %q", line)
		}
		sum += mins*60 + secs
	}
	return sum, nil
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

// run is one scenario's run: peers mount the image at the same moment and each reads the
// workload as soon as its mount is up.
type run struct {
	w         workload
	durs      []time.Duration // from the mount request to the workload's end, per peer
	mounted   []time.Duration // from the mount request to the mount's answer, per peer
	sums      []string        // workload digests, per peer
	regBytes  int64           // what the registry's link sent from the run's start until it was quiet again
	regByPeer []int64         // what the registry's access log says it sent each peer during the run
	sentBack  []bool          // which peers the scheduler sent back to source during the run
	cpu       []float64       // CPU-seconds of each daemon during the run
	readerCPU []float64       // CPU-seconds of each peer's readers (see peerProc.read)
	machine   float64         // CPU-seconds the whole machine spent during the run (every process and the kernel)
	rss       []int64         // VmRSS of each daemon at the end
	rate      float64         // the registry link's rate measured just before, bytes/s
	start     time.Time       // when the mounts were asked for
}

// mountAndRead measures the link from the first peer's node, then mounts the image on every peer
// at once and runs w on each; it fails t unless every peer read the same bytes.
func (c *cluster) mountAndRead(t *testing.T, peers []*peerProc, w workload) run {
	t.Helper()
	return c.mountAndReadDuring(t, peers, w, nil)
}

// mountAndReadDuring is mountAndRead with during running alongside the peers (from the moment the
// mounts are asked for); it returns once both are done.
func (c *cluster) mountAndReadDuring(t *testing.T, peers []*peerProc, w workload, during func()) run {
	t.Helper()
	r := run{w: w, durs: make([]time.Duration, len(peers)), mounted: make([]time.Duration, len(peers)), sums: make([]string, len(peers)),
		cpu: make([]float64, len(peers)), readerCPU: make([]float64, len(peers)), rss: make([]int64, len(peers))}
	r.rate = c.linkRate(t, peers[0].name)
	for i, p := range peers {
		r.cpu[i] = -p.cpuSeconds(t)
	}
	b0, sent0 := c.registryBytes(t), c.reg.SentTo()
	m0 := machineCPU(t)
	errs := make([]error, len(peers))
	start := time.Now()
	r.start = start
	var wg sync.WaitGroup
	if during != nil {
		wg.Add(1)
		go func() { defer wg.Done(); during() }()
	}
	for i, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if res := testenv.Exec(t, testenv.Binary(t), "mount", "--daemon-socket", p.socket, "--plain-http", c.ref, p.mp); res.Err != nil {
				errs[i] = fmt.Errorf("mount on %s: %v: %s", p.name, res.Err, res.Stderr)
				return
			}
			r.mounted[i] = time.Since(start)
			r.sums[i], r.readerCPU[i], errs[i] = p.read(w)
			r.durs[i] = time.Since(start)
		}()
	}
	wg.Wait()
	r.machine = machineCPU(t) - m0
	for i, p := range peers {
		r.cpu[i] += p.cpuSeconds(t)
		r.rss[i] = p.rss(t)
	}
	r.regBytes = c.settledRegistryBytes(t) - b0
	sent := c.reg.SentTo()
	r.regByPeer, r.sentBack = make([]int64, len(peers)), make([]bool, len(peers))
	for i, p := range peers {
		ip := p.node.Addr.String()
		r.regByPeer[i] = sent[ip] - sent0[ip]
		r.sentBack[i] = strings.Contains(p.stderr.String(), "scheduler: back to source")
	}
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for i, s := range r.sums {
		if s != r.sums[0] {
			t.Fatalf("peer %s read different bytes than %s: md5 %s, want %s", peers[i].name, peers[0].name, s, r.sums[0])
		}
	}
	return r
}

// explainRegistry says where a run's registry bytes went: per peer, what the registry's access log
// sent it and, when peers are the run's (still running), the piece bytes it counted from the source
// and from parents and whether the scheduler sent it back to source.
func (c *cluster) explainRegistry(t *testing.T, r run, peers []*peerProc, live bool) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("registry bytes by peer:")
	for i, p := range peers {
		if i >= len(r.regByPeer) {
			break
		}
		fmt.Fprintf(&b, " %s %.1f MB", p.name, mb(r.regByPeer[i]))
		if i < len(r.sentBack) && r.sentBack[i] {
			b.WriteString(" (sent back to source)")
		}
		if live {
			fmt.Fprintf(&b, " (pieces %.1f MB from source, %.1f MB from parents)",
				p.metricLabel(t, "dfnydus_p2p_piece_bytes_total", `from="source"`)/1e6,
				p.metricLabel(t, "dfnydus_p2p_piece_bytes_total", `from="parent"`)/1e6)
		}
		b.WriteString(";")
	}
	return b.String()
}

// blobBytes is what the registry sent during r minus what each peer fetches itself to mount (the
// manifest, the config and the bootstrap layer, which do not go through P2P): the blob data.
func (c *cluster) blobBytes(r run) int64 { return r.regBytes - int64(len(r.durs))*c.metaBytes }

// backToSource is how many peers of r the scheduler sent back to source.
func (r run) backToSource() int {
	n := 0
	for _, b := range r.sentBack {
		if b {
			n++
		}
	}
	return n
}

func (r run) slowest() time.Duration { return sortedDurs(r.durs)[len(r.durs)-1] }
func (r run) median() time.Duration  { return sortedDurs(r.durs)[len(r.durs)/2] }

// limit is the time the link needs for the bytes the workload needs, once.
func (r run) limit() time.Duration {
	return time.Duration(float64(r.w.unique) / r.rate * float64(time.Second))
}

// cpuPerGB is each daemon's CPU-seconds per GB of file data its workload read.
func (r run) cpuPerGB() []float64 {
	out := make([]float64, len(r.cpu))
	for i, s := range r.cpu {
		out[i] = s / (float64(r.w.bytes) / 1e9)
	}
	return out
}

func sortedDurs(d []time.Duration) []time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s
}

func medianDur(d []time.Duration) time.Duration { return sortedDurs(d)[len(d)/2] }

func medianF(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

func maxF(v []float64) float64 {
	m := v[0]
	for _, x := range v {
		m = max(m, x)
	}
	return m
}

func sumF(v []float64) float64 {
	var s float64
	for _, x := range v {
		s += x
	}
	return s
}

// report is the table every scenario adds a row to; it is printed and written to
// $DFNYDUS_P2P_REPORT when the test ends.
type report struct {
	mu    sync.Mutex
	title string
	rows  []string
	notes []string
}

func newReport(t *testing.T, title string) *report {
	rep := &report{title: title}
	t.Cleanup(func() {
		s := rep.String()
		t.Log("\n" + s)
		if out := os.Getenv("DFNYDUS_P2P_REPORT"); out != "" {
			if err := os.WriteFile(out, []byte(s), 0o644); err != nil {
				t.Error(err)
			}
		}
	})
	return rep
}

const reportHeader = "scenario                          peers  slowest s  median s  limit s  slowest/limit  registry MB  x unique  daemons CPU-s/GB  per-peer CPU-s/GB (median/max)  readers CPU-s/GB  machine CPU-s/GB"

// add is a row of runs that alternated with others: times are medians over the runs, registry
// bytes the largest run, CPU the median run.
func (rep *report) add(name string, runs ...run) {
	var slow, med, lim []time.Duration
	var reg int64
	var all, perMed, perMax, readers, machine []float64
	for _, r := range runs {
		gb := float64(len(r.durs)) * float64(r.w.bytes) / 1e9
		readers, machine = append(readers, sumF(r.readerCPU)/gb), append(machine, r.machine/gb)
		slow, med, lim = append(slow, r.slowest()), append(med, r.median()), append(lim, r.limit())
		reg = max(reg, r.regBytes)
		per := r.cpuPerGB()
		all = append(all, sumF(r.cpu)/(float64(len(r.cpu))*float64(r.w.bytes)/1e9))
		perMed, perMax = append(perMed, medianF(per)), append(perMax, maxF(per))
	}
	r := runs[0]
	row := fmt.Sprintf("%-33s %5d %10.2f %9.2f %8.2f %14.2f %12.1f %9.2f %17.2f %16.2f / %-10.2f %17.2f %17.2f",
		name, len(r.durs), medianDur(slow).Seconds(), medianDur(med).Seconds(), medianDur(lim).Seconds(),
		medianDur(slow).Seconds()/medianDur(lim).Seconds(), mb(reg), float64(reg)/float64(r.w.unique),
		medianF(all), medianF(perMed), medianF(perMax), medianF(readers), medianF(machine))
	if len(runs) > 1 {
		var parts []string
		for _, s := range slow {
			parts = append(parts, fmt.Sprintf("%.1f", s.Seconds()))
		}
		row += "   (slowest of each run: " + strings.Join(parts, " / ") + " s)"
	}
	rep.mu.Lock()
	rep.rows = append(rep.rows, row)
	rep.mu.Unlock()
}

// note adds a line under the table.
func (rep *report) note(format string, args ...any) {
	rep.mu.Lock()
	rep.notes = append(rep.notes, fmt.Sprintf(format, args...))
	rep.mu.Unlock()
}

func (rep *report) String() string {
	rep.mu.Lock()
	defer rep.mu.Unlock()
	return rep.title + "\n" + reportHeader + "\n" + strings.Join(rep.rows, "\n") + "\n" + strings.Join(rep.notes, "\n") + "\n"
}

func mb(n int64) float64 { return float64(n) / 1e6 }

func stopAll(t *testing.T, peers []*peerProc) {
	for _, p := range peers {
		p.stop(t)
	}
}
