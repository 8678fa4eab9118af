package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// execEnv makes the test binary run as estargz-bench (see TestMain), so the tests drive the real
// command line, READY/STATS protocol and signal handling in a separate process.
const execEnv = "ESTARGZ_BENCH_AS_CLI"

func TestMain(m *testing.M) {
	if os.Getenv(execEnv) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// requireLazyEnv skips unless this machine can run the registry and FUSE mounts.
func requireLazyEnv(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (FUSE mount)")
	}
	if _, err := exec.LookPath("docker-registry"); err != nil {
		t.Skip("needs docker-registry (apt docker-registry)")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse")
	}
}

// startRegistry runs docker-registry on a free loopback port with storage in a temporary
// directory and returns its HOST:PORT once it answers /v2/.
func startRegistry(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	addr := freeLoopbackAddr(t)
	cfg := fmt.Sprintf("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: %s\n",
		filepath.Join(dir, "data"), addr)
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuffer{}
	cmd := exec.Command("docker-registry", "serve", cfgPath)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start docker-registry: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v2/", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			drainClose(resp.Body)
			if resp.StatusCode == http.StatusOK {
				return addr
			}
		}
		select {
		case <-exited:
			t.Fatalf("docker-registry exited: %s", logs)
		case <-ctx.Done():
			t.Fatalf("docker-registry did not start: %s", logs)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// countingProxy is a reverse proxy in front of the registry that counts the requests it forwards
// and the response body bytes it sends back.
type countingProxy struct {
	host          string // HOST:PORT of the proxy
	requests      atomic.Int64
	bytes         atomic.Int64
	rangeRequests atomic.Int64
}

type proxyCounts struct{ requests, rangeRequests, bytes int64 }

func (c proxyCounts) sub(o proxyCounts) proxyCounts {
	return proxyCounts{c.requests - o.requests, c.rangeRequests - o.rangeRequests, c.bytes - o.bytes}
}

func (c proxyCounts) String() string {
	return fmt.Sprintf("%d requests (%d ranged), %d bytes (%.2f MB)", c.requests, c.rangeRequests, c.bytes, float64(c.bytes)/1e6)
}

func startCountingProxy(t *testing.T, upstream string) *countingProxy {
	t.Helper()
	target, err := url.Parse("http://" + upstream)
	if err != nil {
		t.Fatal(err)
	}
	p := &countingProxy{}
	rp := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.requests.Add(1)
		if r.Header.Get("Range") != "" {
			p.rangeRequests.Add(1)
		}
		rp.ServeHTTP(&countingWriter{ResponseWriter: w, n: &p.bytes}, r)
	}))
	t.Cleanup(srv.Close)
	p.host = strings.TrimPrefix(srv.URL, "http://")
	return p
}

func (p *countingProxy) counts() proxyCounts {
	return proxyCounts{requests: p.requests.Load(), rangeRequests: p.rangeRequests.Load(), bytes: p.bytes.Load()}
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (w *countingWriter) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	w.n.Add(int64(n))
	return n, err
}

func (w *countingWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// writeTar writes the tree under root as an uncompressed tar with paths relative to root.
func writeTar(t *testing.T, root, dst string) {
	t.Helper()
	f, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if d.Type()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if d.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		defer src.Close()
		_, err = io.Copy(tw, src)
		return err
	})
	if err == nil {
		err = tw.Close()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("write tar %s: %v", dst, err)
	}
}

// cli is one estargz-bench process (the test binary re-executed with execEnv).
type cli struct {
	cmd    *exec.Cmd
	lines  chan string // stdout lines; closed at EOF
	stderr *lockedBuffer
	exited chan struct{}
	err    error // Wait's result, valid once exited is closed
}

func startCLI(t *testing.T, args ...string) *cli {
	t.Helper()
	c := &cli{lines: make(chan string, 64), stderr: &lockedBuffer{}, exited: make(chan struct{})}
	c.cmd = exec.Command(os.Args[0], args...)
	c.cmd.Env = append(os.Environ(), execEnv+"=1")
	c.cmd.Stderr = c.stderr
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("start estargz-bench %s: %v", args[0], err)
	}
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		defer close(c.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
	}()
	go func() {
		<-readDone
		c.err = c.cmd.Wait()
		close(c.exited)
	}()
	return c
}

// line waits for the next stdout line with prefix (skipping others) and returns its rest.
func (c *cli) line(t *testing.T, prefix string, timeout time.Duration) string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				<-c.exited
				t.Fatalf("estargz-bench exited (%v) before printing %q; stderr:\n%s", c.err, prefix, c.stderr)
			}
			if rest, found := strings.CutPrefix(l, prefix+" "); found {
				return rest
			}
		case <-deadline:
			t.Fatalf("estargz-bench printed no %q line in %s; stderr:\n%s", prefix, timeout, c.stderr)
		}
	}
}

// stop sends SIGTERM and waits for the process to exit.
func (c *cli) stop(timeout time.Duration) error {
	select {
	case <-c.exited:
		return c.err
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
		return c.err
	case <-time.After(timeout):
		_ = c.cmd.Process.Kill()
		<-c.exited
		return fmt.Errorf("no exit within %s after SIGTERM; killed", timeout)
	}
}

// runCLI runs estargz-bench to completion and returns its stdout.
func runCLI(t *testing.T, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), execEnv+"=1")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("estargz-bench %s: %v\nstderr:\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

// isMounted reports whether dir is a mount point in this mount namespace.
func isMounted(t *testing.T, dir string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && unescapeMountPath(f[4]) == dir {
			return true
		}
	}
	return false
}

func unescapeMountPath(s string) string {
	r := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	return r.Replace(s)
}

// lockedBuffer is a bytes.Buffer safe for a writer goroutine and a reader.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

var errNoSuchLine = errors.New("no such line")

// field returns the value of key=value in a STATS line.
func field(line, key string) (string, error) {
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v, nil
		}
	}
	return "", fmt.Errorf("%w: %s= in %q", errNoSuchLine, key, line)
}
