package netns_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dfnydus/dfnydus/test/internal/netns"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// serveBytes serves body at / from a listener in nd and returns the URL.
func serveBytes(t *testing.T, nd *netns.Node, body []byte) string {
	t.Helper()
	ln, err := nd.Listen(ctxT(t), "tcp", net.JoinHostPort(nd.Addr.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(body)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String() + "/"
}

// fetchFrom GETs url from inside nd.
func fetchFrom(t *testing.T, nd *netns.Node, url string) []byte {
	t.Helper()
	tr := &http.Transport{DialContext: nd.DialContext}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctxT(t), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func hostLinks(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("ip", "-j", "link", "show").Output()
	if err != nil {
		t.Fatal(err)
	}
	var links []struct {
		Name string `json:"ifname"`
	}
	if err := json.Unmarshal(out, &links); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Name)
	}
	slices.Sort(names)
	return names
}

func TestNodesTalkOverTheBridgeAndCountBytes(t *testing.T) {
	before := hostLinks(t)
	n := netns.Start(t, netns.Options{})
	a, b := n.MustAddNode(t, "server"), n.MustAddNode(t, "client")
	if got := hostLinks(t); !slices.Equal(got, before) {
		t.Errorf("host links changed: %v, was %v", got, before)
	}
	if a.Addr != netip.MustParseAddr("10.213.0.1") || b.Addr != netip.MustParseAddr("10.213.0.2") {
		t.Errorf("addresses %s, %s: want 10.213.0.1 and .2 in order", a.Addr, b.Addr)
	}

	body := randomBytes(t, 4<<20)
	url := serveBytes(t, a, body)
	sa0, err := a.Counters(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	sb0, err := b.Counters(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := fetchFrom(t, b, url); !bytes.Equal(got, body) {
		t.Fatalf("fetched %d bytes, not the %d served", len(got), len(body))
	}
	sa, _ := a.Counters(ctxT(t))
	sb, _ := b.Counters(ctxT(t))
	sent, recv := sa.Sub(sa0).TxBytes, sb.Sub(sb0).RxBytes
	// Headers make the link carry a little more than the body; nothing else crosses it.
	for _, c := range []struct {
		what string
		n    int64
	}{{"server sent", sent}, {"client received", recv}} {
		if c.n < int64(len(body)) || c.n > int64(len(body))*11/10 {
			t.Errorf("%s %d bytes for a %d-byte body", c.what, c.n, len(body))
		}
	}
}

func TestCommandEntersOnlyTheNetworkNamespace(t *testing.T) {
	n := netns.Start(t, netns.Options{})
	nd := n.MustAddNode(t, "box")
	nsInode := func(link string) string {
		l, err := os.Readlink(link)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	out, err := nd.Command(ctxT(t), "readlink", "/proc/self/ns/net", "/proc/self/ns/mnt").Output()
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Fields(string(out))
	if len(got) != 2 {
		t.Fatalf("readlink printed %q", out)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(nd.Path(), &st); err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("net:[%d]", st.Ino); got[0] != want {
		t.Errorf("command's network namespace %s, want the node's %s", got[0], want)
	}
	if got[1] != nsInode("/proc/self/ns/mnt") {
		t.Errorf("command's mount namespace %s, host's %s: mounts would not be shared", got[1], nsInode("/proc/self/ns/mnt"))
	}
	addrs, err := nd.Command(ctxT(t), "ip", "-brief", "addr", "show", "dev", nd.If).Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(addrs), nd.Addr.String()+"/24") {
		t.Errorf("node interface: %q, want address %s/24", addrs, nd.Addr)
	}
}

func TestShapes(t *testing.T) {
	n := netns.Start(t, netns.Options{})
	nd := n.MustAddNode(t, "shaped")
	type setter func(context.Context, netns.Shape) error
	type getter func(context.Context) (netns.Shape, bool, error)
	dirs := []struct {
		name string
		set  setter
		get  getter
	}{
		{"egress", nd.ShapeEgress, nd.EgressShape},
		{"ingress", nd.ShapeIngress, nd.IngressShape},
	}
	cases := []struct {
		name    string
		shape   netns.Shape
		wantErr error
		want    netns.Shape // rate and latency as the kernel reports them
	}{
		{"100 Mbit/s with defaults", netns.Shape{Rate: netns.Mbit(100)}, nil, netns.Shape{Rate: netns.Mbit(100), Latency: 50 * time.Millisecond}},
		{"explicit", netns.Shape{Rate: netns.Mbit(10), Burst: 64 << 10, Latency: 20 * time.Millisecond}, nil, netns.Shape{Rate: netns.Mbit(10), Latency: 20 * time.Millisecond}},
		{"zero rate", netns.Shape{}, netns.ErrInvalidShape, netns.Shape{}},
		{"negative rate", netns.Shape{Rate: -1}, netns.ErrInvalidShape, netns.Shape{}},
		{"burst below a packet", netns.Shape{Rate: 1000, Burst: 100}, netns.ErrInvalidShape, netns.Shape{}},
	}
	for _, d := range dirs {
		for _, c := range cases {
			t.Run(d.name+"/"+c.name, func(t *testing.T) {
				if err := nd.Unshape(ctxT(t)); err != nil {
					t.Fatal(err)
				}
				err := d.set(ctxT(t), c.shape)
				if !errors.Is(err, c.wantErr) {
					t.Fatalf("shape %+v: error %v, want %v", c.shape, err, c.wantErr)
				}
				got, ok, err := d.get(ctxT(t))
				if err != nil {
					t.Fatal(err)
				}
				if c.wantErr != nil {
					if ok {
						t.Errorf("a refused shape left %+v behind", got)
					}
					return
				}
				if !ok || got.Rate != c.want.Rate || got.Latency != c.want.Latency || got.Burst < 2048 {
					t.Errorf("kernel reports %+v (present %v), want rate %d latency %s", got, ok, c.want.Rate, c.want.Latency)
				}
			})
		}
	}
	if err := nd.Unshape(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		if s, ok, err := d.get(ctxT(t)); err != nil || ok {
			t.Errorf("%s after Unshape: %+v %v %v", d.name, s, ok, err)
		}
	}
}

// TestShapedTransfer moves bytes over a link limited to 20 Mbit/s and logs the throughput seen
// (a figure, not a check: timing depends on the machine).
func TestShapedTransfer(t *testing.T) {
	n := netns.Start(t, netns.Options{})
	a, b := n.MustAddNode(t, "server"), n.MustAddNode(t, "client")
	if err := a.ShapeEgress(ctxT(t), netns.Shape{Rate: netns.Mbit(20)}); err != nil {
		t.Fatal(err)
	}
	body := randomBytes(t, 5<<20)
	url := serveBytes(t, a, body)
	start := time.Now()
	got := fetchFrom(t, b, url)
	d := time.Since(start)
	if !bytes.Equal(got, body) {
		t.Fatal("shaped transfer corrupted the body")
	}
	t.Logf("5 MiB over a 20 Mbit/s link: %.2f s, %.1f Mbit/s", d.Seconds(), float64(len(body))*8/d.Seconds()/1e6)
}

func TestAddNodeRefusals(t *testing.T) {
	n := netns.Start(t, netns.Options{Subnet: netip.MustParsePrefix("10.213.7.0/30")}) // two host addresses
	n.MustAddNode(t, "first")
	cases := []struct {
		name string
		node string
		want error
	}{
		{"upper case", "Box", netns.ErrInvalidName},
		{"leading digit", "1box", netns.ErrInvalidName},
		{"too long", strings.Repeat("a", 17), netns.ErrInvalidName},
		{"path separator", "a/b", netns.ErrInvalidName},
		{"empty", "", netns.ErrInvalidName},
		{"duplicate", "first", netns.ErrDuplicate},
		{"second fits", "second", nil},
		{"third does not", "third", netns.ErrSubnetFull},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			nd, err := n.AddNode(ctxT(t), c.node)
			if !errors.Is(err, c.want) {
				t.Fatalf("AddNode(%q): %v, want %v", c.node, err, c.want)
			}
			if err == nil && nd.Addr != netip.MustParseAddr("10.213.7.2") {
				t.Errorf("address %s, want 10.213.7.2", nd.Addr)
			}
		})
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := n.AddNode(ctxT(t), "late"); !errors.Is(err, netns.ErrClosed) {
		t.Errorf("AddNode after Close: %v, want ErrClosed", err)
	}
}

func TestNewRefusesUnusableSubnets(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	for _, p := range []string{"fd00::/64", "10.213.9.0/31", "10.213.9.1/32"} {
		t.Run(p, func(t *testing.T) {
			n, err := netns.New(ctxT(t), netns.Options{Subnet: netip.MustParsePrefix(p)})
			if err == nil {
				n.Close()
			}
			if !errors.Is(err, netns.ErrBadSubnet) {
				t.Errorf("New(%s): %v, want ErrBadSubnet", p, err)
			}
		})
	}
}

func namespaceExists(name string) bool {
	_, err := os.Stat("/run/netns/" + name)
	return err == nil
}

func TestCloseRemovesNamespacesAndProcesses(t *testing.T) {
	n := netns.Start(t, netns.Options{})
	nd := n.MustAddNode(t, "busy")
	if err := nd.ShapeEgress(ctxT(t), netns.Shape{Rate: netns.Mbit(1)}); err != nil {
		t.Fatal(err)
	}
	sleeper := nd.Command(context.Background(), "sleep", "600")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- sleeper.Wait() }()

	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		sleeper.Process.Kill()
		t.Fatal("a process in the node survived Close")
	}
	for _, ns := range []string{nd.Namespace, n.HubNamespace()} {
		if namespaceExists(ns) {
			t.Errorf("namespace %s still exists", ns)
		}
	}
	if err := n.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestSweepStaleRemovesOnlyDeadOwners(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name      string
		ns        string
		wantSwept bool
	}{
		{"owner exited", fmt.Sprintf("dfnydus-%d-1-hub", dead.Process.Pid), true},
		{"owner alive", fmt.Sprintf("dfnydus-%d-999-hub", os.Getpid()), false},
		{"not ours", fmt.Sprintf("other-%d-1-hub", dead.Process.Pid), false},
	}
	for _, c := range cases {
		if out, err := exec.Command("ip", "netns", "add", c.ns).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add %s: %v %s", c.ns, err, out)
		}
		t.Cleanup(func() { exec.Command("ip", "netns", "delete", c.ns).Run() })
	}
	if err := netns.SweepStale(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		if namespaceExists(c.ns) == c.wantSwept {
			t.Errorf("%s (%s): swept %v, want %v", c.name, c.ns, !namespaceExists(c.ns), c.wantSwept)
		}
	}
}

func TestRegistryServesOtherNodes(t *testing.T) {
	n := netns.Start(t, netns.Options{})
	regNode, client := n.MustAddNode(t, "registry"), n.MustAddNode(t, "client")
	reg := netns.MustStartRegistry(t, regNode, 5000)
	if want := regNode.Addr.String() + ":5000"; reg.Host != want {
		t.Errorf("host %s, want %s", reg.Host, want)
	}
	if got := reg.Ref("a/b", "v1"); got != reg.Host+"/a/b:v1" {
		t.Errorf("Ref: %s", got)
	}
	body := fetchFrom(t, client, "http://"+reg.Host+"/v2/_catalog")
	var cat struct{ Repositories []string }
	if err := json.Unmarshal(body, &cat); err != nil {
		t.Fatalf("catalog %q: %v", body, err)
	}
	// The access log is written after the response: wait for it to count the catalog's bytes.
	deadline := time.Now().Add(10 * time.Second)
	for reg.SentTo()[client.Addr.String()] < int64(len(body)) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if got := reg.SentTo(); got[client.Addr.String()] != int64(len(body)) {
		t.Errorf("SentTo = %v, want %d bytes to %s", got, len(body), client.Addr)
	}
	reg.Close()
	reg.Close()
	if _, err := client.DialContext(ctxT(t), "tcp", reg.Host); err == nil {
		t.Error("registry still accepts connections after Close")
	}
}
