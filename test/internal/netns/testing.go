package netns

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"
)

// Start creates a network for a test or benchmark and closes it when t ends (a failed Close fails
// t). It skips t without root or without ip, tc or nsenter.
func Start(t testing.TB, opts Options) *Network {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("netns: needs root")
	}
	for _, tool := range []string{"ip", "tc", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("netns: %s is not installed", tool)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n, err := New(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("netns: %v", err)
		}
	})
	return n
}

// MustAddNode adds a node, failing t on error.
func (n *Network) MustAddNode(t testing.TB, name string) *Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	nd, err := n.AddNode(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	return nd
}

// MustStartRegistry runs a registry on nd (storage in a temporary directory) until t ends; it
// skips t when docker-registry is not installed.
func MustStartRegistry(t testing.TB, nd *Node, port int) *Registry {
	t.Helper()
	if _, err := exec.LookPath(RegistryBinary); err != nil {
		t.Skipf("netns: %s is not installed (apt-get install docker-registry)", RegistryBinary)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := StartRegistry(ctx, nd, port, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}
