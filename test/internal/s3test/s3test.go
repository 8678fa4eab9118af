// Package s3test runs a real S3-compatible server for tests: versitygw (built by scripts/tools.sh)
// over a temporary posix directory, on a loopback port. Imported only by tests.
package s3test

import (
	"bytes"
	"context"
	"fmt"
	"github.com/dfnydus/dfnydus/test/internal/testenv"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// repoRoot is the directory holding go.mod above the working directory.
func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the working directory")
		}
		dir = parent
	}
}

var (
	toolsOnce sync.Once
	toolsDir  string
	toolsErr  error
)

// Tool returns the path of a tool scripts/tools.sh installs, running the script (a build of a
// few minutes, once per test process) when the tool is missing. It skips the test when the tool
// cannot be built here.
func Tool(t testing.TB, name string) string {
	t.Helper()
	root := repoRoot(t)
	toolsOnce.Do(func() {
		var stderr bytes.Buffer
		cmd := exec.Command("bash", filepath.Join(root, "scripts", "tools.sh"))
		cmd.Dir = root
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			toolsErr = fmt.Errorf("scripts/tools.sh: %w\n%s", err, stderr.String())
			return
		}
		toolsDir = strings.TrimSpace(string(out))
	})
	if toolsErr != nil {
		t.Skipf("%s cannot be built here, skipping: %v", name, toolsErr)
	}
	path := filepath.Join(toolsDir, name)
	if _, err := os.Stat(path); err != nil {
		t.Skipf("%s not installed by scripts/tools.sh, skipping: %v", name, err)
	}
	return path
}

// Gateway is a running versitygw: a real S3 server over a posix directory.
type Gateway struct {
	Host           string // 127.0.0.1:PORT
	Access, Secret string // the root account's keys
	Dir            string // the posix backend's root: one directory per bucket
}

// Start runs versitygw on a free loopback port over a temp directory and stops it when the test
// ends.
func Start(t testing.TB) *Gateway {
	t.Helper()
	bin := Tool(t, "versitygw")
	g := &Gateway{Access: "dfnydus-test", Secret: "dfnydus-test-secret", Dir: t.TempDir()}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		addr, err := freeAddr()
		if err != nil {
			t.Fatal(err)
		}
		if lastErr = g.run(t, bin, addr); lastErr == nil {
			return g
		}
	}
	t.Fatalf("versitygw: %v", lastErr)
	return nil
}

func (g *Gateway) run(t testing.TB, bin, addr string) error {
	logs := &testenv.LogBuffer{}
	cmd := exec.Command(bin, "--quiet", "--port", addr, "posix", g.Dir)
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+g.Access, "ROOT_SECRET_KEY="+g.Secret)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		_ = cmd.Process.Kill()
		<-exited
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("exited before serving: %v\n%s", err, logs.String())
		case <-ctx.Done():
			stop()
			return fmt.Errorf("did not answer on %s within 30s\n%s", addr, logs.String())
		case <-time.After(50 * time.Millisecond):
		}
		resp, err := client.Get("http://" + addr + "/")
		if err != nil {
			continue
		}
		resp.Body.Close()
		break // any answer (403 to an anonymous request) means it serves
	}
	g.Host = addr
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("versitygw %s logs:\n%s", addr, logs.String())
		}
	})
	return nil
}

// freeAddr returns a 127.0.0.1 address whose port was free a moment ago.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}
