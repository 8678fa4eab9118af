// Package testenv gives the end-to-end suites under test/ what they share: the dfnydus binary built
// once per test process, a runner for it, the repository's fixtures, real source trees, and skips for
// missing privileges or tools. It is only imported by tests.
package testenv

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// RepoRoot is the checkout's top directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", ".."))
}

// Fixtures is the directory of real upstream nydus images.
func Fixtures() string { return filepath.Join(RepoRoot(), "testdata", "fixtures", "nydus") }

var (
	binOnce sync.Once
	binPath string
	binErr  error
	binOut  []byte
)

// Binary builds cmd/dfnydus once per test process and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "dfnydus-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "dfnydus")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/dfnydus")
		cmd.Dir = RepoRoot()
		binOut, binErr = cmd.CombinedOutput()
	})
	if binErr != nil {
		t.Fatalf("build dfnydus: %v\n%s", binErr, binOut)
	}
	return binPath
}

var (
	faultOnce sync.Once
	faultPath string
	faultErr  error
	faultOut  []byte
)

// FaultBinary builds cmd/dfnydus with the faultinject tag (fault injection through environment
// variables, which release builds do not have) once per test process and returns its path.
func FaultBinary(t testing.TB) string {
	t.Helper()
	faultOnce.Do(func() {
		dir, err := os.MkdirTemp("", "dfnydus-faultbin-")
		if err != nil {
			faultErr = err
			return
		}
		faultPath = filepath.Join(dir, "dfnydus")
		cmd := exec.Command("go", "build", "-tags", "faultinject", "-o", faultPath, "./cmd/dfnydus")
		cmd.Dir = RepoRoot()
		faultOut, faultErr = cmd.CombinedOutput()
	})
	if faultErr != nil {
		t.Fatalf("build dfnydus with faultinject: %v\n%s", faultErr, faultOut)
	}
	return faultPath
}

// Result is a finished command.
type Result struct {
	Stdout, Stderr string
	Err            error
}

// Run runs the dfnydus binary with args and returns its output; it never fails the test itself.
func Run(t testing.TB, args ...string) Result {
	t.Helper()
	return Exec(t, Binary(t), args...)
}

// MustRun runs dfnydus and fails the test if it exits non-zero.
func MustRun(t testing.TB, args ...string) string {
	t.Helper()
	r := Run(t, args...)
	if r.Err != nil {
		t.Fatalf("dfnydus %s: %v\nstderr:\n%s", strings.Join(args, " "), r.Err, r.Stderr)
	}
	return r.Stdout
}

// Exec runs any program with a 15-minute limit.
func Exec(t testing.TB, prog string, args ...string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return Result{Stdout: stdout.String(), Stderr: stderr.String(), Err: err}
}

// MustExec runs a program and fails the test if it exits non-zero.
func MustExec(t testing.TB, prog string, args ...string) string {
	t.Helper()
	r := Exec(t, prog, args...)
	if r.Err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", prog, strings.Join(args, " "), r.Err, r.Stdout, r.Stderr)
	}
	return r.Stdout
}

// RequireRoot skips unless the test runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (ownership, device nodes, mounts)")
	}
}

// RequireTool returns the path of a program, skipping the test when it is not installed
// (scripts/setup.sh installs every tool the suites use).
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s is not installed (run scripts/setup.sh)", name)
	}
	return p
}

// Rootfs returns a Debian minbase tree made by debootstrap (scripts/rootfs.sh, cached). It skips in
// -short mode because the first run downloads packages.
func Rootfs(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: no debootstrap tree")
	}
	RequireRoot(t)
	RequireTool(t, "debootstrap")
	out := MustExec(t, "bash", filepath.Join(RepoRoot(), "scripts", "rootfs.sh"))
	return strings.TrimSpace(out)
}

// GoRoot returns the Go toolchain's tree: a large real source tree (~270 MB, ~17k files).
func GoRoot(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		t.Fatalf("go env GOROOT: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// TempDir returns a directory under /var/tmp (disk-backed, supports user xattrs and large files),
// removed at the end of the test.
func TempDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("/var/tmp", "dfnydus-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}
