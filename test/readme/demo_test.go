package readme_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dfnydus/dfnydus/test/internal/testenv"
)

// TestMakeDemoBuildsOnlyWhatTheDemoRuns reads what `make demo` would run (make -n): the demo's
// own packages and bin/dfnydus, none of the tools the tests build (the Dragonfly scheduler,
// versitygw, nydus-snapshotter), which take minutes on a fresh machine.
func TestMakeDemoBuildsOnlyWhatTheDemoRuns(t *testing.T) {
	makeBin := testenv.RequireTool(t, "make")
	cmd := exec.Command(makeBin, "-n", "demo")
	cmd.Dir = testenv.RepoRoot()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make -n demo: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	ran := func(match func(string) bool) bool {
		for _, l := range lines {
			if match(l) {
				return true
			}
		}
		return false
	}
	for _, tc := range []struct {
		rule  string
		match func(string) bool
		want  bool
	}{
		{"runs setup.sh demo (the demo's packages)", func(l string) bool { return l == "bash scripts/setup.sh demo" }, true},
		{"builds bin/dfnydus", func(l string) bool { return strings.Contains(l, "-o bin/dfnydus ./cmd/dfnydus") }, true},
		{"runs scripts/demo.sh", func(l string) bool { return strings.HasSuffix(l, "bash scripts/demo.sh") }, true},
		{"runs plain setup.sh (every test package)", func(l string) bool { return l == "bash scripts/setup.sh" }, false},
		{"runs tools.sh (scheduler, versitygw: minutes of builds)", func(l string) bool { return strings.Contains(l, "tools.sh") }, false},
		{"runs containerd.sh (containerd, nydus-snapshotter)", func(l string) bool { return strings.Contains(l, "containerd.sh") }, false},
	} {
		if got := ran(tc.match); got != tc.want {
			t.Errorf("make demo %s: %v, want %v; make -n demo:\n%s", tc.rule, got, tc.want, out)
		}
	}
}

// TestDemoScript runs scripts/demo.sh from a checkout that holds nothing but the script (no bin/,
// so no tool built by scripts/tools.sh), with dfnydus built to a temporary path. It packs the
// whole Go toolchain as `make demo` does: about 10 s on 2 cores.
func TestDemoScript(t *testing.T) {
	testenv.RequireRoot(t)
	for _, tool := range []string{"docker-registry", "skopeo", "umoci", "python3", "curl"} {
		testenv.RequireTool(t, tool)
	}
	bin := testenv.Binary(t)
	checkout := t.TempDir()
	copyFile(t, filepath.Join(testenv.RepoRoot(), "scripts", "demo.sh"), filepath.Join(checkout, "scripts", "demo.sh"))

	goVersion := strings.TrimSpace(testenv.MustExec(t, filepath.Join(testenv.GoRoot(t), "bin", "go"), "env", "GOVERSION"))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(checkout, "scripts", "demo.sh"))
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "DFNYDUS_BIN="+bin)
	cmd.Env = withoutEnv(cmd.Env, "DFNYDUS_DEMO_START=")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	t.Logf("demo.sh took %s:\n%s", time.Since(start).Round(time.Second), stdout.String())
	if err != nil {
		t.Fatalf("demo.sh: %v\nstderr:\n%s", err, stderr.String())
	}
	out := stdout.String()

	// The work directory the script made, named in the line that runs the program.
	m := regexp.MustCompile(`(?m)^== running a program from the mount: (/var/tmp/dfnydus-demo\.[^/]+)/mnt/bin/go version$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("demo.sh did not say it runs bin/go from the mount")
	}
	work := m[1]
	fetched := regexp.MustCompile(`(?m)^  fetched  (\d+) bytes in (\d+) requests \((\d+) on demand, (\d+) by prefetch\)$`).FindStringSubmatch(out)
	cached := regexp.MustCompile(`(?m)^  cached   (\d+)/(\d+) chunks, `).FindStringSubmatch(out)
	if fetched == nil || cached == nil {
		t.Fatalf("demo.sh did not print what dfnydus fetched (dfnydus stat)")
	}
	n := func(s string) int64 { v, _ := strconv.ParseInt(s, 10, 64); return v }
	bytesFetched, onDemand, prefetched := n(fetched[1]), n(fetched[3]), n(fetched[4])
	chunksCached, chunks := n(cached[1]), n(cached[2])

	for _, tc := range []struct {
		says string
		ok   bool
	}{
		{"the program ran from the mount: " + goVersion, regexp.MustCompile(`(?m)^go version ` + regexp.QuoteMeta(goVersion) + ` linux/`).MatchString(out)},
		{"how long the program took from a cold cache", regexp.MustCompile(`(?m)^   took \d+\.\d\d s from a cold cache$`).MatchString(out)},
		{"something was fetched, all of it on demand (prefetch off)", bytesFetched > 0 && onDemand == bytesFetched && prefetched == 0},
		{"some of the image's chunks were fetched, not all (the mount is lazy)", chunksCached > 0 && chunksCached < chunks},
		{"no chunk failed verification and no read failed", strings.Contains(out, "  errors   0 verify failures, 0 read errors")},
		{"the total time, at the end", regexp.MustCompile(`== done in \d+ s\n$`).MatchString(out)},
	} {
		if !tc.ok {
			t.Errorf("demo output does not show %s", tc.says)
		}
	}

	// It needed nothing from the checkout but itself, and built nothing there.
	if entries, err := os.ReadDir(checkout); err != nil || len(entries) != 1 || entries[0].Name() != "scripts" {
		t.Errorf("the checkout holds %v after the demo (err %v), want only scripts/", entries, err)
	}
	// Everything it started is gone: the mount, and the work directory with the registry's data.
	if _, err := os.Stat(work); !os.IsNotExist(err) {
		t.Errorf("demo left %s behind (stat: %v)", work, err)
	}
	if mounts, err := os.ReadFile("/proc/self/mountinfo"); err == nil && bytes.Contains(mounts, []byte(work)) {
		t.Errorf("demo left a mount under %s", work)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, fi.Mode().Perm())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatalf("copy %s to %s: %v", from, to, err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// withoutEnv drops the environment entries with the given prefix (a DFNYDUS_DEMO_START from the
// caller's environment would change the closing line).
func withoutEnv(env []string, prefix string) []string {
	out := env[:0:0]
	for _, e := range env {
		if !strings.HasPrefix(e, prefix) {
			out = append(out, e)
		}
	}
	return out
}
