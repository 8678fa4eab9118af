// Package containerd_test runs real containers from dfnydus-served images: a private containerd (apt,
// with runc), containerd's nydus-snapshotter v0.16.1 launching dfnydus as its nydusd, the local
// docker-registry, and ctrclient (test/containerd/ctrclient, containerd's Go client) pulling with
// the snapshotter's unpacker. No systemd: every daemon is started here and stopped at the end, with
// every process, mount and cgroup it left.
package containerd_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dfnydus/dfnydus/test/internal/testenv"
)

// harness is one private containerd + nydus-snapshotter pair and the tools they run.
type harness struct {
	t         testing.TB
	dir       string // everything lives under it (short: the snapshotter's root must be <= 70 bytes)
	ns        string // containerd namespace (also the cgroup parent: /sys/fs/cgroup/*/NS)
	ctrclient string
	nydusd    string // DIR/bin/nydusd -> the dfnydus binary
	ctrdSock  string
	snapRoot  string
	ctrdLogs  *testenv.LogBuffer
	snapLogs  *testenv.LogBuffer
	procs     []*exec.Cmd
	netns     string // network namespace path containerd, the snapshotter and ctrclient run in ("" = host)
	// runDirs are containerd 1.6's fixed directories under /run that did not exist before.
	runDirs []string
}

// harnessOptions tune startHarness.
type harnessOptions struct {
	// RecoverPolicy of the snapshotter: "restart" (default), "failover" or "none".
	RecoverPolicy string
	// DaemonMode of the snapshotter: "dedicated" (default, one nydusd per image) or "shared".
	DaemonMode string
	// NydusdConfig is the nydusd configuration template (default: defaultNydusdConfig).
	NydusdConfig string
	// NetNS, when set, is a network namespace path (/run/netns/NAME) containerd and the
	// snapshotter (hence every nydusd) run in; mounts stay in the host's mount namespace.
	NetNS string
	// SnapshotterEnv is added to the snapshotter's environment, which every nydusd inherits (e.g.
	// DFNYDUS_SOCKET: mount through that dfnydus daemon).
	SnapshotterEnv []string
}

// defaultNydusdConfig is the snapshotter's template (misc/snapshotter/nydusd-config.fusedev.json)
// with plain HTTP for the loopback registry; the snapshotter fills in host, repo and work_dir.
const defaultNydusdConfig = `{
  "device": {
    "backend": {"type": "registry", "config": {"scheme": "http", "timeout": 30, "connect_timeout": 5, "retry_limit": 2}},
    "cache": {"type": "blobcache"}
  },
  "mode": "direct",
  "digest_validate": false,
  "iostats_files": false,
  "enable_xattr": true,
  "fs_prefetch": {"enable": true, "threads_count": 4, "merging_size": 1048576, "prefetch_all": true}
}`

// tools builds (once, cached in bin/tools) the snapshotter and ctrclient, and returns bin/tools.
func tools(t testing.TB) string {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "containerd")
	testenv.RequireTool(t, "runc")
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	testenv.MustExec(t, "bash", filepath.Join(testenv.RepoRoot(), "scripts", "containerd.sh"), "tools")
	return filepath.Join(testenv.RepoRoot(), "bin", "tools")
}

func startHarness(t testing.TB, opts harnessOptions) *harness {
	t.Helper()
	tdir := tools(t)
	if opts.RecoverPolicy == "" {
		opts.RecoverPolicy = "restart"
	}
	if opts.DaemonMode == "" {
		opts.DaemonMode = "dedicated"
	}
	if opts.NydusdConfig == "" {
		opts.NydusdConfig = defaultNydusdConfig
	}
	dir, err := os.MkdirTemp("/var/tmp", "dfc-")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(opts.SnapshotterEnv, func(kv string) bool { return strings.HasPrefix(kv, "DFNYDUS_SOCKET=") }) {
		// No dfnydus daemon: nydusd mounts in process even if a daemon answers on the default socket.
		opts.SnapshotterEnv = append(opts.SnapshotterEnv, "DFNYDUS_SOCKET="+filepath.Join(dir, "no-daemon.sock"))
	}
	h := &harness{t: t, dir: dir, ns: "dfnydus-" + filepath.Base(dir)[4:], ctrclient: filepath.Join(tdir, "ctrclient"),
		nydusd: filepath.Join(dir, "bin", "nydusd"), ctrdSock: filepath.Join(dir, "containerd.sock"),
		snapRoot: filepath.Join(dir, "snap"), ctrdLogs: &testenv.LogBuffer{}, snapLogs: &testenv.LogBuffer{}, netns: opts.NetNS}
	for _, d := range []string{"/run/containerd/s", "/run/containerd"} {
		if _, err := os.Stat(d); errors.Is(err, os.ErrNotExist) {
			h.runDirs = append(h.runDirs, d)
		}
	}
	t.Cleanup(h.cleanup)
	for _, d := range []string{"bin", "root", "state", "opt", "run/runc", "run/fifo", "snap"} {
		must(t, os.MkdirAll(filepath.Join(dir, d), 0o755))
	}
	must(t, os.Symlink(testenv.Binary(t), h.nydusd))
	snapSock := filepath.Join(dir, "nydus.sock")

	ctrdCfg := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[debug]
  address = %[5]q
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = %[6]q
[proxy_plugins.nydus]
  type = "snapshot"
  address = %[7]q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), h.ctrdSock, filepath.Join(dir, "ttrpc.sock"),
		filepath.Join(dir, "debug.sock"), filepath.Join(dir, "opt"), snapSock)
	must(t, os.WriteFile(filepath.Join(dir, "containerd.toml"), []byte(ctrdCfg), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "nydusd-config.json"), []byte(opts.NydusdConfig), 0o644))
	snapCfg := fmt.Sprintf(`version = 1
root = %[1]q
address = %[2]q
daemon_mode = %[7]q
cleanup_on_close = false
[system]
  enable = false
  address = %[3]q
[daemon]
  nydusd_config = %[4]q
  nydusd_path = %[5]q
  fs_driver = "fusedev"
  recover_policy = %[6]q
  threads_number = 4
  log_rotation_size = 100
  failover_policy = "resend"
[cgroup]
  enable = false
[log]
  log_to_stdout = true
  level = "info"
[metrics]
  address = ""
[snapshot]
  enable_nydus_overlayfs = false
  sync_remove = true
[cache_manager]
  disable = false
  gc_period = "24h"
`, h.snapRoot, snapSock, filepath.Join(dir, "system.sock"), filepath.Join(dir, "nydusd-config.json"), h.nydusd, opts.RecoverPolicy, opts.DaemonMode)
	must(t, os.WriteFile(filepath.Join(dir, "snapshotter.toml"), []byte(snapCfg), 0o644))

	h.startEnv("containerd-nydus-grpc", h.snapLogs, opts.NetNS, opts.SnapshotterEnv, filepath.Join(tdir, "containerd-nydus-grpc"), "--config", filepath.Join(dir, "snapshotter.toml"))
	h.waitSocket(snapSock, h.snapLogs)
	h.start("containerd", h.ctrdLogs, opts.NetNS, "containerd", "--config", filepath.Join(dir, "containerd.toml"))
	h.waitSocket(h.ctrdSock, h.ctrdLogs)
	return h
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (h *harness) start(name string, logs *testenv.LogBuffer, netns, prog string, args ...string) {
	h.t.Helper()
	h.startEnv(name, logs, netns, nil, prog, args...)
}

// startEnv starts prog with env added to this process's environment.
func (h *harness) startEnv(name string, logs *testenv.LogBuffer, netns string, env []string, prog string, args ...string) {
	h.t.Helper()
	cmd := exec.Command(prog, args...)
	if netns != "" {
		// nsenter execs prog: the pid stays prog's.
		cmd = exec.Command("nsenter", append([]string{"--net=" + netns, "--", prog}, args...)...)
	}
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Stdout, cmd.Stderr = logs, logs
	// The snapshotter's nydusd daemons inherit its stdout: Wait must not wait for them to close it.
	cmd.WaitDelay = 10 * time.Second
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		h.t.Fatalf("start %s: %v", name, err)
	}
	h.procs = append(h.procs, cmd)
}

// waitSocket polls until a daemon answers on its socket (the overall bound only catches a daemon
// that never comes up; nothing is measured against it).
func (h *harness) waitSocket(sock string, logs *testenv.LogBuffer) {
	h.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("no daemon on %s: %v\n%s", sock, err, logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ctr runs ctrclient with the harness's socket, namespace and state dir.
func (h *harness) ctr(args ...string) testenv.Result {
	h.t.Helper()
	full := append([]string{"-a", h.ctrdSock, "-n", h.ns, "-state", filepath.Join(h.dir, "run")}, args...)
	if h.netns != "" {
		// The client fetches the image itself (containerd's Go client pulls in-process).
		return testenv.Exec(h.t, "nsenter", append([]string{"--net=" + h.netns, "--", h.ctrclient}, full...)...)
	}
	return testenv.Exec(h.t, h.ctrclient, full...)
}

func (h *harness) mustCtr(args ...string) testenv.Result {
	h.t.Helper()
	r := h.ctr(args...)
	if r.Err != nil {
		h.t.Fatalf("ctrclient %s: %v\nstdout:\n%s\nstderr:\n%s\nsnapshotter:\n%s\ncontainerd:\n%s", strings.Join(args, " "), r.Err,
			r.Stdout, r.Stderr, tail(h.snapLogs.String(), 60), tail(h.ctrdLogs.String(), 30))
	}
	return r
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// nydusdProc is a running dfnydus started as this harness's nydusd.
type nydusdProc struct {
	pid  int
	args []string
}

func (p nydusdProc) flag(name string) string {
	for i, a := range p.args {
		if a == name && i+1 < len(p.args) {
			return p.args[i+1]
		}
	}
	return ""
}

// nydusds lists the processes whose argv[0] is this harness's nydusd symlink.
func (h *harness) nydusds() []nydusdProc {
	return procsWhere(func(argv []string) bool { return len(argv) > 0 && argv[0] == h.nydusd })
}

func procsWhere(match func(argv []string) bool) []nydusdProc {
	ents, _ := os.ReadDir("/proc")
	var out []nydusdProc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		argv := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if match(argv) {
			out = append(out, nydusdProc{pid: pid, args: argv})
		}
	}
	return out
}

// daemonState asks a nydusd's API for its state.
func daemonState(sock string) (string, error) {
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}, Timeout: 10 * time.Second}
	defer c.CloseIdleConnections()
	resp, err := c.Get("http://unix/api/v1/daemon")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var info struct {
		State string `json:"state"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		return "", err
	}
	return info.State, nil
}

// waitFor polls cond until it holds; the bound only ends a test whose condition never comes.
func (h *harness) waitFor(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("waiting for %s: never happened\nsnapshotter:\n%s", what, tail(h.snapLogs.String(), 80))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// mountsUnder returns the mountpoints under dir, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && (fields[4] == dir || strings.HasPrefix(fields[4], dir+"/")) {
			out = append(out, fields[4])
		}
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

// mountSource returns the source field ("dfnydus" for our FUSE mounts) of the mount at mp.
func mountSource(mp string) string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(b), "\n") {
		fields := strings.Fields(l)
		if len(fields) > 4 && fields[4] == mp {
			for i, f := range fields {
				if f == "-" && i+2 < len(fields) {
					return fields[i+1] + " " + fields[i+2]
				}
			}
		}
	}
	return ""
}

// cleanup stops everything the harness started and removes what it left: containers' shims,
// nydusd daemons, mounts, cgroups and the directory.
func (h *harness) cleanup() {
	// containerd and the snapshotter first (in reverse order of start), politely.
	for i := len(h.procs) - 1; i >= 0; i-- {
		p := h.procs[i]
		_ = p.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = p.Process.Kill()
			<-done
		}
	}
	// Shims of this containerd and nydusd daemons of this snapshotter (matched by our paths only).
	ours := procsWhere(func(argv []string) bool {
		if len(argv) > 0 && argv[0] == h.nydusd {
			return true
		}
		for _, a := range argv {
			if a == h.ctrdSock {
				return true
			}
		}
		return false
	})
	for _, p := range ours {
		_ = syscall.Kill(p.pid, syscall.SIGTERM)
	}
	for _, p := range ours {
		for i := 0; i < 200 && syscall.Kill(p.pid, 0) == nil; i++ {
			time.Sleep(50 * time.Millisecond)
		}
		_ = syscall.Kill(p.pid, syscall.SIGKILL)
	}
	for _, mp := range mountsUnder(h.dir) {
		if err := unix.Unmount(mp, 0); err != nil {
			_ = unix.Unmount(mp, unix.MNT_DETACH)
		}
	}
	// cgroups runc made under the namespace's parent (cgroup v1 hierarchies and v2).
	cgs, _ := filepath.Glob("/sys/fs/cgroup/*/" + h.ns)
	if st, err := os.Stat("/sys/fs/cgroup/" + h.ns); err == nil && st.IsDir() {
		cgs = append(cgs, "/sys/fs/cgroup/"+h.ns)
	}
	for _, cg := range cgs {
		subs, _ := filepath.Glob(cg + "/*")
		for _, s := range subs {
			if st, err := os.Stat(s); err == nil && st.IsDir() {
				_ = os.Remove(s)
			}
		}
		if err := os.Remove(cg); err != nil && !errors.Is(err, os.ErrNotExist) {
			h.t.Logf("cleanup: cgroup %s: %v", cg, err)
		}
	}
	// containerd 1.6 keeps shim sockets under /run/containerd/s whatever its state dir; a shim
	// removes its own on exit, so only a killed one leaves a socket: those of our namespace are gone
	// with their shims above. Runc state lives under DIR/run/runc.
	if err := os.RemoveAll(h.dir); err != nil {
		h.t.Logf("cleanup: %v", err)
	}
	for _, d := range h.runDirs {
		_ = os.Remove(d) // only if empty: another containerd may have started meanwhile
	}
	if t, ok := h.t.(*testing.T); ok && t.Failed() {
		t.Logf("snapshotter log (tail):\n%s", tail(h.snapLogs.String(), 100))
		t.Logf("containerd log (tail):\n%s", tail(h.ctrdLogs.String(), 40))
	}
}
