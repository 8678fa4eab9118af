package containerd_test

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/dfnydus/dfnydus/kernelfs"
	"github.com/dfnydus/dfnydus/test/internal/registrytest"
	"github.com/dfnydus/dfnydus/test/internal/testenv"
)

// mountEntry is one line of /proc/self/mountinfo: where, what type, from what, with which
// file-system options (overlay's lowerdir is there).
type mountEntry struct {
	point, fstype, source, opts string
}

func mountTable(t testing.TB) []mountEntry {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	must(t, err)
	var out []mountEntry
	for _, l := range strings.Split(string(data), "\n") {
		before, after, ok := strings.Cut(l, " - ")
		f, tail := strings.Fields(before), strings.Fields(after)
		if !ok || len(f) < 5 || len(tail) < 3 {
			continue
		}
		out = append(out, mountEntry{point: f[4], fstype: tail[0], source: tail[1], opts: tail[2]})
	}
	return out
}

// mountsIn returns the mounts whose mountpoint or source lies under dir.
func mountsIn(t testing.TB, dir string) []mountEntry {
	t.Helper()
	var out []mountEntry
	for _, e := range mountTable(t) {
		for _, p := range []string{e.point, e.source} {
			if p == dir || strings.HasPrefix(p, dir+"/") {
				out = append(out, e)
				break
			}
		}
	}
	return out
}

// TestNydusSnapshotterKernelMode: with DFNYDUS_FS_DRIVER=erofs in the snapshotter's environment,
// the nydusd it launches serves a RAFS v6 image with the kernel's EROFS: a container runs a
// program from it and reads a binary right, the running container's overlay has the EROFS mount
// as its lower dir (the view FUSE mount under the snapshotter's cache beside it), and removing the
// image leaves neither mounted. A SIGKILLed nydusd is restarted (recover_policy restart) and
// mounts the image anew in kernel mode, leaving nothing of its predecessor's mounted.
func TestNydusSnapshotterKernelMode(t *testing.T) {
	rootfs := testenv.Rootfs(t)
	testenv.RequireRoot(t)
	if err := kernelfs.Supported(); err != nil {
		t.Skip(err)
	}
	h := startHarness(t, harnessOptions{SnapshotterEnv: []string{"DFNYDUS_FS_DRIVER=erofs"}})
	reg := registrytest.Start(t, registrytest.Options{})
	work := testenv.TempDir(t)
	_, ref := pushImage(t, reg, work, rootfs, "debian")
	debVersion, err := os.ReadFile(filepath.Join(rootfs, "etc", "debian_version"))
	must(t, err)
	script := "cat /etc/debian_version && sha256sum /usr/bin/dpkg | cut -d' ' -f1"
	want := string(debVersion) + sha256File(t, filepath.Join(rootfs, "usr", "bin", "dpkg")) + "\n"

	h.mustCtr("pull", "-snapshotter", "nydus", "-plain-http", ref)
	r := h.mustCtr("run", "-snapshotter", "nydus", "-id", "first", ref, "/bin/sh", "-c", script)
	if r.Stdout != want {
		t.Errorf("container printed %q, want %q", r.Stdout, want)
	}
	ds := h.nydusds()
	if len(ds) != 1 {
		t.Fatalf("%d dfnydus nydusd processes, want 1", len(ds))
	}
	mp := ds[0].flag("--mountpoint")
	if log := nydusdLog(h, ds[0].pid); !strings.Contains(log, `"fs_driver": "erofs"`) {
		t.Errorf("the nydusd log does not say it mounted with erofs:\n%s", log)
	}

	t.Run("a running container's lower dir is the EROFS mount", func(t *testing.T) {
		// The holder prints its line and sleeps until ctrclient is told to stop it.
		holder := h.ctrCmd("run", "-snapshotter", "nydus", "-id", "holder", ref, "/bin/sh", "-c",
			"cat /etc/debian_version; exec sleep 600")
		stdout, err := holder.StdoutPipe()
		must(t, err)
		errs := &testenv.LogBuffer{}
		holder.Stderr = errs
		must(t, holder.Start())
		defer func() {
			_ = holder.Process.Signal(syscall.SIGTERM) // ctrclient kills and deletes its container
			_ = holder.Wait()
		}()
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err != nil || line != string(debVersion) {
			t.Fatalf("the holder printed %q (%v), want %q\n%s", line, err, debVersion, errs)
		}
		rootfsDir := filepath.Join(h.dir, "state", "io.containerd.runtime.v2.task", h.ns, "holder", "rootfs")
		table := mountTable(t)
		var lower []string
		for _, e := range table {
			if e.point == rootfsDir && e.fstype == "overlay" {
				for _, o := range strings.Split(e.opts, ",") {
					if v, ok := strings.CutPrefix(o, "lowerdir="); ok {
						lower = strings.Split(v, ":")
					}
				}
			}
		}
		if len(lower) == 0 {
			t.Fatalf("no overlay with a lowerdir at the holder's rootfs %s", rootfsDir)
		}
		erofsLower := false
		for _, e := range table {
			if e.fstype == "erofs" && e.point == mp && strings.Contains(strings.Join(lower, ":"), mp) {
				erofsLower = true
			}
		}
		if !erofsLower {
			t.Errorf("the holder's lower dirs %q do not include the EROFS mount at %s; mounts there: %+v", lower, mp, mountsIn(t, mp))
		}
		views := 0
		for _, e := range mountsIn(t, h.snapRoot) {
			if e.fstype == "fuse.dfnydus-view" {
				views++
			}
		}
		if views != 1 {
			t.Errorf("%d view FUSE mounts under the snapshotter's root, want 1: %+v", views, mountsIn(t, h.snapRoot))
		}
	})

	t.Run("kill -9 of the nydusd: the restarted one mounts anew, the next container runs", func(t *testing.T) {
		old := ds[0]
		must(t, syscall.Kill(old.pid, syscall.SIGKILL))
		var next nydusdProc
		h.waitFor("the snapshotter to start a new nydusd that reaches RUNNING", func() bool {
			for _, p := range h.nydusds() {
				if p.pid != old.pid && p.flag("--mountpoint") == mp {
					if st, err := daemonState(p.flag("--apisock")); err == nil && st == "RUNNING" {
						next = p
						return true
					}
				}
			}
			return false
		})
		r := h.mustCtr("run", "-snapshotter", "nydus", "-id", "after-kill", ref, "/bin/sh", "-c", script)
		if r.Stdout != want {
			t.Errorf("container after the restart printed %q, want %q", r.Stdout, want)
		}
		if log := nydusdLog(h, next.pid); !strings.Contains(log, `"fs_driver": "erofs"`) {
			t.Errorf("the restarted nydusd did not mount with erofs:\n%s", log)
		}
		// The killed one's EROFS and view mounts are gone (the snapshotter's clean-up and the new
		// nydusd's): one of each is left, the new one's.
		var erofs, views int
		for _, e := range mountsIn(t, h.dir) {
			switch e.fstype {
			case "erofs":
				erofs++
			case "fuse.dfnydus-view":
				views++
			}
		}
		if erofs != 1 || views != 1 {
			t.Errorf("after the restart %d EROFS and %d view mounts, want 1 and 1: %+v", erofs, views, mountsIn(t, h.dir))
		}
	})

	t.Run("removing the image leaves nothing mounted", func(t *testing.T) {
		h.mustCtr("rmi", ref)
		h.waitFor("the nydusd to exit", func() bool { return len(h.nydusds()) == 0 })
		if ms := mountsIn(t, h.dir); len(ms) != 0 {
			t.Errorf("mounts left under the harness dir after rmi: %+v", ms)
		}
		for _, e := range mountTable(t) {
			if e.fstype == "erofs" && strings.HasPrefix(e.source, h.dir+"/") {
				t.Errorf("an EROFS mount of the image is left: %+v", e)
			}
		}
	})
}

// TestNydusdKernelModeThroughTheDfnydusDaemon: with a dfnydus daemon (its own fsDriver fuse) and
// DFNYDUS_FS_DRIVER=erofs in the snapshotter's environment, nydusd passes the driver with its
// mount request: the daemon serves the snapshot with EROFS, a SIGKILLed nydusd's successor gets
// the image in kernel mode again while a container started before the kill still reads files it
// never read, and rmi leaves nothing mounted.
func TestNydusdKernelModeThroughTheDfnydusDaemon(t *testing.T) {
	rootfs := testenv.Rootfs(t)
	tools(t)
	if err := kernelfs.Supported(); err != nil {
		t.Skip(err)
	}
	dd := startDfnydusDaemon(t, daemonOptions{})
	h := startHarness(t, harnessOptions{SnapshotterEnv: []string{"DFNYDUS_SOCKET=" + dd.socket, "DFNYDUS_FS_DRIVER=erofs"}})
	reg := registrytest.Start(t, registrytest.Options{})
	work := testenv.TempDir(t)
	_, ref := pushImage(t, reg, work, rootfs, "debian")
	debVersion, err := os.ReadFile(filepath.Join(rootfs, "etc", "debian_version"))
	must(t, err)
	script := "cat /etc/debian_version && sha256sum /usr/bin/dpkg | cut -d' ' -f1"
	want := string(debVersion) + sha256File(t, filepath.Join(rootfs, "usr", "bin", "dpkg")) + "\n"

	h.mustCtr("pull", "-snapshotter", "nydus", "-plain-http", ref)
	r := h.mustCtr("run", "-snapshotter", "nydus", "-id", "first", ref, "/bin/sh", "-c", script)
	if r.Stdout != want {
		t.Errorf("container printed %q, want %q", r.Stdout, want)
	}
	ds := h.nydusds()
	if len(ds) != 1 {
		t.Fatalf("%d nydusd processes, want 1", len(ds))
	}
	front, mp := ds[0], ds[0].flag("--mountpoint")
	if ms := dd.list(t); len(ms) != 1 || ms[0].Mountpoint != mp || ms[0].FSDriver != "erofs" {
		t.Fatalf("dfnydus list: %+v, want the snapshot's mount %s with fs_driver erofs", ms, mp)
	}
	if src := mountSource(mp); !strings.HasPrefix(src, "erofs ") {
		t.Errorf("%s is %q, want the daemon's EROFS mount", mp, src)
	}

	t.Run("kill -9 of the nydusd: a running container keeps reading, the next one runs", func(t *testing.T) {
		// The holder reads /usr/bin/perl (nothing read it before) once the kill is over, which the
		// test tells it by creating /go in its root (ctrclient passes no stdin), as the FUSE-mode
		// test does. Its overlay holds the daemon's EROFS mount, which must keep serving.
		holder := h.ctrCmd("run", "-snapshotter", "nydus", "-id", "holder", ref, "/bin/sh", "-c",
			"echo up; while [ ! -e /go ]; do sleep 0.05; done; sha256sum /usr/bin/perl | cut -d' ' -f1")
		stdout, err := holder.StdoutPipe()
		must(t, err)
		errs := &testenv.LogBuffer{}
		holder.Stderr = errs
		must(t, holder.Start())
		br := bufio.NewReader(stdout)
		defer func() {
			_ = holder.Process.Signal(syscall.SIGTERM)
			_ = holder.Wait()
		}()
		if line, err := br.ReadString('\n'); err != nil || line != "up\n" {
			t.Fatalf("the holder printed %q (%v)\n%s", line, err, errs)
		}
		must(t, syscall.Kill(front.pid, syscall.SIGKILL))
		var next nydusdProc
		h.waitFor("the snapshotter to start a new nydusd that reaches RUNNING", func() bool {
			for _, p := range h.nydusds() {
				if p.pid != front.pid && p.flag("--mountpoint") == mp {
					if st, err := daemonState(p.flag("--apisock")); err == nil && st == "RUNNING" {
						next = p
						return true
					}
				}
			}
			return false
		})
		if ms := dd.list(t); len(ms) != 1 || ms[0].Mountpoint != mp || ms[0].FSDriver != "erofs" {
			t.Errorf("after the kill the daemon lists %+v, want one EROFS mount at %s", ms, mp)
		}
		rootfsDir := filepath.Join(h.dir, "state", "io.containerd.runtime.v2.task", h.ns, "holder", "rootfs")
		must(t, os.WriteFile(filepath.Join(rootfsDir, "go"), nil, 0o644))
		line, err := br.ReadString('\n')
		if err == nil {
			err = holder.Wait()
		}
		if want := sha256File(t, filepath.Join(rootfs, "usr", "bin", "perl")) + "\n"; err != nil || line != want {
			t.Errorf("the holder after the kill read /usr/bin/perl as %q (%v), want %q\n%s", line, err, want, errs)
		}
		r := h.mustCtr("run", "-snapshotter", "nydus", "-id", "after-kill", ref, "/bin/sh", "-c", script)
		if r.Stdout != want {
			t.Errorf("container after the kill printed %q, want %q", r.Stdout, want)
		}
		front = next
	})

	t.Run("removing the image leaves nothing mounted", func(t *testing.T) {
		h.mustCtr("rmi", ref)
		h.waitFor("the nydusd to exit", func() bool { return len(h.nydusds()) == 0 })
		h.waitFor("the daemon to unmount the image", func() bool { return len(dd.list(t)) == 0 })
		if ms := mountsIn(t, h.dir); len(ms) != 0 {
			t.Errorf("mounts left under the harness dir after rmi: %+v", ms)
		}
		if ms := mountsIn(t, dd.dir); len(ms) != 0 {
			t.Errorf("mounts left under the daemon's dir after rmi: %+v", ms)
		}
	})
}
