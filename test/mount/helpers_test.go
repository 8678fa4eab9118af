// Package mount_test checks `dfnydus mount` end to end: real FUSE mounts of nydus images converted
// into the real registry, served from the registry, S3 (versitygw) and a local directory.
package mount_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dfnydus/dfnydus/peer"
	"github.com/dfnydus/dfnydus/test/internal/registrytest"
	"github.com/dfnydus/dfnydus/test/internal/testenv"
)

// env is a registry with a counting, fault-injecting proxy in front, and a cache dir.
type env struct {
	reg   *registrytest.Registry
	proxy *registrytest.Proxy
	dir   string
	cache string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	testenv.RequireRoot(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	reg := registrytest.Start(t, registrytest.Options{})
	dir := testenv.TempDir(t)
	return &env{reg: reg, proxy: registrytest.NewProxy(t, reg.Host()), dir: dir, cache: filepath.Join(dir, "cache")}
}

// convertTree pushes tree as a one-layer OCI image (umoci + skopeo) and converts it to nydus;
// it returns the nydus reference behind the proxy.
func (e *env) convertTree(t *testing.T, tree, name string, extra ...string) string {
	t.Helper()
	layout := filepath.Join(e.dir, name+"-layout")
	testenv.MustExec(t, "umoci", "init", "--layout", layout)
	testenv.MustExec(t, "umoci", "new", "--image", layout+":v1")
	tarball := filepath.Join(e.dir, name+".tar")
	testenv.MustExec(t, "tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-C", tree, "-cf", tarball, ".")
	testenv.MustExec(t, "umoci", "raw", "add-layer", "--image", layout+":v1", tarball)
	os.Remove(tarball)
	src := e.reg.Ref(name, "v1")
	testenv.MustExec(t, "skopeo", "copy", "--quiet", "--dest-tls-verify=false", "oci:"+layout+":v1", "docker://"+src)
	dst := e.reg.Ref(name+"-nydus", "v1")
	args := append([]string{"convert", "--log-level", "warn", "--work-dir", filepath.Join(e.dir, "work")}, extra...)
	testenv.MustRun(t, append(args, src, dst)...)
	return e.proxy.Ref(name+"-nydus", "v1")
}

// mount is a running `dfnydus mount` process.
type mount struct {
	cmd    *exec.Cmd
	mp     string
	cache  string
	stderr *testenv.LogBuffer
	done   chan struct{} // closed when the process has exited
	err    error         // its exit status, once done
}

// startMount runs `dfnydus mount ARGS... MOUNTPOINT` and waits until it serves. The mount is stopped
// when t ends (stop is idempotent, so steps may stop it earlier).
func startMount(t *testing.T, cache, mp string, args ...string) *mount {
	t.Helper()
	if err := os.MkdirAll(mp, 0o755); err != nil {
		t.Fatal(err)
	}
	ready := filepath.Join(t.TempDir(), "ready")
	full := append([]string{"mount", "--cache-dir", cache, "--ready-file", ready, "--log-level", "info"}, args...)
	full = append(full, mp)
	m := &mount{cmd: exec.Command(testenv.Binary(t), full...), mp: mp, cache: cache, stderr: &testenv.LogBuffer{}, done: make(chan struct{})}
	m.cmd.Stderr = m.stderr
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { m.err = m.cmd.Wait(); close(m.done) }()
	t.Cleanup(func() { m.stop(t) })
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := os.Stat(ready); err == nil {
			return m
		}
		select {
		case <-m.done:
			t.Fatalf("dfnydus mount exited: %v\n%s", m.err, m.log())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("dfnydus mount did not become ready\n%s", m.log())
		}
	}
}

// stop unmounts with `dfnydus umount` and waits for the process to exit; a process that does not
// exit is killed. Calling it again does nothing.
func (m *mount) stop(t *testing.T) {
	t.Helper()
	select {
	case <-m.done:
		unix.Unmount(m.mp, unix.MNT_DETACH) // a killed process leaves its mount behind
		return
	default:
	}
	testenv.Run(t, "umount", m.mp)
	select {
	case <-m.done:
	case <-time.After(30 * time.Second):
		t.Errorf("dfnydus mount did not exit after umount; killing it\n%s", m.log())
		m.cmd.Process.Kill()
		<-m.done
		unix.Unmount(m.mp, unix.MNT_DETACH)
	}
}

// kill9 kills the mount process as a crash would, leaving its FUSE mount dangling.
func (m *mount) kill9(t *testing.T) {
	t.Helper()
	m.cmd.Process.Signal(syscall.SIGKILL)
	<-m.done
}

// log is what the mount process wrote to stderr so far.
func (m *mount) log() string { return m.stderr.String() }

func (m *mount) stat(t *testing.T) peer.Stats {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	info, err := peer.QueryStat(ctx, peer.SocketPath(m.cache, m.mp))
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Images) != 1 {
		t.Fatalf("stat lists %d images", len(info.Images))
	}
	return info.Images[0]
}

// waitPrefetch waits for the background prefetch to finish.
func (m *mount) waitPrefetch(t *testing.T) peer.Stats {
	t.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		s := m.stat(t)
		if s.Prefetch.State == peer.PrefetchDone || s.Prefetch.State == peer.PrefetchIncomplete {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("prefetch still %+v", s.Prefetch)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func blobBytes(p *registrytest.Proxy) int64 { return p.Counts(registrytest.KindBlobGet).BytesOut }

var _ = json.Marshal

var syscall_EIO = syscall.EIO

func peerSocket(m *mount) string { return peer.SocketPath(m.cache, m.mp) }
