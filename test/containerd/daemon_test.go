package containerd_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dfnydus/dfnydus/test/internal/netns"
	"github.com/dfnydus/dfnydus/test/internal/registrytest"
	"github.com/dfnydus/dfnydus/test/internal/testenv"
)

// dfnydusDaemon is a `dfnydus daemon` run by a test, on the host or in a namespace node.
type dfnydusDaemon struct {
	t        testing.TB
	socket   string
	cacheDir string
	dir      string
	cmd      *exec.Cmd
	logs     *testenv.LogBuffer
	done     chan struct{}
	once     sync.Once
}

// daemonOptions tune startDfnydusDaemon.
type daemonOptions struct {
	// Node runs the daemon in a network namespace; nil means the host's.
	Node *netns.Node
	// Prefetch is the daemon's default prefetch.mode ("" means off).
	Prefetch string
	// Extra is YAML appended to the configuration (a scheduler section).
	Extra string
	// Socket is the control socket ("" means one in the daemon's fresh directory).
	Socket string
	// LogLevel is log.level ("" means info).
	LogLevel string
}

// startDfnydusDaemon starts a daemon with its cache and control socket in a fresh directory and
// returns once it answers; the test's cleanup stops it (SIGTERM: it unmounts everything).
func startDfnydusDaemon(t testing.TB, o daemonOptions) *dfnydusDaemon {
	t.Helper()
	dir, err := os.MkdirTemp("/var/tmp", "dfd-") // short: the socket path
	must(t, err)
	if o.Prefetch == "" {
		o.Prefetch = "off"
	}
	if o.LogLevel == "" {
		o.LogLevel = "info"
	}
	d := &dfnydusDaemon{t: t, socket: filepath.Join(dir, "control.sock"), cacheDir: filepath.Join(dir, "cache"), dir: dir,
		logs: &testenv.LogBuffer{}, done: make(chan struct{})}
	if o.Socket != "" {
		d.socket = o.Socket
	}
	cfg := filepath.Join(dir, "dfnydus.yaml")
	must(t, os.WriteFile(cfg, []byte(fmt.Sprintf("cacheDir: %s\ncontrolSocket: %s\nprefetch:\n  mode: %s\nlog:\n  level: %s\n%s",
		d.cacheDir, d.socket, o.Prefetch, o.LogLevel, o.Extra)), 0o644))
	if o.Node != nil {
		d.cmd = o.Node.Command(context.Background(), testenv.Binary(t), "daemon", "--config", cfg)
	} else {
		d.cmd = exec.Command(testenv.Binary(t), "daemon", "--config", cfg)
	}
	d.cmd.Stdout, d.cmd.Stderr = d.logs, d.logs
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	must(t, d.cmd.Start())
	go func() { _ = d.cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("dfnydus daemon log (tail):\n%s", tail(d.logs.String(), 60))
		}
		d.close()
	})
	deadline := time.Now().Add(time.Minute)
	for {
		if r := testenv.Exec(t, testenv.Binary(t), "list", "--daemon-socket", d.socket); r.Err == nil {
			break
		}
		select {
		case <-d.done:
			t.Fatalf("dfnydus daemon exited:\n%s", d.logs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("dfnydus daemon: no answer on %s:\n%s", d.socket, d.logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return d
}

// close stops the daemon and removes its directory (cache included) and what it left mounted there.
func (d *dfnydusDaemon) close() {
	d.once.Do(func() {
		d.stop()
		for _, mp := range mountsUnder(d.dir) {
			_ = syscall.Unmount(mp, syscall.MNT_DETACH)
		}
		if err := os.RemoveAll(d.dir); err != nil {
			d.t.Logf("cleanup: %v", err)
		}
	})
}

// stop ends the daemon with SIGTERM, then SIGKILL.
func (d *dfnydusDaemon) stop() {
	select {
	case <-d.done:
		return
	default:
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(30 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
	}
}

// daemonMount is one entry of `dfnydus list --json`.
type daemonMount struct {
	Mountpoint string    `json:"mountpoint"`
	Image      string    `json:"image"`
	Source     string    `json:"source"`
	Started    time.Time `json:"started"`
	P2P        bool      `json:"p2p"`
	Prefetch   string    `json:"prefetch"`
	FSDriver   string    `json:"fs_driver"`
}

// list is `dfnydus list --daemon-socket S --json`.
func (d *dfnydusDaemon) list(t testing.TB) []daemonMount {
	t.Helper()
	out := testenv.MustExec(t, testenv.Binary(t), "list", "--daemon-socket", d.socket, "--json")
	var ms []daemonMount
	if err := json.Unmarshal([]byte(out), &ms); err != nil {
		t.Fatalf("dfnydus list --json: %v\n%s", err, out)
	}
	return ms
}

// ctrCmd is ctrclient with the harness's socket, namespace and state dir, not started.
func (h *harness) ctrCmd(args ...string) *exec.Cmd {
	full := append([]string{"-a", h.ctrdSock, "-n", h.ns, "-state", filepath.Join(h.dir, "run")}, args...)
	if h.netns != "" {
		return exec.Command("nsenter", append([]string{"--net=" + h.netns, "--", h.ctrclient}, full...)...)
	}
	return exec.Command(h.ctrclient, full...)
}

// nydusdLog is what the nydusd with pid logged (its lines in the snapshotter's output).
func nydusdLog(h *harness, pid int) string {
	var out []string
	for _, l := range strings.Split(h.snapLogs.String(), "\n") {
		if strings.Contains(l, fmt.Sprintf(`{"pid": %d`, pid)) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestNydusdMountsThroughTheDfnydusDaemon: with a dfnydus daemon answering on DFNYDUS_SOCKET in
// the snapshotter's environment, the nydusd the snapshotter launches mounts through the daemon
// (its store, its P2P): the daemon lists the snapshot's mount, a SIGKILLed nydusd leaves it served
// (its successor adopts it, a running container keeps its files), and rmi unmounts it there.
func TestNydusdMountsThroughTheDfnydusDaemon(t *testing.T) {
	rootfs := testenv.Rootfs(t)
	tools(t)
	dd := startDfnydusDaemon(t, daemonOptions{})
	h := startHarness(t, harnessOptions{RecoverPolicy: "restart", SnapshotterEnv: []string{"DFNYDUS_SOCKET=" + dd.socket}})
	reg := registrytest.Start(t, registrytest.Options{})
	work := testenv.TempDir(t)
	_, ref := pushImage(t, reg, work, rootfs, "debian")
	debVersion, err := os.ReadFile(filepath.Join(rootfs, "etc", "debian_version"))
	must(t, err)
	script := "cat /etc/debian_version && sha256sum /usr/bin/dpkg | cut -d' ' -f1"
	want := string(debVersion) + sha256File(t, filepath.Join(rootfs, "usr", "bin", "dpkg")) + "\n"

	var front nydusdProc
	var served daemonMount
	t.Run("a container runs from the image the daemon mounted", func(t *testing.T) {
		h.mustCtr("pull", "-snapshotter", "nydus", "-plain-http", ref)
		r := h.mustCtr("run", "-snapshotter", "nydus", "-id", "first", ref, "/bin/sh", "-c", script)
		if r.Stdout != want {
			t.Errorf("container printed %q, want %q", r.Stdout, want)
		}
		ds := h.nydusds()
		if len(ds) != 1 {
			t.Fatalf("%d nydusd processes, want 1", len(ds))
		}
		front = ds[0]
		mp := front.flag("--mountpoint")
		ms := dd.list(t)
		if len(ms) != 1 || ms[0].Mountpoint != mp || !strings.Contains(ms[0].Image, "debian-nydus") || !strings.HasPrefix(ms[0].Source, "registry") {
			t.Fatalf("dfnydus list: %+v, want the snapshot's mount %s of debian-nydus from the registry", ms, mp)
		}
		served = ms[0]
		// nydusd logs to its stderr, which the snapshotter passes on to its own.
		if log := nydusdLog(h, front.pid); !strings.Contains(log, "mounting through the dfnydus daemon") {
			t.Errorf("the nydusd log does not say it mounts through the daemon:\n%s", log)
		}
	})
	if t.Failed() {
		return
	}

	t.Run("kill -9 of the nydusd: a running container keeps its files, the next container works", func(t *testing.T) {
		// The holder runs across the kill and reads a file nothing read before once the test
		// creates /go in its root. The snapshotter's clean-up after the kill unmounts the image's
		// mountpoint, but the holder's overlay keeps (a private clone of) the daemon's FUSE mount:
		// it must go on serving, and the restarted nydusd gets the mountpoint mounted anew.
		holder := h.ctrCmd("run", "-snapshotter", "nydus", "-id", "holder", ref, "/bin/sh", "-c",
			"echo up; while [ ! -e /go ]; do sleep 0.05; done; sha256sum /usr/bin/perl | cut -d' ' -f1")
		out := &testenv.LogBuffer{}
		holder.Stdout, holder.Stderr = out, out
		must(t, holder.Start())
		held := make(chan struct{})
		var heldErr error
		go func() { heldErr = holder.Wait(); close(held) }()
		defer func() {
			_ = holder.Process.Signal(syscall.SIGTERM) // ctrclient kills and deletes its container
			<-held
		}()
		h.waitFor("the holder container to start", func() bool { return strings.Contains(out.String(), "up\n") })

		must(t, syscall.Kill(front.pid, syscall.SIGKILL))
		var next nydusdProc
		h.waitFor("the snapshotter to start a new nydusd that reaches RUNNING", func() bool {
			for _, p := range h.nydusds() {
				if p.pid != front.pid && p.flag("--mountpoint") == front.flag("--mountpoint") {
					if st, err := daemonState(p.flag("--apisock")); err == nil && st == "RUNNING" {
						next = p
						return true
					}
				}
			}
			return false
		})
		if ms := dd.list(t); len(ms) != 1 || ms[0].Mountpoint != served.Mountpoint {
			t.Errorf("after the kill the daemon lists %+v, want one mount at %s", ms, served.Mountpoint)
		}
		if log := nydusdLog(h, next.pid); !strings.Contains(log, "mounted by the dfnydus daemon") {
			t.Errorf("the new nydusd did not mount through the daemon:\n%s", log)
		}

		rootfsDir := filepath.Join(h.dir, "state", "io.containerd.runtime.v2.task", h.ns, "holder", "rootfs")
		must(t, os.WriteFile(filepath.Join(rootfsDir, "go"), nil, 0o644))
		<-held
		if heldErr != nil {
			t.Fatalf("the holder container failed after the kill: %v\n%s", heldErr, out)
		}
		if want := sha256File(t, filepath.Join(rootfs, "usr", "bin", "perl")); !strings.Contains(out.String(), "up\n"+want+"\n") {
			t.Errorf("the holder read /usr/bin/perl after the kill as %q, want its sha256 %s", out, want)
		}

		r := h.mustCtr("run", "-snapshotter", "nydus", "-id", "after-kill", ref, "/bin/sh", "-c", script)
		if r.Stdout != want {
			t.Errorf("container after the kill printed %q, want %q", r.Stdout, want)
		}
		front = next
	})
	if t.Failed() {
		return
	}

	t.Run("removing the image unmounts it from the daemon", func(t *testing.T) {
		mp := front.flag("--mountpoint")
		h.mustCtr("rmi", ref)
		h.waitFor("the nydusd to exit", func() bool { return len(h.nydusds()) == 0 })
		h.waitFor("the daemon to unmount the image", func() bool { return len(dd.list(t)) == 0 })
		if src := mountSource(mp); src != "" {
			t.Errorf("%s is still mounted (%s) after the image was removed", mp, src)
		}
		if ms := mountsUnder(h.snapRoot); len(ms) != 0 {
			t.Errorf("mounts left under the snapshotter's root: %q", ms)
		}
	})
}
