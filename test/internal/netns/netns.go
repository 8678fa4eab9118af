// Package netns builds small network topologies for end-to-end benchmarks and tests: named network
// namespaces (nodes), each joined by a veth pair to one bridge that lives in a namespace of its own,
// so nothing is added to the host's network stack. Links are shaped with tc tbf; programs run in a
// node's network namespace only (nsenter --net), so they share the host's mounts and a FUSE mount
// one of them makes is visible to everyone. Close deletes every namespace (and with them every veth,
// bridge and qdisc) and kills what still runs inside.
//
// Addresses come from Options.Subnet (default 10.213.0.0/24); they exist only inside the namespaces
// this package creates. It needs root and iproute2 (ip, tc) and util-linux nsenter. Imported only by
// tests.
package netns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Sentinel errors, wrapped with context by every function that returns them.
var (
	ErrClosed       = errors.New("netns: network closed")
	ErrInvalidName  = errors.New("netns: invalid node name")
	ErrDuplicate    = errors.New("netns: duplicate node name")
	ErrSubnetFull   = errors.New("netns: no address left in the subnet")
	ErrInvalidShape = errors.New("netns: invalid link shape")
	ErrBadSubnet    = errors.New("netns: unusable subnet")
	ErrNotRoot      = errors.New("netns: needs root")
)

// DefaultSubnet is used when Options.Subnet is zero.
var DefaultSubnet = netip.MustParsePrefix("10.213.0.0/24")

// namePrefix starts every namespace this package creates; the creating process's id follows, so a
// later run can tell namespaces of a crashed run (dead pid) from those of a live one.
const namePrefix = "dfnydus-"

const (
	bridgeIf = "br0"  // the bridge, in the hub namespace
	nodeIf   = "eth0" // a node's end of its veth pair, in the node's namespace
)

// Options configure New.
type Options struct {
	// Subnet gives node addresses (the first host address goes to the first node); IPv4, at most
	// /30. Default DefaultSubnet.
	Subnet netip.Prefix
}

// Network is a bridge in its own namespace and the nodes attached to it.
type Network struct {
	id     string // unique per network: namePrefix + pid + "-" + sequence
	hub    string // namespace holding the bridge
	subnet netip.Prefix

	mu     sync.Mutex
	nodes  []*Node
	next   netip.Addr
	closed bool
}

var seq atomic.Int64

var nodeNameRE = regexp.MustCompile(`^[a-z][a-z0-9]{0,15}$`)

// New creates the hub namespace and its bridge. It first deletes namespaces left by runs of this
// package whose process has died.
func New(ctx context.Context, opts Options) (*Network, error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("create network: %w", ErrNotRoot)
	}
	subnet := opts.Subnet
	if !subnet.IsValid() {
		subnet = DefaultSubnet
	}
	subnet = subnet.Masked()
	if !subnet.Addr().Is4() || subnet.Bits() > 30 {
		return nil, fmt.Errorf("subnet %s: want IPv4 with room for hosts: %w", subnet, ErrBadSubnet)
	}
	if err := SweepStale(ctx); err != nil {
		return nil, err
	}
	id := fmt.Sprintf("%s%d-%d", namePrefix, os.Getpid(), seq.Add(1))
	n := &Network{id: id, hub: id + "-hub", subnet: subnet, next: subnet.Addr().Next()}
	if err := n.createHub(ctx); err != nil {
		_ = deleteNamespace(context.WithoutCancel(ctx), n.hub)
		return nil, err
	}
	return n, nil
}

func (n *Network) createHub(ctx context.Context) error {
	steps := [][]string{
		{"ip", "netns", "add", n.hub},
		{"ip", "-n", n.hub, "link", "set", "lo", "up"},
		{"ip", "-n", n.hub, "link", "add", bridgeIf, "type", "bridge"},
		{"ip", "-n", n.hub, "link", "set", bridgeIf, "up"},
	}
	for _, s := range steps {
		if err := run(ctx, s...); err != nil {
			return fmt.Errorf("create hub %s: %w", n.hub, err)
		}
	}
	return nil
}

// ID names the network; every namespace it owns starts with it.
func (n *Network) ID() string { return n.id }

// Subnet is the prefix node addresses come from.
func (n *Network) Subnet() netip.Prefix { return n.subnet }

// HubNamespace is the namespace holding the bridge and the bridge-side ends of the veth pairs.
func (n *Network) HubNamespace() string { return n.hub }

// Nodes lists the nodes in the order they were added.
func (n *Network) Nodes() []*Node {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]*Node(nil), n.nodes...)
}

// AddNode creates a namespace named after the network and name, links it to the bridge and gives it
// the subnet's next address. name is lower-case letters and digits, starting with a letter, at most
// 16 characters, unique in the network.
func (n *Network) AddNode(ctx context.Context, name string) (*Node, error) {
	if !nodeNameRE.MatchString(name) {
		return nil, fmt.Errorf("node %q: %w", name, ErrInvalidName)
	}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil, fmt.Errorf("add node %s: %w", name, ErrClosed)
	}
	for _, o := range n.nodes {
		if o.Name == name {
			n.mu.Unlock()
			return nil, fmt.Errorf("node %s: %w", name, ErrDuplicate)
		}
	}
	addr := n.next
	last := lastHost(n.subnet)
	if !n.subnet.Contains(addr) || addr.Compare(last) > 0 {
		n.mu.Unlock()
		return nil, fmt.Errorf("node %s in %s: %w", name, n.subnet, ErrSubnetFull)
	}
	n.next = addr.Next()
	node := &Node{Name: name, Namespace: n.id + "-" + name, Addr: addr, If: nodeIf,
		HubIf: "veth" + strconv.Itoa(len(n.nodes)), net: n}
	n.nodes = append(n.nodes, node) // registered before creation so Close removes a half-made node
	n.mu.Unlock()

	prefix := netip.PrefixFrom(addr, n.subnet.Bits()).String()
	steps := [][]string{
		{"ip", "netns", "add", node.Namespace},
		{"ip", "-n", node.Namespace, "link", "set", "lo", "up"},
		{"ip", "-n", n.hub, "link", "add", node.HubIf, "type", "veth", "peer", "name", nodeIf, "netns", node.Namespace},
		{"ip", "-n", n.hub, "link", "set", node.HubIf, "master", bridgeIf, "up"},
		{"ip", "-n", node.Namespace, "addr", "add", prefix, "dev", nodeIf},
		{"ip", "-n", node.Namespace, "link", "set", nodeIf, "up"},
	}
	for _, s := range steps {
		if err := run(ctx, s...); err != nil {
			return nil, fmt.Errorf("add node %s: %w", name, err)
		}
	}
	return node, nil
}

// Close kills every process still running in the network's namespaces (by pid, never this process)
// and deletes the namespaces, which removes their interfaces, the bridge and the qdiscs. It keeps
// going after a failure and returns all failures joined; calling it again does nothing.
func (n *Network) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	nodes := append([]*Node(nil), n.nodes...)
	n.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var errs []error
	names := []string{n.hub}
	for _, node := range nodes {
		names = append(names, node.Namespace)
	}
	for _, ns := range names {
		if err := killProcesses(ctx, ns); err != nil {
			errs = append(errs, err)
		}
	}
	for i := len(names) - 1; i >= 0; i-- {
		if err := deleteNamespace(ctx, names[i]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// killProcesses SIGKILLs the processes whose network namespace is ns (other than this process)
// and waits up to 10 s for them to go.
func killProcesses(ctx context.Context, ns string) error {
	pids, err := namespacePIDs(ctx, ns)
	if err != nil || len(pids) == 0 {
		return err
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("kill pid %d in %s: %w", pid, ns, err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if pids, err = namespacePIDs(ctx, ns); err != nil || len(pids) == 0 {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("processes %v in %s survived SIGKILL", pids, ns)
}

// namespacePIDs lists the processes in namespace ns, without this process; nothing if ns is gone.
func namespacePIDs(ctx context.Context, ns string) ([]int, error) {
	if _, err := os.Stat(nsPath(ns)); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	out, err := output(ctx, "ip", "netns", "pids", ns)
	if err != nil {
		return nil, fmt.Errorf("list processes in %s: %w", ns, err)
	}
	var pids []int
	for _, f := range strings.Fields(out) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("list processes in %s: pid %q: %w", ns, f, err)
		}
		if pid != os.Getpid() {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

func deleteNamespace(ctx context.Context, ns string) error {
	if _, err := os.Stat(nsPath(ns)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := run(ctx, "ip", "netns", "delete", ns); err != nil {
		return fmt.Errorf("delete namespace %s: %w", ns, err)
	}
	return nil
}

// SweepStale deletes namespaces this package created in processes that no longer run (a run that
// was killed before its cleanup). Namespaces of live processes are left alone.
func SweepStale(ctx context.Context) error {
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("sweep stale namespaces: %w", err)
	}
	var errs []error
	for _, e := range entries {
		pid, ok := ownerPID(e.Name())
		if !ok || processAlive(pid) {
			continue
		}
		if err := killProcesses(ctx, e.Name()); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := deleteNamespace(ctx, e.Name()); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

var ownerRE = regexp.MustCompile(`^` + regexp.QuoteMeta(namePrefix) + `(\d+)-\d+-`)

// ownerPID parses the creating pid out of a namespace name made by this package.
func ownerPID(ns string) (int, bool) {
	m := ownerRE.FindStringSubmatch(ns)
	if m == nil {
		return 0, false
	}
	pid, err := strconv.Atoi(m[1])
	return pid, err == nil && pid > 0
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// lastHost is the subnet's highest address that is not the broadcast address.
func lastHost(p netip.Prefix) netip.Addr {
	a := p.Addr().As4()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v |= (1 << (32 - p.Bits())) - 1
	v--
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

const netnsDir = "/run/netns"

func nsPath(ns string) string { return netnsDir + "/" + ns }

// run runs a command and names it and its output in the error.
func run(ctx context.Context, argv ...string) error {
	_, err := output(ctx, argv...)
	return err
}

func output(ctx context.Context, argv ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}
