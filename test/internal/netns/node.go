package netns

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"

	"golang.org/x/sys/unix"
)

// Node is a network namespace linked to the network's bridge.
type Node struct {
	Name      string     // as given to AddNode
	Namespace string     // under /run/netns
	Addr      netip.Addr // the address of If
	If        string     // the node's interface, in its namespace
	HubIf     string     // the other end of the veth pair, on the bridge in the hub namespace

	net *Network
}

// Path is the namespace file, for nsenter --net= or setns(2).
func (nd *Node) Path() string { return nsPath(nd.Namespace) }

// Command prepares prog to run in the node's network namespace only (nsenter --net, which then
// execs prog: the process's pid is prog's). It shares the caller's mount namespace, so mounts it
// makes are visible on the host.
func (nd *Node) Command(ctx context.Context, prog string, args ...string) *exec.Cmd {
	argv := append([]string{"--net=" + nd.Path(), "--", prog}, args...)
	return exec.CommandContext(ctx, "nsenter", argv...)
}

// Do runs fn on an OS thread switched into the node's network namespace: sockets fn creates
// belong to the node and keep working after fn returns. fn must not start goroutines that create
// sockets (they would run elsewhere). A thread that cannot be switched back is discarded.
func (nd *Node) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		restored := false
		defer func() {
			if restored {
				runtime.UnlockOSThread()
			} // else the goroutine exits locked and the runtime ends the thread
		}()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- fmt.Errorf("node %s: current namespace: %w", nd.Name, err)
			return
		}
		defer orig.Close()
		target, err := os.Open(nd.Path())
		if err != nil {
			restored = true
			errc <- fmt.Errorf("node %s: %w", nd.Name, err)
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			restored = true
			errc <- fmt.Errorf("node %s: enter namespace: %w", nd.Name, err)
			return
		}
		ferr := fn()
		restored = unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil
		errc <- ferr
	}()
	return <-errc
}

// Listen opens a listener in the node's namespace (e.g. "tcp", ":8080" or an address of the node).
func (nd *Node) Listen(ctx context.Context, network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := nd.Do(func() error {
		var err error
		ln, err = (&net.ListenConfig{}).Listen(ctx, network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("node %s: listen %s %s: %w", nd.Name, network, addr, err)
	}
	return ln, nil
}

// DialContext connects from the node's namespace; addr must be a literal IP:port (no name lookup
// runs in the namespace). It fits http.Transport.DialContext.
func (nd *Node) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := nd.Do(func() error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("node %s: dial %s %s: %w", nd.Name, network, addr, err)
	}
	return c, nil
}

// Counters are an interface's byte and packet totals since it was created.
type Counters struct {
	RxBytes, TxBytes     int64
	RxPackets, TxPackets int64
}

// Sub is c - o, field by field.
func (c Counters) Sub(o Counters) Counters {
	return Counters{RxBytes: c.RxBytes - o.RxBytes, TxBytes: c.TxBytes - o.TxBytes,
		RxPackets: c.RxPackets - o.RxPackets, TxPackets: c.TxPackets - o.TxPackets}
}

// Counters reads the node interface's totals (what the node sent and received over its link,
// Ethernet headers included).
func (nd *Node) Counters(ctx context.Context) (Counters, error) {
	c, err := linkCounters(ctx, nd.Namespace, nd.If)
	if err != nil {
		return Counters{}, fmt.Errorf("node %s: %w", nd.Name, err)
	}
	return c, nil
}

func linkCounters(ctx context.Context, ns, dev string) (Counters, error) {
	out, err := output(ctx, "ip", "-n", ns, "-s", "-j", "link", "show", "dev", dev)
	if err != nil {
		return Counters{}, err
	}
	var links []struct {
		Stats struct {
			Rx struct{ Bytes, Packets int64 } `json:"rx"`
			Tx struct{ Bytes, Packets int64 } `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil {
		return Counters{}, fmt.Errorf("counters of %s in %s: %w", dev, ns, err)
	}
	if len(links) != 1 {
		return Counters{}, fmt.Errorf("counters of %s in %s: %d links listed", dev, ns, len(links))
	}
	s := links[0].Stats
	return Counters{RxBytes: s.Rx.Bytes, TxBytes: s.Tx.Bytes, RxPackets: s.Rx.Packets, TxPackets: s.Tx.Packets}, nil
}
