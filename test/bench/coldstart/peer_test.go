package coldstart_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dfnydus/dfnydus/peer"
	"github.com/dfnydus/dfnydus/test/internal/testenv"
)

// execFunc prepares a command: on the host (exec.CommandContext) or in a node's network namespace
// (netns.Node.Command).
type execFunc func(ctx context.Context, prog string, args ...string) *exec.Cmd

func onHost(ctx context.Context, prog string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, prog, args...)
}

const cmdTimeout = 15 * time.Minute

// mustRun runs a command to completion and returns its stdout, failing b on error.
func mustRun(b *testing.B, ex execFunc, prog string, args ...string) string {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := ex(ctx, prog, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		b.Fatalf("%s %s: %v\nstderr:\n%s", prog, strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

// peerMount is a running `dfnydus mount` process.
type peerMount struct {
	cmd    *exec.Cmd
	mp     string
	cache  string
	stderr *testenv.LogBuffer
	done   chan struct{}
	err    error
	stop   func()
}

// startMount starts `dfnydus mount --prefetch MODE [extra flags]` of ref at mp with a fresh store
// under cache and returns once the ready file exists. The mount is stopped when b ends if not before.
func startMount(b *testing.B, ex execFunc, ref, mp, cache, prefetch string, extra ...string) *peerMount {
	b.Helper()
	ready := filepath.Join(cache, "ready")
	for _, d := range []string{mp, cache} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			b.Fatal(err)
		}
	}
	args := append([]string{"mount", "--log-level", "warn", "--plain-http", "--prefetch", prefetch,
		"--cache-dir", cache, "--ready-file", ready}, append(extra, ref, mp)...)
	m := &peerMount{cmd: ex(context.Background(), testenv.Binary(b), args...), mp: mp, cache: cache,
		stderr: &testenv.LogBuffer{}, done: make(chan struct{})}
	m.cmd.Stderr = m.stderr
	if err := m.cmd.Start(); err != nil {
		b.Fatalf("start dfnydus mount: %v", err)
	}
	go func() { m.err = m.cmd.Wait(); close(m.done) }()
	var once sync.Once
	m.stop = func() { once.Do(func() { m.unmount(b) }) }
	b.Cleanup(m.stop)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if _, err := os.Stat(ready); err == nil {
			return m
		}
		select {
		case <-m.done:
			b.Fatalf("dfnydus mount exited: %v\n%s", m.err, m.stderr)
		case <-time.After(2 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b.Fatalf("dfnydus mount did not become ready\n%s", m.stderr)
		}
	}
}

// unmount runs `dfnydus umount` and waits for the process; one that does not exit is killed and
// its mount detached.
func (m *peerMount) unmount(b *testing.B) {
	select {
	case <-m.done:
		_ = unix.Unmount(m.mp, unix.MNT_DETACH) // a dead process may leave its mount behind
		return
	default:
	}
	testenv.Run(b, "umount", m.mp)
	select {
	case <-m.done:
	case <-time.After(30 * time.Second):
		b.Errorf("dfnydus mount did not exit after umount; killing it\n%s", m.stderr)
		_ = m.cmd.Process.Kill()
		<-m.done
		_ = unix.Unmount(m.mp, unix.MNT_DETACH)
	}
}

// stats asks the mount's API for its one image's figures.
func (m *peerMount) stats(b *testing.B) peer.Stats {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	info, err := peer.QueryStat(ctx, peer.SocketPath(m.cache, m.mp))
	if err != nil {
		b.Fatalf("dfnydus stat: %v", err)
	}
	if len(info.Images) != 1 {
		b.Fatalf("stat lists %d images, want 1", len(info.Images))
	}
	return info.Images[0]
}

// waitPrefetch polls until the background prefetch has finished and returns the stats then.
func (m *peerMount) waitPrefetch(b *testing.B) peer.Stats {
	b.Helper()
	deadline := time.Now().Add(15 * time.Minute)
	for {
		s := m.stats(b)
		if s.Prefetch.State == peer.PrefetchDone || s.Prefetch.State == peer.PrefetchIncomplete {
			return s
		}
		if time.Now().After(deadline) {
			b.Fatalf("prefetch still %+v", s.Prefetch)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// memory is a process's resident set now and at its peak.
type memory struct{ rss, hwm int64 } // bytes

// memory reads VmRSS and VmHWM of the mount process from /proc.
func (m *peerMount) memory(b *testing.B) memory {
	b.Helper()
	mem, err := procMemory(m.cmd.Process.Pid)
	if err != nil {
		b.Fatal(err)
	}
	return mem
}

func procMemory(pid int) (memory, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memory{}, fmt.Errorf("memory of pid %d: %w", pid, err)
	}
	defer f.Close()
	var mem memory
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(val), " kB"), 10, 64)
		if err != nil {
			return memory{}, fmt.Errorf("memory of pid %d: %s: %w", pid, key, err)
		}
		if key == "VmRSS" {
			mem.rss = kb << 10
		} else {
			mem.hwm = kb << 10
		}
	}
	if err := sc.Err(); err != nil {
		return memory{}, fmt.Errorf("memory of pid %d: %w", pid, err)
	}
	if mem.hwm == 0 {
		return memory{}, fmt.Errorf("memory of pid %d: %w", pid, errors.New("no VmHWM (not a user process?)"))
	}
	return mem, nil
}

// goHeap reads the Go heap in use (go_memstats_heap_inuse_bytes) from the mount's /metrics.
func (m *peerMount) goHeap(b *testing.B) int64 {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sock := peer.SocketPath(m.cache, m.mp)
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://dfnydus/metrics", nil)
	if err != nil {
		b.Fatal(err)
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		b.Fatalf("mount metrics: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_memstats_heap_inuse_bytes "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatalf("mount metrics: heap in use %q: %v", v, err)
			}
			return int64(f)
		}
	}
	b.Fatalf("mount metrics: no go_memstats_heap_inuse_bytes (%v)", sc.Err())
	return 0
}
