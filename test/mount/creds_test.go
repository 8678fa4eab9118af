package mount_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/dfnydus/dfnydus/rafs/builder"
	"github.com/dfnydus/dfnydus/test/internal/testenv"
)

// localImage builds a one-file image into dir and returns its bootstrap path and blob directory.
func localImage(t *testing.T, dir string) (boot, blobs string) {
	t.Helper()
	src, blobs := filepath.Join(dir, "src"), filepath.Join(dir, "blobs")
	for _, d := range []string{src, blobs} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(src, "hello"), []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := builder.Build(context.Background(), builder.DefaultOptions(), blobs, []builder.Layer{builder.PathLayer(src)})
	if err != nil {
		t.Fatal(err)
	}
	boot = filepath.Join(dir, "boot")
	if err := os.WriteFile(boot, res.Bootstrap, 0o644); err != nil {
		t.Fatal(err)
	}
	return boot, blobs
}

// A mount lives for days; its /proc/PID/cmdline is readable by every user, so credentials given
// with --creds-file must not appear there. A credentials file others can read is refused.
func TestCredsFileKeepsPasswordOffTheCommandLine(t *testing.T) {
	testenv.RequireRoot(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	dir := testenv.TempDir(t)
	boot, blobs := localImage(t, dir)
	const password = "pw-that-must-not-leak"
	creds := filepath.Join(dir, "creds")
	if err := os.WriteFile(creds, []byte("user:"+password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chmod(creds, 0o644)
	r := testenv.Run(t, "mount", "--foreground", "--cache-dir", filepath.Join(dir, "cache0"), "--creds-file", creds,
		"--bootstrap", boot, "--blob-dir", blobs, filepath.Join(dir, "mnt0"))
	if r.Err == nil || !strings.Contains(r.Stderr, "group or others can read the password") {
		t.Fatalf("mount with a 0644 credentials file: %v\n%s", r.Err, r.Stderr)
	}
	os.Chmod(creds, 0o600)
	m := startMount(t, filepath.Join(dir, "cache"), filepath.Join(dir, "mnt"), "--foreground", "--creds-file", creds,
		"--bootstrap", boot, "--blob-dir", blobs)
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(m.cmd.Process.Pid) + "/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(cmdline, []byte(password)) {
		t.Errorf("the password is in /proc/PID/cmdline: %q", cmdline)
	}
	if !bytes.Contains(cmdline, []byte("--creds-file")) {
		t.Errorf("cmdline %q is not the mount's", cmdline)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "mnt", "hello")); err != nil || string(got) != "hello\n" {
		t.Errorf("read through the mount: %q, %v", got, err)
	}
}
