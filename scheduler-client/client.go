package schedclient

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	commonv2 "d7y.io/api/v2/pkg/apis/common/v2"
	schedulerv2 "d7y.io/api/v2/pkg/apis/scheduler/v2"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
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
	// DefaultReconnectTimeout is how long a session whose stream broke keeps looking for a
	// scheduler (long enough for a scheduler restart) before it ends with EventError.
	DefaultReconnectTimeout = 30 * time.Second
)

// ErrNoScheduler is wrapped by errors returned when no configured scheduler answers.
var ErrNoScheduler = errors.New("schedclient: no scheduler reachable")

// Config configures New.
type Config struct {
	// Addrs are the schedulers ("host:port") in order of preference: the client uses the first
	// that answers and moves on to the next when it breaks.
	Addrs []string
	// Host describes this peer.
	Host Host
	// AnnounceInterval defaults to DefaultAnnounceInterval.
	AnnounceInterval time.Duration
	// Log defaults to a no-op logger.
	Log *zap.Logger
	// DialTimeout defaults to DefaultDialTimeout.
	DialTimeout time.Duration
	// ReconnectTimeout defaults to DefaultReconnectTimeout.
	ReconnectTimeout time.Duration
	// DialOptions are added to every scheduler connection (e.g. grpc.WithContextDialer to reach
	// schedulers in another network namespace). Connections are plaintext.
	DialOptions []grpc.DialOption
}

// Client is this peer's link to the Dragonfly schedulers (scheduler.v2): it announces the host,
// opens one AnnouncePeer session per task, answers the unary RPCs, and fails over across Addrs.
// It is safe for concurrent use.
type Client struct {
	cfg     Config
	log     *zap.Logger
	host    *hostSampler
	conns   []*grpc.ClientConn
	clients []schedulerv2.SchedulerClient

	switchMu sync.Mutex // serialises recover: one probe round at a time

	mu       sync.Mutex
	active   int    // index into cfg.Addrs of the scheduler in use; -1 when none answered
	gen      uint64 // bumped by every successful recover; tells stale failures from fresh ones
	sessions map[*Session]struct{}
	closed   bool

	stop     chan struct{}
	loopDone chan struct{}
}

// New connects to the first scheduler in cfg.Addrs that accepts AnnounceHost (sent with the full
// host statistics), and re-announces every AnnounceInterval until Close. It fails when no
// scheduler answers.
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
	if cfg.ReconnectTimeout <= 0 {
		cfg.ReconnectTimeout = DefaultReconnectTimeout
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	c := &Client{
		cfg:      cfg,
		log:      cfg.Log.With(zap.String("host", host.ID)),
		host:     newHostSampler(host),
		active:   -1,
		sessions: map[*Session]struct{}{},
		stop:     make(chan struct{}),
		loopDone: make(chan struct{}),
	}
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// gRPC's default reconnect backoff grows to minutes; a scheduler that restarts should be
		// reached again within seconds.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second},
			MinConnectTimeout: cfg.DialTimeout,
		}),
	}, cfg.DialOptions...)
	for _, addr := range cfg.Addrs {
		conn, err := grpc.NewClient(addr, opts...)
		if err != nil {
			c.closeConns()
			return nil, fmt.Errorf("schedclient: scheduler %s: %w", addr, err)
		}
		c.conns = append(c.conns, conn)
		c.clients = append(c.clients, schedulerv2.NewSchedulerClient(conn))
	}
	if _, _, err := c.recover(ctx, 0); err != nil {
		c.closeConns()
		return nil, err
	}
	go c.announceLoop()
	return c, nil
}

// HostID is the id this peer announces.
func (c *Client) HostID() string { return c.cfg.Host.ID }

// Host is the announced host description, defaults applied.
func (c *Client) Host() Host { return c.cfg.Host }

// Scheduler is the address of the scheduler in use ("" when none answers).
func (c *Client) Scheduler() string {
	idx, _ := c.current()
	if idx < 0 {
		return ""
	}
	return c.cfg.Addrs[idx]
}

// Close ends every open session, stops announcing and deletes the host from the scheduler in use
// (which drops its peers there), then closes the connections. It returns the DeleteHost error, if
// any.
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
	idx := c.active
	c.mu.Unlock()

	close(c.stop)
	<-c.loopDone
	for _, s := range sessions {
		_ = s.Close()
	}
	var err error
	if idx >= 0 {
		dctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
		_, derr := c.clients[idx].DeleteHost(dctx, &schedulerv2.DeleteHostRequest{HostId: c.cfg.Host.ID})
		cancel()
		if derr != nil {
			err = fmt.Errorf("schedclient: delete host %s on %s: %w", c.cfg.Host.ID, c.cfg.Addrs[idx], derr)
		}
	}
	c.closeConns()
	return err
}

func (c *Client) closeConns() {
	for _, conn := range c.conns {
		_ = conn.Close()
	}
}

// current is the scheduler in use and the generation it was chosen in.
func (c *Client) current() (int, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.active, c.gen
}

// recover finds a scheduler that accepts AnnounceHost after a failure seen under generation
// failedGen. If another caller already recovered since then, its choice is returned without a new
// probe. Otherwise the scheduler in use is probed first (it may only have dropped one stream), then
// the others in configured order after it; the first that answers becomes the one in use.
func (c *Client) recover(ctx context.Context, failedGen uint64) (int, uint64, error) {
	c.switchMu.Lock()
	defer c.switchMu.Unlock()
	idx, gen := c.current()
	if gen != failedGen && idx >= 0 {
		return idx, gen, nil
	}
	start := max(idx, 0)
	var errs []error
	for i := range c.clients {
		try := (start + i) % len(c.clients)
		if err := c.announceTo(ctx, try); err != nil {
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
			continue
		}
		c.mu.Lock()
		from := c.active
		c.active = try
		c.gen++
		gen = c.gen
		c.mu.Unlock()
		if from != try {
			c.log.Info("scheduler in use", zap.String("scheduler", c.cfg.Addrs[try]), zap.Int("previous", from))
		}
		return try, gen, nil
	}
	c.mu.Lock()
	c.active = -1
	c.gen++
	gen = c.gen
	c.mu.Unlock()
	return -1, gen, fmt.Errorf("%w: %w", ErrNoScheduler, errors.Join(errs...))
}

// announceTo sends AnnounceHost with fresh statistics to scheduler i.
func (c *Client) announceTo(ctx context.Context, i int) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	defer cancel()
	_, err := c.clients[i].AnnounceHost(ctx, &schedulerv2.AnnounceHostRequest{
		Host:     c.host.sample(),
		Interval: durationpb.New(c.cfg.AnnounceInterval),
	})
	if err != nil {
		return fmt.Errorf("announce host to %s: %w", c.cfg.Addrs[i], err)
	}
	return nil
}

func (c *Client) announceLoop() {
	defer close(c.loopDone)
	ticker := time.NewTicker(c.cfg.AnnounceInterval)
	defer ticker.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-c.stop
		cancel()
	}()
	for {
		select {
		case <-c.stop:
			return
		case <-ticker.C:
		}
		idx, gen := c.current()
		if idx >= 0 {
			err := c.announceTo(ctx, idx)
			if err == nil {
				continue
			}
			c.log.Warn("re-announce failed; trying the other schedulers", zap.Error(err))
		}
		if _, _, err := c.recover(ctx, gen); err != nil && ctx.Err() == nil {
			c.log.Error("no scheduler accepts the host", zap.Error(err))
		}
	}
}

// schedulerGone tells errors that mean "this scheduler is not there" (the connection failed or
// broke) from answers of a live scheduler.
func schedulerGone(err error) bool { return status.Code(err) == codes.Unavailable }

// call runs fn against the scheduler in use, failing over to the next one that answers while fn
// fails with codes.Unavailable.
func (c *Client) call(ctx context.Context, fn func(context.Context, schedulerv2.SchedulerClient) error) error {
	return c.callN(ctx, len(c.clients)+1, fn)
}

// callN is call with at most attempts calls of fn.
func (c *Client) callN(ctx context.Context, attempts int, fn func(context.Context, schedulerv2.SchedulerClient) error) error {
	idx, gen := c.current()
	var errs []error
	for attempt := 0; attempt < attempts; attempt++ {
		if idx < 0 {
			var err error
			if idx, gen, err = c.recover(ctx, gen); err != nil {
				return errors.Join(append(errs, err)...)
			}
		}
		err := fn(ctx, c.clients[idx])
		if err == nil || !schedulerGone(err) || ctx.Err() != nil {
			return err
		}
		errs = append(errs, fmt.Errorf("%s: %w", c.cfg.Addrs[idx], err))
		if attempt+1 == attempts {
			break
		}
		var rerr error
		if idx, gen, rerr = c.recover(ctx, gen); rerr != nil {
			return errors.Join(append(errs, rerr)...)
		}
	}
	return errors.Join(errs...)
}

// StatTask asks the scheduler about a task: state, content length, piece count and the pieces
// some peer downloaded back-to-source.
func (c *Client) StatTask(ctx context.Context, taskID string) (*commonv2.Task, error) {
	var task *commonv2.Task
	err := c.call(ctx, func(ctx context.Context, cl schedulerv2.SchedulerClient) error {
		var err error
		task, err = cl.StatTask(ctx, &schedulerv2.StatTaskRequest{HostId: c.cfg.Host.ID, TaskId: taskID})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("schedclient: stat task %s: %w", taskID, err)
	}
	return task, nil
}

// StatPeer asks the scheduler about a peer: state, host, and its task (with the task's
// back-to-source pieces; the v2.5.1 scheduler does not list a peer's own pieces).
func (c *Client) StatPeer(ctx context.Context, taskID, peerID string) (*commonv2.Peer, error) {
	var peer *commonv2.Peer
	err := c.call(ctx, func(ctx context.Context, cl schedulerv2.SchedulerClient) error {
		var err error
		peer, err = cl.StatPeer(ctx, &schedulerv2.StatPeerRequest{HostId: c.cfg.Host.ID, TaskId: taskID, PeerId: peerID})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("schedclient: stat peer %s of task %s: %w", peerID, taskID, err)
	}
	return peer, nil
}

// ListHosts lists the hosts the scheduler in use knows.
func (c *Client) ListHosts(ctx context.Context) ([]*commonv2.Host, error) {
	var hosts []*commonv2.Host
	err := c.call(ctx, func(ctx context.Context, cl schedulerv2.SchedulerClient) error {
		resp, err := cl.ListHosts(ctx, &schedulerv2.ListHostsRequest{})
		hosts = resp.GetHosts()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("schedclient: list hosts: %w", err)
	}
	return hosts, nil
}

// PreheatImage asks the scheduler to preheat an image: it resolves the manifest URL
// (http(s)://REGISTRY/v2/REPO/manifests/REF) itself and, in the background, makes seed peers
// download every blob the manifest references. The scheduler needs Redis and jobs enabled, a
// registry address that is not loopback or link-local, and a healthy super-seed host; see the
// package documentation.
//
// It is sent once, never failed over: a v2.5.1 scheduler without Redis accepts the request and then
// crashes on its nil job service (service_v2.go PreheatImage), and a retry would take the next
// scheduler down too.
func (c *Client) PreheatImage(ctx context.Context, req *schedulerv2.PreheatImageRequest) error {
	err := c.callN(ctx, 1, func(ctx context.Context, cl schedulerv2.SchedulerClient) error {
		_, err := cl.PreheatImage(ctx, req)
		return err
	})
	if err != nil {
		return fmt.Errorf("schedclient: preheat image %s: %w", req.GetUrl(), err)
	}
	return nil
}

// StatImage asks the scheduler which peers hold the layers of an image (it resolves the manifest
// and queries peers through its job queue, so it needs Redis too).
func (c *Client) StatImage(ctx context.Context, req *schedulerv2.StatImageRequest) (*schedulerv2.StatImageResponse, error) {
	var resp *schedulerv2.StatImageResponse
	err := c.call(ctx, func(ctx context.Context, cl schedulerv2.SchedulerClient) error {
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
