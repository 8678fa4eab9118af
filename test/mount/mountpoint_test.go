package mount_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dfnydus/dfnydus/test/internal/testenv"
)

// mount refuses to hide an existing mount (here a tmpfs) unless --force, and never mounts over
// /proc, /sys or /dev.
func TestMountRefusesDangerousMountpoints(t *testing.T) {
	testenv.RequireRoot(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	dir := testenv.TempDir(t)
	boot, blobs := localImage(t, dir)
	mp := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mp, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", mp, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(mp, unix.MNT_DETACH) })
	link := filepath.Join(dir, "link-to-proc-sys")
	if err := os.Symlink("/proc/sys", link); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mp, want string
		extra    []string
	}{
		{mp, "already is a mount point", nil},
		{"/proc/sys", "inside /proc, /sys or /dev", nil},
		{link, "inside /proc, /sys or /dev", []string{"--force"}},
		{"/dev/shm", "inside /proc, /sys or /dev", []string{"--force"}},
	} {
		args := append([]string{"mount", "--foreground", "--cache-dir", filepath.Join(dir, "cache"), "--bootstrap", boot, "--blob-dir", blobs}, tc.extra...)
		r := runBounded(t, append(args, tc.mp)...)
		if r.Err == nil || !strings.Contains(r.Stderr, tc.want) {
			t.Errorf("mount %v at %s: %v, want %q:\n%s", tc.extra, tc.mp, r.Err, tc.want, r.Stderr)
		}
	}
	m := startMount(t, filepath.Join(dir, "cache"), mp, "--foreground", "--force", "--bootstrap", boot, "--blob-dir", blobs)
	if got, err := os.ReadFile(filepath.Join(mp, "hello")); err != nil || string(got) != "hello\n" {
		t.Errorf("read through a --force mount: %q, %v", got, err)
	}
	m.stop(t)
}

// runBounded runs dfnydus for at most a minute: a mount that wrongly went ahead would serve until
// killed.
func runBounded(t *testing.T, args ...string) testenv.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, testenv.Binary(t), args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("dfnydus %s still ran after a minute", args[0])
	}
	return testenv.Result{Stdout: stdout.String(), Stderr: stderr.String(), Err: err}
}
