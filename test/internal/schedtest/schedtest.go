// Package schedtest runs the real Dragonfly scheduler (d7y.io/dragonfly/v2 v2.5.1, built into
// bin/scheduler by scripts/tools.sh) for tests: standalone (no manager, a local dynconfig file), on a
// loopback port or inside a network namespace, optionally with a private redis-server so that jobs
// and preheat are enabled. Imported only by tests.
//
// This directory also holds the integration tests of package schedclient (scheduler-client/)
// against the real scheduler (Go's internal rule keeps packages outside test/ from importing this
// one).
package schedtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/dfnydus/dfnydus/test/internal/testenv"
)

// RedisBinary is the Redis server program (Debian package redis-server, installed by
// scripts/setup.sh).
const RedisBinary = "redis-server"

// Options configure Start. The zero value runs a scheduler on a free 127.0.0.1 port without Redis.
type Options struct {
	// ListenIP is the address the scheduler listens on and advertises; default 127.0.0.1.
	ListenIP string
	// Port is the gRPC port; 0 picks a free one.
	Port int
	// Redis starts a private redis-server (loopback, free port, no persistence) next to the
	// scheduler and enables jobs (preheat) and the persistent resources.
	Redis bool
	// Command builds the commands that run the scheduler and redis-server, e.g. inside a network
	// namespace: func(name string, args ...string) *exec.Cmd { return node.Command(ctx, name, args...) }.
	// Default exec.Command.
	Command func(name string, args ...string) *exec.Cmd
	// DialContext reaches the scheduler (and its Redis) when Command runs them somewhere the test
	// process cannot dial directly, e.g. netns Node.DialContext. Default: a plain dialer.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)

	// RetryInterval is scheduler.retryInterval, the pause between scheduling attempts that found no
	// parent (a reschedule with every parent blocked answers NeedBackToSource after
	// RetryBackToSourceLimit such pauses). Default 100ms (upstream default 500ms).
	RetryInterval time.Duration
	// RetryBackToSourceLimit is scheduler.retryBackToSourceLimit; default the upstream 4.
	RetryBackToSourceLimit int
	// HostGCInterval is scheduler.gc.hostGCInterval: how often hosts that missed two announce
	// intervals are dropped. Default the upstream 5m.
	HostGCInterval time.Duration
	// PeerGCInterval is scheduler.gc.peerGCInterval; default the upstream 10s.
	PeerGCInterval time.Duration
	// LogLevel is server.logLevel; default "info".
	LogLevel string
}

// SeedPeerRefreshInterval is how often the scheduler health-checks the announced super-seed hosts
// (grpc.health.v1 on ip:port) and rebuilds its seed hash ring. It is a constant upstream
// (scheduler/resource/standard/seed_peer.go SeedPeerRefreshInterval), not configurable: a test that
// needs a seed peer waits up to this long after announcing it.
const SeedPeerRefreshInterval = 30 * time.Second

// Scheduler is a running scheduler (and its Redis when Options.Redis).
type Scheduler struct {
	t    testing.TB
	opts Options
	dir  string
	bin  string
	addr string

	logs *testenv.LogBuffer

	mu     sync.Mutex
	proc   *process // nil when stopped
	redis  *process
	rdAddr string
}

// process is one started program and its exit.
type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error // valid after done
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stopWait is how long stop waits before SIGKILL. The v2.5.1 scheduler gives streams 10 s on
// SIGTERM (scheduler/scheduler.go Stop, gracefulStopTimeout) but, with an AnnouncePeer stream
// open, was seen still running 30 s later: streams keep working until it is killed.
const stopWait = 12 * time.Second

// stop sends sig, waits for the exit and kills the process if it has not exited after stopWait.
func (p *process) stop(sig syscall.Signal) {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(sig)
	_ = p.cmd.Process.Signal(syscall.SIGCONT) // a paused process handles sig only once resumed
	select {
	case <-p.done:
	case <-time.After(stopWait):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

var (
	toolsOnce sync.Once
	toolsErr  error
)

// Binary returns bin/scheduler, running scripts/tools.sh once per test process to build it when
// it is missing or stale (a cold build takes about 7 minutes on 2 cores). It skips t when the
// scheduler cannot be built here.
func Binary(t testing.TB) string {
	t.Helper()
	root := testenv.RepoRoot()
	toolsOnce.Do(func() {
		var stderr bytes.Buffer
		cmd := exec.Command("bash", filepath.Join(root, "scripts", "tools.sh"))
		cmd.Dir = root
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			toolsErr = fmt.Errorf("scripts/tools.sh: %w\n%s", err, stderr.String())
		}
	})
	if toolsErr != nil {
		t.Skipf("the scheduler cannot be built here, skipping: %v", toolsErr)
	}
	bin := filepath.Join(root, "bin", "scheduler")
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("scripts/tools.sh did not build %s, skipping: %v", bin, err)
	}
	return bin
}

// Start runs a scheduler for the rest of the test: it writes a standalone configuration, starts
// bin/scheduler (and redis-server when opts.Redis), waits until grpc health answers SERVING, and
// stops both when t ends, printing the scheduler's log if t failed.
func Start(t testing.TB, opts Options) *Scheduler {
	t.Helper()
	if opts.ListenIP == "" {
		opts.ListenIP = "127.0.0.1"
	}
	if opts.Command == nil {
		opts.Command = exec.Command
	}
	if opts.DialContext == nil {
		opts.DialContext = (&net.Dialer{}).DialContext
	}
	if opts.RetryInterval == 0 {
		opts.RetryInterval = 100 * time.Millisecond
	}
	if opts.LogLevel == "" {
		opts.LogLevel = "info"
	}
	dir := t.TempDir()
	// DFNYDUS_SCHEDTEST_KEEP=DIR keeps each scheduler's directory (config, and its whole console
	// log as console.log) under DIR after the test: the test prints only a failing run's tail.
	if keep := os.Getenv("DFNYDUS_SCHEDTEST_KEEP"); keep != "" {
		dir, _ = os.MkdirTemp(keep, "sched-")
	}
	s := &Scheduler{t: t, opts: opts, dir: dir, bin: Binary(t), logs: &testenv.LogBuffer{}}
	t.Cleanup(func() {
		s.stopAll()
		if os.Getenv("DFNYDUS_SCHEDTEST_KEEP") != "" {
			_ = os.WriteFile(filepath.Join(s.dir, "console.log"), []byte(s.Log()), 0o644)
		}
		if t.Failed() {
			t.Logf("scheduler %s log:\n%s", s.addr, s.Log())
		}
	})
	if opts.Redis {
		if _, err := exec.LookPath(RedisBinary); err != nil {
			t.Skipf("%s is not installed (run scripts/setup.sh)", RedisBinary)
		}
		if err := s.startRedis(); err != nil {
			t.Fatalf("schedtest: %v", err)
		}
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port := opts.Port
		if port == 0 {
			p, err := freePort()
			if err != nil {
				t.Fatalf("schedtest: %v", err)
			}
			port = p
		}
		s.addr = net.JoinHostPort(opts.ListenIP, strconv.Itoa(port))
		if lastErr = s.start(); lastErr == nil {
			return s
		}
		if opts.Port != 0 {
			break // a fixed port that fails will fail again
		}
	}
	t.Fatalf("schedtest: %v", lastErr)
	return nil
}

// Addr is the scheduler's gRPC address, "IP:PORT".
func (s *Scheduler) Addr() string { return s.addr }

// RedisAddr is the address of the scheduler's Redis ("" without Options.Redis), as the scheduler
// sees it.
func (s *Scheduler) RedisAddr() string { return s.rdAddr }

// Log is what the scheduler printed so far, across restarts (the first 4 MiB).
func (s *Scheduler) Log() string { return s.logs.String() }

// Running reports whether the scheduler process is alive.
func (s *Scheduler) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc != nil && !s.proc.exited()
}

// Stop terminates the scheduler like an orchestrator does: SIGTERM (it stops listening and sends
// GOAWAY; open streams keep working), then SIGKILL if it has not exited after 12 s. Redis keeps
// running. Calling it on a stopped scheduler does nothing.
func (s *Scheduler) Stop() { s.halt(syscall.SIGTERM) }

// Pause freezes the scheduler (SIGSTOP): its connections stay open but nothing reads them, like a
// scheduler that hangs. Resume (or Stop, Kill, Restart, the end of the test) lets it go on.
func (s *Scheduler) Pause() { s.signal(syscall.SIGSTOP) }

// Resume continues a paused scheduler (SIGCONT).
func (s *Scheduler) Resume() { s.signal(syscall.SIGCONT) }

func (s *Scheduler) signal(sig syscall.Signal) {
	s.mu.Lock()
	p := s.proc
	s.mu.Unlock()
	if p != nil && !p.exited() {
		_ = p.cmd.Process.Signal(sig)
	}
}

// Kill ends the scheduler with SIGKILL, like a crash, and waits for it to exit.
func (s *Scheduler) Kill() { s.halt(syscall.SIGKILL) }

func (s *Scheduler) halt(sig syscall.Signal) {
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p != nil {
		p.stop(sig)
		fmt.Fprintf(s.logs, "--- schedtest: scheduler stopped (%s): %v\n", sig, p.err)
	}
}

// Restart stops the scheduler if it runs and starts it again on the same address with the same
// configuration; it comes back empty (hosts, tasks and peers live in its memory). It fails the test
// if the scheduler does not come back.
func (s *Scheduler) Restart() {
	s.t.Helper()
	s.Stop()
	if err := s.start(); err != nil {
		s.t.Fatalf("schedtest: restart: %v", err)
	}
}

func (s *Scheduler) stopAll() {
	s.Stop()
	s.mu.Lock()
	r := s.redis
	s.redis = nil
	s.mu.Unlock()
	if r != nil {
		r.stop(syscall.SIGTERM)
	}
}

// config is the scheduler's YAML configuration. Every key is a field of scheduler/config/config.go
// (d7y.io/dragonfly/v2 v2.5.1); unset keys keep the defaults of config.New.
func (s *Scheduler) config() string {
	host, port, _ := net.SplitHostPort(s.addr)
	var b strings.Builder
	fmt.Fprintf(&b, `server:
  advertiseIP: %[1]s
  advertisePort: %[2]s
  listenIP: %[1]s
  port: %[2]s
  host: schedtest-%[2]s
  logDir: %[3]s
  pluginDir: %[4]s
  logLevel: %[5]s
scheduler:
  retryInterval: %[6]s
`, host, port, filepath.Join(s.dir, "log"), filepath.Join(s.dir, "plugins"), s.opts.LogLevel, s.opts.RetryInterval)
	if s.opts.RetryBackToSourceLimit > 0 {
		fmt.Fprintf(&b, "  retryBackToSourceLimit: %d\n", s.opts.RetryBackToSourceLimit)
	}
	if s.opts.HostGCInterval > 0 || s.opts.PeerGCInterval > 0 {
		b.WriteString("  gc:\n")
		if s.opts.HostGCInterval > 0 {
			fmt.Fprintf(&b, "    hostGCInterval: %s\n", s.opts.HostGCInterval)
		}
		if s.opts.PeerGCInterval > 0 {
			fmt.Fprintf(&b, "    peerGCInterval: %s\n", s.opts.PeerGCInterval)
		}
	}
	if s.rdAddr != "" {
		// database.redis.addrs switches Redis on; job.enable adds the preheat/sync-peers/get-task
		// job queues (scheduler/scheduler.go New: cfg.Job.Enable && rdb != nil).
		fmt.Fprintf(&b, "database:\n  redis:\n    addrs: [%q]\njob:\n  enable: true\n", s.rdAddr)
	} else {
		b.WriteString("job:\n  enable: false\n")
	}
	b.WriteString("metrics:\n  enable: false\n")
	return b.String()
}

// start launches the scheduler on s.addr and waits until it serves.
func (s *Scheduler) start() error {
	cfgPath := filepath.Join(s.dir, "scheduler.yaml")
	if err := os.WriteFile(cfgPath, []byte(s.config()), 0o600); err != nil {
		return fmt.Errorf("write scheduler config: %w", err)
	}
	p, err := s.launch("scheduler", s.bin, "--config", cfgPath, "--dynconfig", filepath.Join(s.dir, "dynconfig.yaml"), "--console")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err = s.waitServing(ctx, p)
	if err == nil && p.exited() {
		err = fmt.Errorf("exited right after serving (port taken?): %v", p.err)
	}
	if err != nil {
		p.stop(syscall.SIGKILL)
		return fmt.Errorf("scheduler on %s: %w\n%s", s.addr, err, tail(s.Log(), 40))
	}
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()
	return nil
}

func (s *Scheduler) launch(name, prog string, args ...string) (*process, error) {
	cmd := s.opts.Command(prog, args...)
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = s.logs, s.logs
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// waitServing polls grpc.health.v1 Check until the scheduler answers SERVING.
func (s *Scheduler) waitServing(ctx context.Context, p *process) error {
	conn, err := grpc.NewClient("passthrough:///"+s.addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return s.opts.DialContext(ctx, "tcp", addr)
		}))
	if err != nil {
		return fmt.Errorf("health client: %w", err)
	}
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := health.Check(cctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("exited before serving: %v", p.err)
		case <-ctx.Done():
			return fmt.Errorf("not serving (last health answer: %v, %v): %w", resp.GetStatus(), err, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// startRedis runs redis-server on a free loopback port (of the namespace Command runs it in),
// without persistence, and waits until it answers PING.
func (s *Scheduler) startRedis() error {
	dir := filepath.Join(s.dir, "redis")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("redis dir: %w", err)
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort()
		if err != nil {
			return err
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		p, err := s.launch("redis-server", RedisBinary, "--bind", "127.0.0.1", "--port", strconv.Itoa(port),
			"--dir", dir, "--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "no",
			"--loglevel", "warning")
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		lastErr = s.waitRedis(ctx, p, addr)
		cancel()
		if lastErr == nil {
			s.mu.Lock()
			s.redis, s.rdAddr = p, addr
			s.mu.Unlock()
			return nil
		}
		p.stop(syscall.SIGKILL)
	}
	return fmt.Errorf("redis-server: %w\n%s", lastErr, tail(s.Log(), 20))
}

func (s *Scheduler) waitRedis(ctx context.Context, p *process, addr string) error {
	for {
		if err := redisPing(ctx, s.opts.DialContext, addr); err == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("exited before serving: %v", p.err)
		case <-ctx.Done():
			return fmt.Errorf("no PONG on %s: %w", addr, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// redisPing sends an inline PING and expects +PONG.
func redisPing(ctx context.Context, dial func(context.Context, string, string) (net.Conn, error), addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := dial(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "+PONG" {
		return errors.New("unexpected answer " + strings.TrimSpace(line))
	}
	return nil
}

var (
	portsMu sync.Mutex
	ports   = map[int]bool{} // handed out in this test process
)

// freePort returns a 127.0.0.1 port that was free a moment ago and that this process has not
// handed out before (parallel tests must not race for one port: a scheduler that fails to bind
// exits, but a health check could reach another test's scheduler on it first).
func freePort() (int, error) {
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("find a free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !ports[port] {
			ports[port] = true
			return port, nil
		}
	}
	return 0, errors.New("find a free port: every port offered was used before")
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
