package schedclient

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	commonv2 "d7y.io/api/v2/pkg/apis/common/v2"
	schedulerv2 "d7y.io/api/v2/pkg/apis/scheduler/v2"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Defaults of Config.
const (
	// DefaultAnnounceInterval is how often the host is re-announced, like the Rust peer
	// (dragonfly-client scheduler.announce_interval, 300 s). The scheduler drops a host that has not
	// announced for two of its intervals (scheduler/resource/standard/host_manager.go RunGC).
	DefaultAnnounceInterval = 5 * time.Minute
	// DefaultDialTimeout bounds one attempt on one scheduler: an AnnounceHost, or opening an
	// AnnouncePeer stream and sending the register.
	DefaultDialTimeout = 5 * time.Second
	// DefaultReconnectBackoff is the first pause after a round in which no scheduler took a
	// session or an announce; the pause doubles up to MaxReconnectBackoff.
	DefaultReconnectBackoff = 200 * time.Millisecond
	// DefaultMaxReconnectBackoff caps that pause.
	DefaultMaxReconnectBackoff = 30 * time.Second
	// DefaultHealthInterval is how often a scheduler that accepted the host is asked whether it
	// still knows the host (ListHosts): a scheduler that restarts forgets every host and peer,
	// and peers whose tasks are finished have no stream that would notice.
	DefaultHealthInterval = 10 * time.Second
)

// ErrNoScheduler is wrapped by errors returned when no configured scheduler answers.
var ErrNoScheduler = errors.New("schedclient: no scheduler reachable")

// Config configures New.
type Config struct {
	// Addrs are the schedulers ("ip:port"). Each task goes to the scheduler the Rust dfdaemon's
	// hash ring picks for it, and to the next ones on the ring while that one does not answer; the
	// host is announced to all of them. The order does not matter.
	Addrs []string
	// Host describes this peer.
	Host Host
	// AnnounceInterval defaults to DefaultAnnounceInterval.
	AnnounceInterval time.Duration
	// Log defaults to a no-op logger.
	Log *zap.Logger
	// DialTimeout defaults to DefaultDialTimeout.
	DialTimeout time.Duration
	// ReconnectTimeout is ignored: sessions now re-register until Close. Kept so that existing
	// configurations compile.
	ReconnectTimeout time.Duration
	// ReconnectBackoff and MaxReconnectBackoff shape the pauses between rounds of attempts of a
	// session that has no stream, and of the announces to a scheduler that does not answer
	// (exponential, jittered); they default to DefaultReconnectBackoff and
	// DefaultMaxReconnectBackoff.
	ReconnectBackoff, MaxReconnectBackoff time.Duration
	// ReportQueueLimit bounds each session's queue of unsent reports; default
	// DefaultReportQueueLimit. See the package documentation for what a full queue drops.
	ReportQueueLimit int
	// HealthInterval is how often a scheduler holding the host is health-checked between
	// announces (DefaultHealthInterval; negative: never).
	HealthInterval time.Duration
	// DialOptions are added to every scheduler connection (e.g. grpc.WithContextDialer to reach
	// schedulers in another network namespace). Connections are plaintext.
	DialOptions []grpc.DialOption
}

// scheduler is one configured scheduler and what the client knows of it.
type scheduler struct {
	addr   string
	conn   *grpc.ClientConn
	client schedulerv2.SchedulerClient

	mu       sync.Mutex
	okAt     time.Time     // start of the last announce it accepted
	failAt   time.Time     // the last failure seen on it (announce, stream, call)
	inflight *announceCall // an announce in progress

	kick chan struct{} // wakes the announce loop waiting out the interval: sc failed
}

type announceCall struct {
	done chan struct{}
	err  error
}

// announced: it accepted the host since its last failure.
func (sc *scheduler) announcedLocked() bool { return !sc.okAt.IsZero() && sc.okAt.After(sc.failAt) }

// Client is this peer's link to the Dragonfly schedulers (scheduler.v2): it announces the host to
// every scheduler, opens one AnnouncePeer session per task on the task's scheduler, and answers
// the unary RPCs. It is safe for concurrent use.
type Client struct {
	cfg    Config
	log    *zap.Logger
	host   *hostSampler
	scheds []*scheduler
	ring   *ring

	ctx    context.Context // until Close
	cancel context.CancelFunc
	loops  sync.WaitGroup

	mu       sync.Mutex
	sessions map[*Session]struct{}
	closed   bool
	lastOK   int           // index of the scheduler that last accepted an announce; -1: none yet
	up       chan struct{} // closed and replaced when a scheduler accepts the host after a failure
}

// New starts a client: one announce loop per scheduler in cfg.Addrs (AnnounceHost with the full
// host statistics, then every AnnounceInterval; a scheduler that does not answer is retried with
// backoff without holding up the others). It waits until one scheduler accepted the host, every
// scheduler was tried once, or ctx ends, and fails only for an invalid configuration: sessions and
// announces heal when schedulers come up later.
func New(ctx context.Context, cfg Config) (*Client, error) {
	if len(cfg.Addrs) == 0 {
		return nil, errors.New("schedclient: no scheduler address configured")
	}
	host, err := cfg.Host.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("schedclient: %w", err)
	}
	cfg.Host = host
	if cfg.AnnounceInterval <= 0 {
		cfg.AnnounceInterval = DefaultAnnounceInterval
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.ReconnectBackoff <= 0 {
		cfg.ReconnectBackoff = DefaultReconnectBackoff
	}
	if cfg.MaxReconnectBackoff <= 0 {
		cfg.MaxReconnectBackoff = DefaultMaxReconnectBackoff
	}
	cfg.MaxReconnectBackoff = max(cfg.MaxReconnectBackoff, cfg.ReconnectBackoff)
	if cfg.HealthInterval == 0 {
		cfg.HealthInterval = DefaultHealthInterval
	}
	if cfg.ReportQueueLimit <= 0 {
		cfg.ReportQueueLimit = DefaultReportQueueLimit
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	var addrs []string
	for _, a := range cfg.Addrs {
		if !contains(addrs, a) {
			addrs = append(addrs, a)
		}
	}
	cfg.Addrs = addrs
	cctx, cancel := context.WithCancel(context.Background())
	c := &Client{
		cfg:      cfg,
		log:      cfg.Log.With(zap.String("host", host.ID)),
		host:     newHostSampler(host),
		ctx:      cctx,
		cancel:   cancel,
		sessions: map[*Session]struct{}{},
		lastOK:   -1,
		up:       make(chan struct{}),
	}
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// gRPC's default reconnect backoff grows to minutes; a scheduler that restarts should be
		// reached again within seconds.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           grpcbackoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second},
			MinConnectTimeout: cfg.DialTimeout,
		}),
	}, cfg.DialOptions...)
	ringAddrs := make([]string, len(addrs))
	for i, addr := range addrs {
		conn, err := grpc.NewClient(addr, opts...)
		if err != nil {
			cancel()
			c.closeConns()
			return nil, fmt.Errorf("schedclient: scheduler %s: %w", addr, err)
		}
		c.scheds = append(c.scheds, &scheduler{addr: addr, conn: conn, client: schedulerv2.NewSchedulerClient(conn), kick: make(chan struct{}, 1)})
		ringAddrs[i] = resolveForRing(ctx, addr, cfg.DialTimeout)
	}
	c.ring = newRing(ringAddrs)

	tried := make(chan struct{}, len(c.scheds))
	for _, sc := range c.scheds {
		c.loops.Add(1)
		go c.announceLoop(sc, tried)
	}
	for range c.scheds {
		select {
		case <-tried:
		case <-ctx.Done():
			return c, nil
		}
		if c.Scheduler() != "" {
			break
		}
	}
	return c, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// resolveForRing is the "ip:port" a scheduler address is placed on the ring with. The Rust peer
// only sees IPs (from its dynconfig); a host name is resolved once here, preferring IPv4 like the
// Rust peer's DNS discovery, and kept as is when it does not resolve.
func resolveForRing(ctx context.Context, addr string, timeout time.Duration) string {
	if _, err := netip.ParseAddrPort(addr); err == nil {
		return addr
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil || len(ips) == 0 {
		return addr
	}
	pick := ips[0]
	for _, ip := range ips {
		if ip.Unmap().Is4() {
			pick = ip.Unmap()
			break
		}
	}
	return net.JoinHostPort(pick.String(), port)
}

// HostID is the id this peer announces.
func (c *Client) HostID() string { return c.cfg.Host.ID }

// Host is the announced host description, defaults applied.
func (c *Client) Host() Host { return c.cfg.Host }

// Scheduler is the address of the scheduler that last accepted the host (used for the calls that
// concern no task), "" while none has.
func (c *Client) Scheduler() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lastOK < 0 {
		return ""
	}
	return c.scheds[c.lastOK].addr
}

// SchedulerFor is the scheduler the ring picks for a task (the one the Rust dfdaemon picks too);
// sessions and task calls use it while it answers, and the next ones on the ring otherwise.
func (c *Client) SchedulerFor(taskID string) string {
	return c.scheds[c.ring.order(taskID)[0]].addr
}

// Close closes every open session (each deletes its peer), stops announcing, deletes the host
// from every scheduler that holds it (which drops its peers there), and closes the connections.
// It returns the DeleteHost errors, if any.
func (c *Client) Close(ctx context.Context) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	sessions := make([]*Session, 0, len(c.sessions))
	for s := range c.sessions {
		sessions = append(sessions, s)
	}
	c.mu.Unlock()

	var wg sync.WaitGroup
	for _, s := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = s.Close()
		}()
	}
	wg.Wait()
	c.cancel()
	c.loops.Wait()

	errs := make([]error, len(c.scheds))
	for i, sc := range c.scheds {
		sc.mu.Lock()
		held := !sc.okAt.IsZero()
		sc.mu.Unlock()
		if !held {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			dctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
			defer cancel()
			if _, err := sc.client.DeleteHost(dctx, &schedulerv2.DeleteHostRequest{HostId: c.cfg.Host.ID}); err != nil {
				errs[i] = fmt.Errorf("schedclient: delete host %s on %s: %w", c.cfg.Host.ID, sc.addr, err)
			}
		}()
	}
	wg.Wait()
	c.closeConns()
	return errors.Join(errs...)
}

func (c *Client) closeConns() {
	for _, sc := range c.scheds {
		_ = sc.conn.Close()
	}
}

// upSignal is closed when a scheduler next accepts the host after a failure: sessions waiting
// for a scheduler retry at once.
func (c *Client) upSignal() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.up
}

// markFailed records that sc failed: the next session to use it announces the host first, and
// its announce loop retries now (then with backoff) instead of at the next interval, so that its
// return is noticed and sessions waiting for it, or moved away from it, come back.
func (c *Client) markFailed(sc *scheduler) {
	sc.mu.Lock()
	sc.failAt = time.Now()
	sc.mu.Unlock()
	select {
	case sc.kick <- struct{}{}:
	default:
	}
}

// announce sends AnnounceHost with fresh statistics to sc and records the result.
func (c *Client) announce(ctx context.Context, sc *scheduler) error {
	start := time.Now()
	actx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	defer cancel()
	_, err := sc.client.AnnounceHost(actx, &schedulerv2.AnnounceHostRequest{
		Host:     c.host.sample(),
		Interval: durationpb.New(c.cfg.AnnounceInterval),
	})
	sc.mu.Lock()
	was := sc.announcedLocked()
	if err != nil {
		if ctx.Err() == nil {
			sc.failAt = time.Now()
		}
	} else if start.After(sc.okAt) {
		sc.okAt = start
	}
	now := sc.announcedLocked()
	sc.mu.Unlock()
	if err != nil {
		return fmt.Errorf("announce host to %s: %w", sc.addr, err)
	}
	c.mu.Lock()
	c.lastOK = c.index(sc)
	if !was && now {
		close(c.up)
		c.up = make(chan struct{})
	}
	c.mu.Unlock()
	if !was {
		c.log.Info("scheduler accepted the host", zap.String("scheduler", sc.addr))
	}
	return nil
}

func (c *Client) index(sc *scheduler) int {
	for i, x := range c.scheds {
		if x == sc {
			return i
		}
	}
	return -1
}

// ensureAnnounced announces the host to sc unless sc accepted it since its last failure.
// Concurrent callers share one announce.
func (c *Client) ensureAnnounced(ctx context.Context, sc *scheduler) error {
	sc.mu.Lock()
	if sc.announcedLocked() {
		sc.mu.Unlock()
		return nil
	}
	call := sc.inflight
	owner := call == nil
	if owner {
		call = &announceCall{done: make(chan struct{})}
		sc.inflight = call
	}
	sc.mu.Unlock()
	if owner {
		call.err = c.announce(ctx, sc)
		sc.mu.Lock()
		sc.inflight = nil
		sc.mu.Unlock()
		close(call.done)
		return call.err
	}
	select {
	case <-call.done:
		return call.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// announceLoop keeps the host announced to sc: every AnnounceInterval while it answers, with
// backoff while it does not. tried gets one value after the first attempt.
func (c *Client) announceLoop(sc *scheduler, tried chan<- struct{}) {
	defer c.loops.Done()
	bo := backoff{base: c.cfg.ReconnectBackoff, max: c.cfg.MaxReconnectBackoff}
	first := true
	for {
		err := c.announce(c.ctx, sc)
		if first {
			first = false
			tried <- struct{}{}
		}
		wait, kick := c.cfg.AnnounceInterval, sc.kick
		if err != nil {
			if c.ctx.Err() != nil {
				return
			}
			// A kick does not shorten a backoff pause.
			wait, kick = bo.next(), nil
			c.log.Debug("announce failed; retrying", zap.String("scheduler", sc.addr), zap.Duration("pause", wait), zap.Error(err))
		} else {
			bo.reset()
		}
		if err == nil && !c.watchHealth(sc, wait, kick) {
			return
		}
		if err != nil {
			t := time.NewTimer(wait)
			select {
			case <-c.ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}
}

// watchHealth waits out an announce interval on a scheduler that accepted the host, checking its
// health every HealthInterval: a failed check marks it failed and ends the wait, so the next
// announce (with backoff while it is down) notices its return and sessions register again. It
// returns false when the client closes.
func (c *Client) watchHealth(sc *scheduler, wait time.Duration, kick <-chan struct{}) bool {
	end := time.NewTimer(wait)
	defer end.Stop()
	var tick <-chan time.Time
	if c.cfg.HealthInterval > 0 {
		tk := time.NewTicker(c.cfg.HealthInterval)
		defer tk.Stop()
		tick = tk.C
	}
	for {
		select {
		case <-c.ctx.Done():
			return false
		case <-kick:
			return true
		case <-end.C:
			return true
		case <-tick:
			// A scheduler that restarted answers every call but has forgotten the host (and every
			// peer): ask whether it still lists this host.
			ctx, cancel := context.WithTimeout(c.ctx, c.cfg.DialTimeout)
			resp, err := sc.client.ListHosts(ctx, &schedulerv2.ListHostsRequest{})
			cancel()
			if c.ctx.Err() != nil {
				return false
			}
			if status.Code(err) == codes.Unimplemented {
				continue // cannot tell: the announces and streams will
			}
			known := false
			for _, h := range resp.GetHosts() {
				known = known || h.GetId() == c.cfg.Host.ID
			}
			if err != nil || !known {
				c.log.Warn("the scheduler is gone or has forgotten the host", zap.String("scheduler", sc.addr), zap.Error(err))
				sc.mu.Lock()
				sc.failAt = time.Now()
				sc.mu.Unlock()
				return true
			}
		}
	}
}

// schedulerGone tells errors that mean "this scheduler is not there" (the connection failed or
// broke) from answers of a live scheduler.
func schedulerGone(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return false
}

// call runs fn on the schedulers of order in turn while fn fails with "scheduler gone", at most
// attempts times.
func (c *Client) call(ctx context.Context, order []int, attempts int, fn func(context.Context, schedulerv2.SchedulerClient) error) error {
	var errs []error
	for n, i := range order {
		if n == attempts {
			break
		}
		sc := c.scheds[i]
		err := fn(ctx, sc.client)
		if err == nil || !schedulerGone(err) || ctx.Err() != nil {
			return err
		}
		c.markFailed(sc)
		errs = append(errs, fmt.Errorf("%s: %w", sc.addr, err))
	}
	return fmt.Errorf("%w: %w", ErrNoScheduler, errors.Join(errs...))
}

// anyOrder is every scheduler, the one that last accepted the host first.
func (c *Client) anyOrder() []int {
	c.mu.Lock()
	first := c.lastOK
	c.mu.Unlock()
	order := make([]int, 0, len(c.scheds))
	if first >= 0 {
		order = append(order, first)
	}
	for i := range c.scheds {
		if i != first {
			order = append(order, i)
		}
	}
	return order
}

// StatTask asks the task's scheduler about a task: state, content length, piece count and the
// pieces some peer downloaded back-to-source.
func (c *Client) StatTask(ctx context.Context, taskID string) (*commonv2.Task, error) {
	var task *commonv2.Task
	err := c.call(ctx, c.ring.order(taskID), len(c.scheds), func(ctx context.Context, cl schedulerv2.SchedulerClient) error {
		var err error
		task, err = cl.StatTask(ctx, &schedulerv2.StatTaskRequest{HostId: c.cfg.Host.ID, TaskId: taskID})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("schedclient: stat task %s: %w", taskID, err)
	}
	return task, nil
}

// StatPeer asks the task's scheduler about a peer: state, host, and its task (with the task's
// back-to-source pieces; the v2.5.1 scheduler does not list a peer's own pieces).
func (c *Client) StatPeer(ctx context.Context, taskID, peerID string) (*commonv2.Peer, error) {
	var peer *commonv2.Peer
	err := c.call(ctx, c.ring.order(taskID), len(c.scheds), func(ctx context.Context, cl schedulerv2.SchedulerClient) error {
		var err error
		peer, err = cl.StatPeer(ctx, &schedulerv2.StatPeerRequest{HostId: c.cfg.Host.ID, TaskId: taskID, PeerId: peerID})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("schedclient: stat peer %s of task %s: %w", peerID, taskID, err)
	}
	return peer, nil
}

// ListHosts lists the hosts a reachable scheduler knows (each scheduler knows the hosts that
// announced to it; every peer announces to all of them).
func (c *Client) ListHosts(ctx context.Context) ([]*commonv2.Host, error) {
	var hosts []*commonv2.Host
	err := c.call(ctx, c.anyOrder(), len(c.scheds), func(ctx context.Context, cl schedulerv2.SchedulerClient) error {
		resp, err := cl.ListHosts(ctx, &schedulerv2.ListHostsRequest{})
		hosts = resp.GetHosts()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("schedclient: list hosts: %w", err)
	}
	return hosts, nil
}

// PreheatImage asks a scheduler to preheat an image: it resolves the manifest URL
// (http(s)://REGISTRY/v2/REPO/manifests/REF) itself and, in the background, makes seed peers
// download every blob the manifest references. The scheduler needs Redis and jobs enabled, a
// registry address that is not loopback or link-local, and a healthy super-seed host; see the
// package documentation.
//
// It is sent once, never failed over: a v2.5.1 scheduler without Redis accepts the request and then
// crashes on its nil job service (service_v2.go PreheatImage), and a retry would take the next
// scheduler down too.
func (c *Client) PreheatImage(ctx context.Context, req *schedulerv2.PreheatImageRequest) error {
	err := c.call(ctx, c.anyOrder(), 1, func(ctx context.Context, cl schedulerv2.SchedulerClient) error {
		_, err := cl.PreheatImage(ctx, req)
		return err
	})
	if err != nil {
		return fmt.Errorf("schedclient: preheat image %s: %w", req.GetUrl(), err)
	}
	return nil
}

// StatImage asks a scheduler which peers hold the layers of an image (it resolves the manifest
// and queries peers through its job queue, so it needs Redis too).
func (c *Client) StatImage(ctx context.Context, req *schedulerv2.StatImageRequest) (*schedulerv2.StatImageResponse, error) {
	var resp *schedulerv2.StatImageResponse
	err := c.call(ctx, c.anyOrder(), len(c.scheds), func(ctx context.Context, cl schedulerv2.SchedulerClient) error {
		var err error
		resp, err = cl.StatImage(ctx, req)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("schedclient: stat image %s: %w", req.GetUrl(), err)
	}
	return resp, nil
}

func (c *Client) addSession(s *Session) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("schedclient: client closed")
	}
	c.sessions[s] = struct{}{}
	return nil
}

func (c *Client) removeSession(s *Session) {
	c.mu.Lock()
	delete(c.sessions, s)
	c.mu.Unlock()
}
