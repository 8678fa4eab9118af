// Package daemon_test checks `dfnydus daemon` end to end: the real binary serving several images
// converted into the real registry, driven by `dfnydus mount / list / stat / umount / preheat`
// through its control socket, and stopped with SIGTERM.
package daemon_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dfnydus/dfnydus/kernelfs"
	"github.com/dfnydus/dfnydus/peer"
	"github.com/dfnydus/dfnydus/peer/daemon"
	"github.com/dfnydus/dfnydus/test/internal/registrytest"
	"github.com/dfnydus/dfnydus/test/internal/testenv"
)

// proc is a running `dfnydus daemon`.
type proc struct {
	cmd    *exec.Cmd
	socket string
	cache  string
	stderr *testenv.LogBuffer
	done   chan struct{} // closed when the process has exited
	err    error         // its exit status, once done
}

// startDaemon writes a config under dir and runs `dfnydus daemon --config` until it answers on its
// control socket. The process is stopped when the test ends.
func startDaemon(t *testing.T, dir string) *proc {
	t.Helper()
	// A unix socket path holds at most 107 bytes: keep the control socket's short.
	sockDir, err := os.MkdirTemp("", "dfd-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	p := &proc{socket: filepath.Join(sockDir, "control.sock"), cache: filepath.Join(dir, "cache"),
		stderr: &testenv.LogBuffer{}, done: make(chan struct{})}
	cfg := filepath.Join(dir, "dfnydus.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`# written by the test
cacheDir: %s
controlSocket: %s
prefetch:
  mode: off
source:
  retries: 2
log:
  level: info
`, p.cache, p.socket)), 0o644); err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(testenv.Binary(t), "daemon", "--config", cfg)
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("daemon log:\n%s", p.stderr.String())
		}
	})
	c, err := daemon.Dial(p.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	deadline := time.Now().Add(time.Minute)
	for {
		if fi, err := os.Stat(p.socket); err == nil && fi.Mode().Type() == os.ModeSocket {
			if _, err := c.Version(context.Background()); err == nil {
				return p
			}
		}
		select {
		case <-p.done:
			t.Fatalf("dfnydus daemon exited: %v\n%s", p.err, p.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("dfnydus daemon does not answer on %s\n%s", p.socket, p.stderr.String())
		}
	}
}

// stop sends SIGTERM and waits for the daemon to exit; one that does not is killed and its mounts
// detached. Calling it again does nothing.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(time.Minute):
		t.Errorf("dfnydus daemon did not exit after SIGTERM; killing it\n%s", p.stderr.String())
		p.cmd.Process.Kill()
		<-p.done
	}
}

// run runs dfnydus against the daemon's socket.
func (p *proc) run(t *testing.T, args ...string) testenv.Result {
	t.Helper()
	return testenv.Run(t, append(args, "--daemon-socket", p.socket)...)
}

func (p *proc) mustRun(t *testing.T, args ...string) string {
	t.Helper()
	r := p.run(t, args...)
	if r.Err != nil {
		t.Fatalf("dfnydus %s: %v\n%s", strings.Join(args, " "), r.Err, r.Stderr)
	}
	return r.Stdout
}

func (p *proc) list(t *testing.T) []daemon.MountInfo {
	t.Helper()
	var mounts []daemon.MountInfo
	if err := json.Unmarshal([]byte(p.mustRun(t, "list", "--json")), &mounts); err != nil {
		t.Fatal(err)
	}
	return mounts
}

func (p *proc) stat(t *testing.T, mp string) peer.MountInfo {
	t.Helper()
	var info peer.MountInfo
	if err := json.Unmarshal([]byte(p.mustRun(t, "stat", "--json", mp)), &info); err != nil {
		t.Fatal(err)
	}
	return info
}

// mountpoints lists the mountpoints of the daemon's mounts.
func mountpoints(ms []daemon.MountInfo) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Mountpoint)
	}
	return out
}

// mounted reports whether mp is in the mount table (the daemon shares this mount namespace).
func mounted(t *testing.T, mp string) bool {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 4 && fields[4] == mp {
			return true
		}
	}
	return false
}

// makeTree writes a small tree: text, an incompressible file over several chunks, a symlink, a
// nested directory. seed makes the trees of two images differ.
func makeTree(t *testing.T, dir string, seed uint64) string {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed))
	for _, d := range []string{"etc", "usr/lib/app", "var/empty"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	big := make([]byte, 3<<20+12345)
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	files := map[string][]byte{
		"etc/os-release":       []byte(fmt.Sprintf("NAME=image-%d\n", seed)),
		"usr/lib/app/data.bin": big,
		"usr/lib/app/conf":     []byte(strings.Repeat("key=value\n", 1000)),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("../etc/os-release", filepath.Join(dir, "usr", "os-release")); err != nil {
		t.Fatal(err)
	}
	return dir
}

// convertTree pushes tree as a one-layer OCI image (umoci + skopeo) and converts it to nydus with
// `dfnydus convert`; it returns the nydus image's reference.
func convertTree(t *testing.T, reg *registrytest.Registry, dir, tree, name string) string {
	t.Helper()
	testenv.RequireTool(t, "umoci")
	testenv.RequireTool(t, "skopeo")
	layout := filepath.Join(dir, name+"-layout")
	testenv.MustExec(t, "umoci", "init", "--layout", layout)
	testenv.MustExec(t, "umoci", "new", "--image", layout+":v1")
	tarball := filepath.Join(dir, name+".tar")
	// pax headers keep sub-second mtimes, which the comparison with the source tree checks.
	testenv.MustExec(t, "tar", "--format=posix", "--numeric-owner", "-C", tree, "-cf", tarball, ".")
	testenv.MustExec(t, "umoci", "raw", "add-layer", "--image", layout+":v1", tarball)
	src, dst := reg.Ref(name, "v1"), reg.Ref(name+"-nydus", "v1")
	testenv.MustExec(t, "skopeo", "copy", "--quiet", "--dest-tls-verify=false", "oci:"+layout+":v1", "docker://"+src)
	testenv.MustRun(t, "convert", "--log-level", "warn", "--work-dir", filepath.Join(dir, "work-"+name), src, dst)
	return dst
}

// The daemon, as an operator lives it: start it with a config, mount two images from the registry
// through it, read them, look at them with stat and list, unmount one with dfnydus and one from
// outside, and stop it with SIGTERM while a mount is busy: nothing stays mounted.
func TestDaemonScenario(t *testing.T) {
	testenv.RequireRoot(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	reg := registrytest.Start(t, registrytest.Options{})
	dir := testenv.TempDir(t)
	treeA := makeTree(t, filepath.Join(dir, "tree-a"), 1)
	treeB := makeTree(t, filepath.Join(dir, "tree-b"), 2)
	refA := convertTree(t, reg, dir, treeA, "app-a")
	refB := convertTree(t, reg, dir, treeB, "app-b")
	mpA, mpB := filepath.Join(dir, "mnt-a"), filepath.Join(dir, "mnt-b")
	for _, mp := range []string{mpA, mpB} {
		if err := os.Mkdir(mp, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { // after a failure: never leave a mount behind
			if mounted(t, mp) {
				unix.Unmount(mp, unix.MNT_DETACH)
			}
		})
	}

	d := startDaemon(t, dir)
	t.Run("mount returns once the daemon serves the image", func(t *testing.T) {
		if out := d.mustRun(t, "mount", refA, mpA); strings.TrimSpace(out) != mpA {
			t.Errorf("mount printed %q, want the mountpoint", out)
		}
		// The config says prefetch off; the flag overrides it for this mount.
		d.mustRun(t, "mount", "--prefetch", "all", refB, mpB)
		for _, mp := range []string{mpA, mpB} {
			if !mounted(t, mp) {
				t.Errorf("%s is not mounted after dfnydus mount returned", mp)
			}
		}
	})
	t.Run("both images read back as their source trees", func(t *testing.T) {
		testenv.AssertSameTree(t, testenv.Snapshot(t, treeA), testenv.Snapshot(t, mpA))
		testenv.AssertSameTree(t, testenv.Snapshot(t, treeB), testenv.Snapshot(t, mpB))
	})
	t.Run("list shows both mounts", func(t *testing.T) {
		ms := d.list(t)
		if got := mountpoints(ms); len(got) != 2 || got[0] != mpA || got[1] != mpB {
			t.Fatalf("list: %v, want [%s %s]", got, mpA, mpB)
		}
		for i, want := range []struct{ ref, prefetch string }{{refA, "off"}, {refB, "all"}} {
			// The image is named by its reference, resolved to the manifest's digest.
			if m := ms[i]; m.Source != "registry" || !strings.HasPrefix(m.Image, want.ref+"@sha256:") || m.Prefetch != want.prefetch || m.P2P {
				t.Errorf("list entry %+v: want a registry image %s@sha256:..., prefetch %s, no P2P", m, want.ref, want.prefetch)
			}
		}
		if out := d.mustRun(t, "list"); !strings.Contains(out, "MOUNTPOINT") || !strings.Contains(out, mpA) || !strings.Contains(out, mpB) {
			t.Errorf("list table:\n%s", out)
		}
	})
	t.Run("stat answers through the daemon and through the mount's own socket", func(t *testing.T) {
		info := d.stat(t, mpA)
		// Verified chunks reach the store in the background: wait until all of A's are there.
		for deadline := time.Now().Add(time.Minute); len(info.Images) == 1 && info.Images[0].ChunksCached < info.Images[0].Chunks; {
			if time.Now().After(deadline) {
				t.Fatalf("%s read in full, but the store holds %d/%d chunks", mpA, info.Images[0].ChunksCached, info.Images[0].Chunks)
			}
			time.Sleep(20 * time.Millisecond)
			info = d.stat(t, mpA)
		}
		if info.Mountpoint != mpA || info.PID != d.cmd.Process.Pid || len(info.Images) != 1 {
			t.Fatalf("stat %+v: want %s served by pid %d", info, mpA, d.cmd.Process.Pid)
		}
		if s := info.Images[0]; s.BytesOnDemand == 0 || s.ChunksCached == 0 || s.Prefetch.State != peer.PrefetchIdle || s.Source != "registry" {
			t.Errorf("stats of %s after reading everything: %+v", mpA, s)
		}
		if out := d.mustRun(t, "stat", mpB); !strings.Contains(out, "mountpoint "+mpB) || !strings.Contains(out, "prefetch") {
			t.Errorf("stat output:\n%s", out)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		own, err := peer.QueryStat(ctx, peer.SocketPath(d.cache, mpA))
		if err != nil || own.Mountpoint != mpA || own.PID != d.cmd.Process.Pid {
			t.Errorf("per-mount API: %+v, %v", own, err)
		}
	})
	t.Run("a mount that fails leaves nothing", func(t *testing.T) {
		mp := filepath.Join(dir, "mnt-missing-image")
		if err := os.Mkdir(mp, 0o755); err != nil {
			t.Fatal(err)
		}
		r := d.run(t, "mount", reg.Ref("no-such-image", "v1"), mp)
		if r.Err == nil || !strings.Contains(r.Stderr, "no-such-image") {
			t.Errorf("mount of a missing image: %v\n%s", r.Err, r.Stderr)
		}
		if got := mountpoints(d.list(t)); len(got) != 2 || mounted(t, mp) {
			t.Errorf("after a failed mount: list %v, mounted %v", got, mounted(t, mp))
		}
		if _, err := os.Stat(peer.SocketPath(d.cache, mp)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("API socket of the failed mount: %v", err)
		}
	})
	t.Run("preheat without a scheduler says so", func(t *testing.T) {
		r := d.run(t, "preheat", refA)
		if r.Err == nil || !strings.Contains(r.Stderr, "no scheduler is configured") {
			t.Errorf("preheat: %v\n%s", r.Err, r.Stderr)
		}
	})
	t.Run("a kernel-mode mount through the control API", func(t *testing.T) {
		if err := kernelfs.Supported(); err != nil {
			t.Skipf("kernel mode: %v", err)
		}
		mpK := filepath.Join(dir, "mnt-kernel")
		if err := os.Mkdir(mpK, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if mounted(t, mpK) {
				unix.Unmount(mpK, unix.MNT_DETACH)
			}
		})
		d.mustRun(t, "mount", "--fs-driver", "erofs", refA, mpK)
		if got := testenv.FSType(t, mpK); got != "erofs" {
			t.Fatalf("%s is a %q mount, want erofs", mpK, got)
		}
		testenv.AssertSameTree(t, testenv.Snapshot(t, treeA), testenv.Snapshot(t, mpK))
		drivers := map[string]string{}
		for _, m := range d.list(t) {
			drivers[m.Mountpoint] = m.FSDriver
			if want := map[bool]string{true: "erofs", false: "fuse"}[m.Mountpoint == mpK]; m.FSDriver != want {
				t.Errorf("list says %s is served by %q, want %s", m.Mountpoint, m.FSDriver, want)
			}
		}
		if _, ok := drivers[mpK]; !ok {
			t.Errorf("list %v does not show %s", drivers, mpK)
		}
		d.mustRun(t, "umount", mpK)
		if mounted(t, mpK) {
			t.Errorf("%s still mounted after umount", mpK)
		}
		if left := testenv.MountsUnder(t, d.cache); len(left) > 0 {
			t.Errorf("mounts left under the cache dir after the kernel-mode umount: %v", left)
		}
	})
	t.Run("dfnydus umount unmounts through the daemon", func(t *testing.T) {
		d.mustRun(t, "umount", mpA)
		if mounted(t, mpA) {
			t.Errorf("%s still mounted", mpA)
		}
		if got := mountpoints(d.list(t)); len(got) != 1 || got[0] != mpB {
			t.Errorf("list after umount: %v", got)
		}
		if r := d.run(t, "stat", mpA); r.Err == nil {
			t.Errorf("stat of an unmounted mountpoint succeeded:\n%s", r.Stdout)
		}
	})
	t.Run("an unmount from outside is noticed", func(t *testing.T) {
		d.mustRun(t, "mount", refA, mpA)
		testenv.MustExec(t, "umount", mpA)
		deadline := time.Now().Add(time.Minute)
		for len(d.list(t)) != 1 {
			if time.Now().After(deadline) {
				t.Fatalf("the daemon still lists %v after umount(8)", mountpoints(d.list(t)))
			}
			time.Sleep(20 * time.Millisecond)
		}
		// The image mounts again, served from the store.
		d.mustRun(t, "mount", refA, mpA)
		testenv.AssertSameTree(t, testenv.Snapshot(t, treeA), testenv.Snapshot(t, mpA))
		if s := d.stat(t, mpA).Images[0]; s.BytesFetched != 0 {
			t.Errorf("re-reading a mounted-again image fetched %d bytes, want 0 (all in the store)", s.BytesFetched)
		}
	})
	t.Run("SIGTERM unmounts everything, busy mounts too", func(t *testing.T) {
		busy, err := os.Open(filepath.Join(mpB, "etc", "os-release"))
		if err != nil {
			t.Fatal(err)
		}
		defer busy.Close()
		d.cmd.Process.Signal(syscall.SIGTERM)
		// The busy mount is detached at once; the daemon exits when its last file is closed.
		for mounted(t, mpA) || mounted(t, mpB) {
			select {
			case <-d.done:
				t.Fatalf("the daemon exited (%v) with mounts still in the table", d.err)
			case <-time.After(20 * time.Millisecond):
			}
		}
		busy.Close()
		<-d.done
		if d.err != nil {
			t.Errorf("daemon exit: %v\n%s", d.err, d.stderr.String())
		}
		if _, err := os.Stat(d.socket); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("control socket after exit: %v", err)
		}
		if !strings.Contains(d.stderr.String(), "daemon stopped") {
			t.Errorf("no shutdown log:\n%s", d.stderr.String())
		}
	})
	t.Run("without a daemon mount runs in the foreground on the same store", func(t *testing.T) {
		ready := filepath.Join(dir, "ready")
		cmd := exec.Command(testenv.Binary(t), "mount", "--daemon-socket", d.socket, "--cache-dir", d.cache,
			"--ready-file", ready, "--prefetch", "off", refB, mpB)
		logs := &testenv.LogBuffer{}
		cmd.Stderr = logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		for {
			if _, err := os.Stat(ready); err == nil {
				break
			}
			select {
			case err := <-exited:
				t.Fatalf("foreground mount exited: %v\n%s", err, logs.String())
			case <-time.After(20 * time.Millisecond):
			}
		}
		testenv.AssertSameTree(t, testenv.Snapshot(t, treeB), testenv.Snapshot(t, mpB))
		testenv.MustRun(t, "umount", "--daemon-socket", d.socket, mpB)
		if err := <-exited; err != nil {
			t.Errorf("foreground mount: %v\n%s", err, logs.String())
		}
	})
}
