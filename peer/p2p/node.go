package p2p

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	dfdaemonv2 "d7y.io/api/v2/pkg/apis/dfdaemon/v2"
	schedulerv2 "d7y.io/api/v2/pkg/apis/scheduler/v2"
	"github.com/opencontainers/go-digest"
	"go.uber.org/zap"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/dfnydus/dfnydus/oci"
	"github.com/dfnydus/dfnydus/peer/daemon"
	"github.com/dfnydus/dfnydus/peer/source"
	"github.com/dfnydus/dfnydus/peer/upload"
	"github.com/dfnydus/dfnydus/peer/vortex"
	"github.com/dfnydus/dfnydus/registry"
	schedclient "github.com/dfnydus/dfnydus/scheduler-client"
)

// Node is a daemon's P2P side: the scheduler client, the piece Manager, the DfdaemonUpload gRPC
// server and the Vortex piece server. It is the daemon's Distributor.
type Node struct {
	*Manager
	cfg     daemon.Config
	log     *zap.Logger
	sched   *schedclient.Client
	grpcSrv *grpc.Server
	upload  *upload.Server
	vortex  *vortex.Server
	regOpts daemon.RegistryOptions
	// stopRefresh ends the periodic resolution of the scheduler addresses.
	stopRefresh context.CancelFunc
}

// NewDistributor builds the P2P side of daemon d from its config (scheduler.*); with no scheduler
// configured it returns nil: no P2P, every read goes back to source.
func NewDistributor(ctx context.Context, d *daemon.Daemon, version string, log *zap.Logger) (daemon.Distributor, error) {
	cfg := d.Config()
	if len(cfg.Scheduler.Addrs) == 0 {
		return nil, nil
	}
	n, err := Start(ctx, d, version, log)
	if err != nil {
		return nil, err
	}
	return n, nil
}

// Start announces the host, starts the upload and piece servers and returns the Node.
func Start(ctx context.Context, d *daemon.Daemon, version string, log *zap.Logger) (_ *Node, err error) {
	cfg := d.Config()
	sc := cfg.Scheduler
	if log == nil {
		log = zap.NewNop()
	}
	log = log.Named("p2p")
	ip := sc.AdvertiseIP
	if ip == "" {
		ip = daemon.DefaultAdvertiseIP().String()
	}
	n := &Node{cfg: cfg, log: log, regOpts: cfg.Registry}
	defer func() {
		if err != nil {
			_ = n.Close()
		}
	}()
	// Servers first: the scheduler health-checks seed peers on the upload port.
	upLn, err := net.Listen("tcp", net.JoinHostPort(listenIP(ip), strconv.Itoa(sc.UploadPort)))
	if err != nil {
		return nil, fmt.Errorf("upload port: %w", err)
	}
	pieceLn, err := net.Listen("tcp", net.JoinHostPort(listenIP(ip), strconv.Itoa(sc.PiecePort)))
	if err != nil {
		upLn.Close()
		return nil, fmt.Errorf("piece port: %w", err)
	}
	hostType := schedclient.HostTypeNormal
	if sc.Seed {
		hostType = schedclient.HostTypeSuperSeed
	}
	host := schedclient.Host{Type: hostType, Hostname: sc.Hostname, IP: ip, Port: sc.UploadPort, DownloadPort: sc.PiecePort,
		DataDir: cfg.CacheDir, Version: version}
	if host.Hostname == "" {
		host.Hostname, _ = os.Hostname()
	}
	host.ID = schedclient.HostID(ip, host.Hostname, sc.Seed)
	// The piece index of older versions: the store's verified ranges are the one truth now.
	_ = os.Remove(filepath.Join(cfg.CacheDir, "pieces.db"))
	uc := cfg.Upload
	mgr, err := New(Config{HostID: host.ID, Fetcher: d.Fetcher(),
		PieceLength: uint64(sc.PieceLength), Seed: sc.Seed, OpenURL: n.openURL, ScheduleTimeout: sc.ScheduleTimeout,
		MaxSeedTasks: uc.MaxSeedTasks, MaxSeedBytes: int64(uc.MaxSeedBytes), SeedTaskIdle: uc.SeedTaskIdle,
		Log: log, Metrics: d.Metrics()})
	if err != nil {
		upLn.Close()
		pieceLn.Close()
		return nil, err
	}
	n.Manager = mgr
	if err := n.startServers(ctx, mgr, host, upLn, pieceLn); err != nil {
		return nil, err
	}
	dialOpts, err := schedulerDialOptions(sc.TLS)
	if err != nil {
		return nil, err
	}
	n.sched, err = schedclient.New(ctx, schedclient.Config{Addrs: sc.Addrs, Host: host, AnnounceInterval: sc.AnnounceInterval,
		Log: log.Named("scheduler"), DialOptions: dialOpts})
	if err != nil {
		return nil, fmt.Errorf("scheduler: %w", err)
	}
	mgr.sched = n.sched
	mgr.cfg.CompletePieces = true
	mgr.cfg.Scheduler = n.sched
	log.Info("P2P peer up", zap.String("host_id", host.ID), zap.String("ip", ip), zap.Int("upload_port", sc.UploadPort),
		zap.Int("piece_port", sc.PiecePort), zap.Bool("seed", sc.Seed), zap.Strings("schedulers", sc.Addrs))
	return n, nil
}

// startServers serves DfdaemonUpload on upLn and Vortex on pieceLn with the upload.* limits:
// DownloadTask only on seeds and only from the schedulers (or allowed callers, or verified client
// certificates), capped connections, keepalive enforcement, IO deadlines and the rate limit.
func (n *Node) startServers(ctx context.Context, mgr *Manager, host schedclient.Host, upLn, pieceLn net.Listener) error {
	cfg, log := n.cfg, n.log
	uc := cfg.Upload
	authz, err := upload.NewAuthorizer(ctx, cfg.Scheduler.Addrs, uc.AllowedCallers, log.Named("upload"))
	if err != nil {
		upLn.Close()
		pieceLn.Close()
		return err
	}
	rctx, cancel := context.WithCancel(context.Background())
	n.stopRefresh = cancel
	go authz.Run(rctx, upload.DefaultResolveInterval)
	tlsCfg, err := upload.ServerTLS(upload.TLSFiles{CAFile: uc.TLS.CAFile, CertFile: uc.TLS.CertFile, KeyFile: uc.TLS.KeyFile})
	if err != nil {
		upLn.Close()
		pieceLn.Close()
		return err
	}
	n.upload = upload.NewServer(upload.Config{HostID: host.ID, IP: host.IP, TCPPort: cfg.Scheduler.PiecePort, Seed: cfg.Scheduler.Seed,
		Authorizer: authz, URLPolicy: upload.URLPolicy{PlainHTTP: cfg.Registry.PlainHTTP}, Log: log.Named("upload")}, mgr)
	n.grpcSrv = grpc.NewServer(upload.GRPCServerOptions(upload.GRPCLimits{IdleTimeout: uc.IdleTimeout, IOTimeout: uc.IOTimeout, TLS: tlsCfg})...)
	n.upload.Register(n.grpcSrv)
	go func() { _ = n.grpcSrv.Serve(upload.LimitListener(upLn, uc.MaxConnections, log.Named("upload"))) }()

	// Pieces stream from the store; fault injection exists only in faultinject builds.
	handler := faults(mgr.ServePiece, log)
	var lim *rate.Limiter
	if uc.RateLimit > 0 {
		// A burst of at most one copy chunk keeps the rate even over short windows.
		lim = rate.NewLimiter(rate.Limit(uc.RateLimit), int(min(uc.RateLimit, 64<<10)))
	}
	n.vortex = vortex.NewServerWithOptions(handler, log.Named("vortex"), vortex.ServerOptions{IdleTimeout: uc.IdleTimeout,
		IOTimeout: uc.IOTimeout, MaxConnections: uc.MaxConnections, MaxConcurrentPieces: uc.MaxConcurrentPieces, Limiter: lim,
		Ranges: rangeFaults(mgr.ServeRange, log)})
	go func() { _ = n.vortex.Serve(pieceLn) }()
	return nil
}

// schedulerDialOptions are TLS credentials for the scheduler connection when scheduler.tls is set
// (a later WithTransportCredentials overrides the client's default plaintext one).
func schedulerDialOptions(t daemon.TLSConfig) ([]grpc.DialOption, error) {
	cfg, err := upload.ClientTLS(upload.TLSFiles{CAFile: t.CAFile, CertFile: t.CertFile, KeyFile: t.KeyFile})
	if err != nil || cfg == nil {
		return nil, err
	}
	return []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg))}, nil
}

// schemeOf is the scheme registries are reached over.
func schemeOf(o daemon.RegistryOptions) string {
	if o.PlainHTTP {
		return "http"
	}
	return "https"
}

// listenIP listens on every address for a loopback or unspecified advertise address, else on the
// advertised one.
func listenIP(ip string) string {
	if a, err := netParse(ip); err == nil && !a.IsLoopback() {
		return ip
	}
	return ""
}

func netParse(s string) (net.IP, error) {
	ip := net.ParseIP(s)
	if ip == nil {
		return nil, fmt.Errorf("not an IP: %q", s)
	}
	return ip, nil
}

// Close stops serving, ends the scheduler sessions and leaves the scheduler.
func (n *Node) Close() error {
	var errs []error
	if n.stopRefresh != nil {
		n.stopRefresh()
	}
	if n.grpcSrv != nil {
		n.upload.Shutdown()
		n.grpcSrv.Stop()
	}
	if n.vortex != nil {
		errs = append(errs, n.vortex.Close())
	}
	if n.Manager != nil {
		errs = append(errs, n.Manager.Close())
	}
	if n.sched != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		errs = append(errs, n.sched.Close(ctx))
		cancel()
	}
	return errors.Join(errs...)
}

// openURL opens a registry blob named by URL for a seed download.
func (n *Node) openURL(ctx context.Context, raw string) (source.Source, string, int64, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, "", 0, err
	}
	id, err := BlobIDFromURL(raw)
	if err != nil {
		return nil, "", 0, err
	}
	repo, _, ok := strings.Cut(strings.TrimPrefix(u.Path, "/v2/"), "/blobs/")
	if !ok || repo == "" {
		return nil, "", 0, fmt.Errorf("not a registry blob URL: %s", raw)
	}
	o := n.regOpts
	// The URL comes from a remote caller: it never picks plain HTTP (registry.plainHTTP does),
	// and it gets no credentials but the docker config's for that exact host (the config names no
	// registry host that explicit credentials would belong to).
	if want := schemeOf(o); u.Scheme != want {
		return nil, "", 0, fmt.Errorf("blob URL %s: scheme %q, registries are reached over %s", raw, u.Scheme, want)
	}
	c, err := registry.New(registry.Options{PlainHTTP: o.PlainHTTP, Insecure: o.Insecure, CAFile: o.CAFile, DockerConfig: o.DockerConfig,
		Retries: -1, Logger: n.log.Named("registry")})
	if err != nil {
		return nil, "", 0, err
	}
	ref := registry.Ref{Registry: u.Host, Repository: repo}
	exists, size, err := c.BlobExists(ctx, ref, digest.Digest("sha256:"+id))
	if err != nil {
		c.Close()
		return nil, "", 0, err
	}
	if !exists {
		c.Close()
		return nil, "", 0, fmt.Errorf("blob %s: %w", raw, source.ErrNotFound)
	}
	src := source.Retrying(source.NewRegistry(c, ref), n.cfg.Source.Retries, 200*time.Millisecond)
	return src, id, size, nil
}

// Preheat asks the scheduler to bring every layer of the image to the seed peers, then waits
// until the scheduler reports each layer's task as succeeded.
func (n *Node) Preheat(ctx context.Context, req daemon.PreheatRequest) error {
	ref, err := registry.ParseRef(req.Ref)
	if err != nil {
		return err
	}
	o := req.Registry
	c, err := registry.New(registry.Options{PlainHTTP: o.PlainHTTP, Insecure: o.Insecure, CAFile: o.CAFile, DockerConfig: o.DockerConfig,
		Username: o.Username, Password: o.Password, CredentialHost: ref.Registry, Logger: n.log.Named("registry")})
	if err != nil {
		return err
	}
	defer c.Close()
	plat, err := daemon.ParsePlatform(req.Platform)
	if err != nil {
		return err
	}
	img, err := oci.Open(ctx, c, ref, plat)
	if err != nil {
		return err
	}
	scheme := "https"
	if o.PlainHTTP {
		scheme = "http"
	}
	manifestURL := fmt.Sprintf("%s://%s/v2/%s/manifests/%s", scheme, ref.Registry, ref.Repository, img.ManifestDesc.Digest)
	pr := &schedulerv2.PreheatImageRequest{Url: manifestURL, Scope: "all_seed_peers", Platform: ptr(plat.OS + "/" + plat.Architecture)}
	if n.cfg.Scheduler.PieceLength > 0 {
		pl := uint64(n.cfg.Scheduler.PieceLength)
		pr.PieceLength = &pl
	}
	if o.Username != "" {
		pr.Username, pr.Password = ptr(o.Username), ptr(o.Password)
	}
	var ids []string
	for _, l := range img.Manifest.Layers {
		u := fmt.Sprintf("%s://%s/v2/%s/blobs/%s", scheme, ref.Registry, ref.Repository, l.Digest)
		ids = append(ids, TaskID(u, uint64(n.cfg.Scheduler.PieceLength)))
	}
	// The scheduler runs preheat as a job against the seed peers it knows healthy (it checks
	// announced super seeds every 30 s): a job that found no seed leaves no task behind. Ask again
	// until the layers' tasks exist, then wait for them to succeed.
	const retryAfter = 35 * time.Second
	asked := time.Time{}
	lastDone := -1
	for {
		done, seen := n.seedProgress(ctx, ids)
		if done == len(ids) {
			n.log.Info("preheat done", zap.String("image", req.Ref), zap.Int("layers", len(ids)))
			return nil
		}
		if done != lastDone {
			n.log.Info("preheat progress", zap.String("image", req.Ref), zap.Int("layers_done", done), zap.Int("layers", len(ids)))
			lastDone = done
		}
		if seen == 0 && time.Since(asked) > retryAfter {
			if err := n.sched.PreheatImage(ctx, pr); err != nil {
				return fmt.Errorf("scheduler preheat: %w", err)
			}
			if !asked.IsZero() {
				n.log.Info("preheat asked again: no seed peer took it yet", zap.String("image", req.Ref))
			}
			asked = time.Now()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("preheat %s: %d of %d layers on seed peers: %w", req.Ref, done, len(ids), ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// seedProgress asks every super seed the scheduler knows (its DfdaemonUpload.StatTask) about the
// tasks: done counts the tasks some seed holds completely, seen those some seed has started.
func (n *Node) seedProgress(ctx context.Context, ids []string) (done, seen int) {
	hosts, err := n.sched.ListHosts(ctx)
	if err != nil {
		n.log.Debug("list hosts", zap.Error(err))
		return 0, 0
	}
	for _, id := range ids {
		started, complete := false, false
		for _, h := range hosts {
			if h.GetType() == 0 || complete {
				continue
			}
			cc, done, err := n.conn(h.GetIp(), int(h.GetPort()))
			if err != nil {
				continue
			}
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			t, err := dfdaemonv2.NewDfdaemonUploadClient(cc).StatTask(sctx, &dfdaemonv2.StatTaskRequest{TaskId: id})
			cancel()
			done()
			if err != nil {
				continue
			}
			started = true
			complete = t.GetState() == upload.TaskStateSucceeded
		}
		if started {
			seen++
		}
		if complete {
			done++
		}
	}
	return done, seen
}

func ptr[T any](v T) *T { return &v }
