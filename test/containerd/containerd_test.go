package containerd_test

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/dfnydus/dfnydus/test/internal/registrytest"
	"github.com/dfnydus/dfnydus/test/internal/testenv"
)

// pushImage pushes tree as a one-layer OCI image (umoci + skopeo) to reg and converts it with
// `dfnydus convert`; it returns the OCI and the nydus references.
func pushImage(t testing.TB, reg *registrytest.Registry, work, tree, name string) (ociRef, nydusRef string) {
	t.Helper()
	layout := filepath.Join(work, name+"-layout")
	testenv.MustExec(t, "umoci", "init", "--layout", layout)
	testenv.MustExec(t, "umoci", "new", "--image", layout+":v1")
	tarball := filepath.Join(work, name+".tar")
	testenv.MustExec(t, "tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-C", tree, "-cf", tarball, ".")
	testenv.MustExec(t, "umoci", "raw", "add-layer", "--image", layout+":v1", tarball)
	os.Remove(tarball)
	ociRef = reg.Ref(name, "v1")
	testenv.MustExec(t, "skopeo", "copy", "--quiet", "--dest-tls-verify=false", "oci:"+layout+":v1", "docker://"+ociRef)
	os.RemoveAll(layout)
	nydusRef = reg.Ref(name+"-nydus", "v1")
	testenv.MustRun(t, "convert", "--log-level", "warn", "--work-dir", filepath.Join(work, "convert-"+name), ociRef, nydusRef)
	return ociRef, nydusRef
}

func sha256File(t testing.TB, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// TestNydusSnapshotterRunsDfnydus is the contract end to end: containerd pulls a nydus image made
// by `dfnydus convert` through nydus-snapshotter, which launches dfnydus as its nydusd; containers
// run programs from the lazily mounted image; a SIGKILLed daemon is restarted as the recover
// policy promises; removing the image unmounts and stops the daemon.
func TestNydusSnapshotterRunsDfnydus(t *testing.T) {
	rootfs := testenv.Rootfs(t)
	h := startHarness(t, harnessOptions{RecoverPolicy: "restart"})
	reg := registrytest.Start(t, registrytest.Options{})
	work := testenv.TempDir(t)
	_, ref := pushImage(t, reg, work, rootfs, "debian")

	debVersion, err := os.ReadFile(filepath.Join(rootfs, "etc", "debian_version"))
	must(t, err)
	// A program from the image, and a checksum of a binary read through the lazy mount.
	script := "cat /etc/debian_version && sha256sum /usr/bin/dpkg | cut -d' ' -f1"
	want := string(debVersion) + sha256File(t, filepath.Join(rootfs, "usr", "bin", "dpkg")) + "\n"

	var daemon nydusdProc
	t.Run("a container runs a program from the lazily mounted image", func(t *testing.T) {
		h.mustCtr("pull", "-snapshotter", "nydus", "-plain-http", ref)
		// The snapshotter starts a nydusd when a container's snapshot is prepared, not at pull.
		r := h.mustCtr("run", "-snapshotter", "nydus", "-id", "first", ref, "/bin/sh", "-c", script)
		if r.Stdout != want {
			t.Errorf("container printed %q, want %q", r.Stdout, want)
		}
		ds := h.nydusds()
		if len(ds) != 1 {
			t.Fatalf("%d dfnydus nydusd processes after the first container, want 1", len(ds))
		}
		daemon = ds[0]
		for _, f := range []string{"--config", "--bootstrap", "--mountpoint", "--apisock"} {
			if daemon.flag(f) == "" {
				t.Errorf("the snapshotter launched nydusd without %s: %q", f, daemon.args)
			}
		}
		if src := mountSource(daemon.flag("--mountpoint")); !strings.HasPrefix(src, "fuse") || !strings.Contains(src, "dfnydus") {
			t.Errorf("mount at %s is %q, want dfnydus's FUSE mount", daemon.flag("--mountpoint"), src)
		}
		// Keep the bootstrap for the bad-input cases below.
		must(t, exec.Command("cp", daemon.flag("--bootstrap"), filepath.Join(work, "image.boot")).Run())
	})
	if t.Failed() {
		return
	}

	t.Run("kill -9 of the daemon is survived (recover_policy restart)", func(t *testing.T) {
		must(t, syscall.Kill(daemon.pid, syscall.SIGKILL))
		var next nydusdProc
		h.waitFor("the snapshotter to start a new nydusd that reaches RUNNING", func() bool {
			for _, p := range h.nydusds() {
				if p.pid != daemon.pid && p.flag("--mountpoint") == daemon.flag("--mountpoint") {
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
		daemon = next
	})
	if t.Failed() {
		return
	}

	t.Run("removing the image unmounts and stops the daemon", func(t *testing.T) {
		mp := daemon.flag("--mountpoint")
		h.mustCtr("rmi", ref)
		h.waitFor("the nydusd to exit", func() bool { return len(h.nydusds()) == 0 })
		if src := mountSource(mp); src != "" {
			t.Errorf("%s is still mounted (%s) after the image was removed", mp, src)
		}
		if ms := mountsUnder(h.snapRoot); len(ms) != 0 {
			t.Errorf("mounts left under the snapshotter's root: %q", ms)
		}
	})

	t.Run("bad input fails the daemon start with a clear message and no mount", func(t *testing.T) {
		testNydusdBadInput(t, h, work, filepath.Join(work, "image.boot"))
	})
}

// testNydusdBadInput starts `nydusd fuse` the way the snapshotter does, with one thing wrong in
// each case, and checks that it exits with an error naming the problem and leaves nothing mounted.
func testNydusdBadInput(t *testing.T, h *harness, work, boot string) {
	authReg := registrytest.Start(t, registrytest.Options{Auth: registrytest.AuthBasic})
	notRAFS := filepath.Join(work, "not-rafs.boot")
	must(t, os.WriteFile(notRAFS, []byte(strings.Repeat("this is not a bootstrap\n", 512)), 0o644))
	config := func(backend string) string {
		return fmt.Sprintf(`{"device":{"id":"/bad","backend":%s,"cache":{"type":"blobcache","config":{"work_dir":%q}}},
			"mode":"direct","digest_validate":false,"fs_prefetch":{"enable":true,"prefetch_all":true}}`, backend, filepath.Join(work, "cache"))
	}
	wrongAuth := base64.StdEncoding.EncodeToString([]byte(authReg.Username + ":not-the-password"))
	cases := []struct {
		name      string
		args      []string // besides --config/--bootstrap/--mountpoint/--apisock
		config    string
		bootstrap string
		want      string // in stderr
	}{
		{name: "unknown flag", args: []string{"--no-such-flag", "1"}, config: config(`{"type":"localfs","config":{"dir":"/nonexistent"}}`),
			bootstrap: boot, want: "unknown flag: --no-such-flag"},
		{name: "unsupported backend type", config: config(`{"type":"oss","config":{"endpoint":"oss.example.com","bucket_name":"b"}}`),
			bootstrap: boot, want: `backend type "oss"`},
		{name: "bootstrap that is not RAFS", config: config(`{"type":"localfs","config":{"dir":"/nonexistent"}}`),
			bootstrap: notRAFS, want: "not a RAFS bootstrap"},
		{name: "registry refusing the credentials",
			config:    config(fmt.Sprintf(`{"type":"registry","config":{"host":%q,"repo":"debian-nydus","scheme":"http","auth":%q}}`, authReg.Host(), wrongAuth)),
			bootstrap: boot, want: "refused the credentials"},
		{name: "fscache (singleton) mode", args: []string{"--fscache", filepath.Join(work, "fscache")},
			config: config(`{"type":"localfs","config":{"dir":"/nonexistent"}}`), bootstrap: boot, want: "fscache"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(work, fmt.Sprintf("bad-%d", i))
			mp, sock, cfg := filepath.Join(dir, "mnt"), filepath.Join(dir, "api.sock"), filepath.Join(dir, "config.json")
			must(t, os.MkdirAll(mp, 0o755))
			must(t, os.WriteFile(cfg, []byte(tc.config), 0o644))
			args := append([]string{"fuse", "--thread-num", "4", "--config", cfg, "--bootstrap", tc.bootstrap, "--mountpoint", mp,
				"--apisock", sock, "--log-level", "info", "--log-rotation-size", "100", "--failover-policy", "resend"}, tc.args...)
			r := testenv.Exec(t, h.nydusd, args...)
			if r.Err == nil {
				t.Fatalf("nydusd started; want a failure mentioning %q\nstderr:\n%s", tc.want, r.Stderr)
			}
			if !strings.Contains(r.Stderr, tc.want) {
				t.Errorf("stderr does not mention %q:\n%s", tc.want, r.Stderr)
			}
			if src := mountSource(mp); src != "" {
				t.Errorf("%s left mounted (%s)", mp, src)
			}
			if _, err := os.Stat(sock); err == nil {
				t.Errorf("api socket %s left behind", sock)
			}
		})
	}
}

// TestSharedDaemonMountsThroughTheAPI: in shared mode the snapshotter starts one nydusd at start-up
// and mounts every image through POST /api/v1/mount, and unmounts it with DELETE when the image goes.
func TestSharedDaemonMountsThroughTheAPI(t *testing.T) {
	rootfs := testenv.Rootfs(t)
	h := startHarness(t, harnessOptions{DaemonMode: "shared"})
	reg := registrytest.Start(t, registrytest.Options{})
	work := testenv.TempDir(t)
	_, ref := pushImage(t, reg, work, rootfs, "debian")
	debVersion, err := os.ReadFile(filepath.Join(rootfs, "etc", "debian_version"))
	must(t, err)

	var shared nydusdProc
	h.waitFor("the shared nydusd to reach RUNNING", func() bool {
		ds := h.nydusds()
		if len(ds) != 1 {
			return false
		}
		st, err := daemonState(ds[0].flag("--apisock"))
		shared = ds[0]
		return err == nil && st == "RUNNING"
	})
	if shared.flag("--bootstrap") != "" {
		t.Errorf("the shared daemon was started with a bootstrap: %q", shared.args)
	}
	h.mustCtr("pull", "-snapshotter", "nydus", "-plain-http", ref)
	r := h.mustCtr("run", "-snapshotter", "nydus", "-id", "shared", ref, "/bin/cat", "/etc/debian_version")
	if r.Stdout != string(debVersion) {
		t.Errorf("container printed %q, want %q", r.Stdout, debVersion)
	}
	root := shared.flag("--mountpoint")
	ms := mountsUnder(root)
	if len(ms) != 1 || !strings.Contains(mountSource(ms[0]), "dfnydus") {
		t.Fatalf("mounts under the shared root %s: %q, want one dfnydus mount", root, ms)
	}
	h.mustCtr("rmi", ref)
	h.waitFor("the instance to be unmounted", func() bool { return len(mountsUnder(root)) == 0 })
	if ds := h.nydusds(); len(ds) != 1 || ds[0].pid != shared.pid {
		t.Errorf("after the image went the shared daemon should keep running: %v", ds)
	}
}
