package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/dfnydus/dfnydus/internal/sockutil"
	"github.com/dfnydus/dfnydus/peer"
	controlv1 "github.com/dfnydus/dfnydus/proto/dfnydus/v1"
)

// Serve answers the control API (gRPC) on cfg.ControlSocket, mode 0600, until ctx is done; then it
// stops serving (RPCs still running after a grace period are cancelled) and removes the socket.
// It does not Close the daemon. A socket left by a daemon that died is replaced; one another
// daemon answers on is an error wrapping ErrRunning.
func (d *Daemon) Serve(ctx context.Context) error {
	ln, err := listenControl(d.cfg.ControlSocket)
	if err != nil {
		return err
	}
	gs := grpc.NewServer(grpc.ChainUnaryInterceptor(d.logRPC))
	controlv1.RegisterControlServer(gs, &controlServer{d: d})
	served := make(chan error, 1)
	go func() { served <- gs.Serve(ln) }()
	d.log.Info("control API serving", zap.String("socket", d.cfg.ControlSocket))
	select {
	case err := <-served:
		return fmt.Errorf("control API on %s: %w", d.cfg.ControlSocket, err)
	case <-ctx.Done():
	}
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		gs.Stop() // cancels the RPCs still running (a Mount then undoes itself)
		<-stopped
	}
	<-served
	return nil
}

// listenControl listens on the unix socket at path with mode 0600, replacing a stale socket.
func listenControl(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("control socket dir: %w", err)
	}
	if _, err := os.Lstat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("%w at %s", ErrRunning, path)
		}
	}
	// sockutil.Listen replaces a stale socket atomically and never lets a wider one exist.
	ln, err := sockutil.Listen(path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return ln, nil
}

// logRPC logs each call at debug level and failures at warn.
func (d *Daemon) logRPC(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	t0 := time.Now()
	resp, err := h(ctx, req)
	if err != nil {
		d.log.Warn("control call failed", zap.String("method", info.FullMethod), zap.Error(err))
	} else {
		d.log.Debug("control call", zap.String("method", info.FullMethod), zap.Duration("took", time.Since(t0)))
	}
	return resp, err
}

// controlServer adapts the Daemon to the generated service.
type controlServer struct {
	controlv1.UnimplementedControlServer
	d *Daemon
}

func (s *controlServer) Mount(ctx context.Context, req *controlv1.MountRequest) (*controlv1.MountResponse, error) {
	info, err := s.d.Mount(ctx, mountRequestFromProto(req))
	if err != nil {
		return nil, toStatus(err)
	}
	return &controlv1.MountResponse{Mount: mountToProto(info)}, nil
}

func (s *controlServer) Umount(ctx context.Context, req *controlv1.UmountRequest) (*controlv1.UmountResponse, error) {
	if err := s.d.Umount(ctx, req.GetMountpoint()); err != nil {
		return nil, toStatus(err)
	}
	return &controlv1.UmountResponse{}, nil
}

func (s *controlServer) List(context.Context, *controlv1.ListRequest) (*controlv1.ListResponse, error) {
	resp := &controlv1.ListResponse{}
	for _, m := range s.d.List() {
		resp.Mounts = append(resp.Mounts, mountToProto(m))
	}
	return resp, nil
}

func (s *controlServer) Stat(_ context.Context, req *controlv1.StatRequest) (*controlv1.StatResponse, error) {
	info, err := s.d.Info(req.GetMountpoint())
	if err != nil {
		return nil, toStatus(err)
	}
	stats, err := s.d.Stat(req.GetMountpoint())
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &controlv1.StatResponse{Mountpoint: info.Mountpoint, Pid: int32(os.Getpid()), Started: timestamppb.New(info.Started)}
	for _, st := range stats {
		resp.Images = append(resp.Images, statsToProto(st))
	}
	return resp, nil
}

func (s *controlServer) Preheat(ctx context.Context, req *controlv1.PreheatRequest) (*controlv1.PreheatResponse, error) {
	r := PreheatRequest{Ref: req.GetRef(), Platform: req.GetPlatform()}
	if o := registryFromProto(req.GetRegistry()); o != nil {
		r.Registry = *o
	}
	if err := s.d.Preheat(ctx, r); err != nil {
		return nil, toStatus(err)
	}
	return &controlv1.PreheatResponse{}, nil
}

func (s *controlServer) Version(context.Context, *controlv1.VersionRequest) (*controlv1.VersionResponse, error) {
	v := s.d.Version()
	return &controlv1.VersionResponse{Version: v.Version, Pid: int32(v.PID), Started: timestamppb.New(v.Started),
		CacheDir: v.CacheDir, P2P: v.P2P}, nil
}

// statusCodes maps the package's errors onto gRPC codes; the client maps them back.
var statusCodes = []struct {
	err  error
	code codes.Code
}{
	{ErrInvalidRequest, codes.InvalidArgument},
	{ErrAlreadyMounted, codes.AlreadyExists},
	{ErrNotMounted, codes.NotFound},
	{ErrNoP2P, codes.FailedPrecondition},
	{ErrClosed, codes.Unavailable},
	{context.Canceled, codes.Canceled},
	{context.DeadlineExceeded, codes.DeadlineExceeded},
}

func toStatus(err error) error {
	for _, sc := range statusCodes {
		if errors.Is(err, sc.err) {
			return status.Error(sc.code, err.Error())
		}
	}
	return status.Error(codes.Unknown, err.Error())
}

// fromStatus turns a gRPC error back into an error wrapping the package's sentinel for its code.
func fromStatus(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	for _, sc := range statusCodes {
		if st.Code() == sc.code && sc.code != codes.Unavailable {
			return &remoteError{msg: st.Message(), sentinel: sc.err}
		}
	}
	if st.Code() == codes.Unavailable {
		return &remoteError{msg: st.Message(), sentinel: ErrUnavailable}
	}
	return &remoteError{msg: st.Message()}
}

// ErrUnavailable: no daemon answers on the socket, or it is shutting down.
var ErrUnavailable = errors.New("no dfnydus daemon answers")

// remoteError is an error the daemon returned: its message, and the sentinel its code stands for.
type remoteError struct {
	msg      string
	sentinel error
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.sentinel }

func registryToProto(o *RegistryOptions) *controlv1.RegistryOptions {
	if o == nil {
		return nil
	}
	return &controlv1.RegistryOptions{PlainHttp: o.PlainHTTP, Insecure: o.Insecure, CaFile: o.CAFile,
		DockerConfig: o.DockerConfig, Username: o.Username, Password: o.Password}
}

func registryFromProto(o *controlv1.RegistryOptions) *RegistryOptions {
	if o == nil {
		return nil
	}
	return &RegistryOptions{PlainHTTP: o.GetPlainHttp(), Insecure: o.GetInsecure(), CAFile: o.GetCaFile(),
		DockerConfig: o.GetDockerConfig(), Username: o.GetUsername(), Password: o.GetPassword()}
}

func mountRequestToProto(r MountRequest) *controlv1.MountRequest {
	return &controlv1.MountRequest{Mountpoint: r.Mountpoint, Ref: r.Ref, Bootstrap: r.Bootstrap, BlobDir: r.BlobDir,
		Platform: r.Platform, Prefetch: r.Prefetch, PrefetchRate: r.PrefetchRate, Registry: registryToProto(r.Registry),
		AllowOther: r.AllowOther, FuseDebug: r.FuseDebug, FsDriver: r.FSDriver}
}

func mountRequestFromProto(r *controlv1.MountRequest) MountRequest {
	return MountRequest{Mountpoint: r.GetMountpoint(), Ref: r.GetRef(), Bootstrap: r.GetBootstrap(), BlobDir: r.GetBlobDir(),
		Platform: r.GetPlatform(), Prefetch: r.GetPrefetch(), PrefetchRate: r.GetPrefetchRate(),
		Registry: registryFromProto(r.GetRegistry()), AllowOther: r.GetAllowOther(), FuseDebug: r.GetFuseDebug(),
		FSDriver: r.GetFsDriver()}
}

func mountToProto(m MountInfo) *controlv1.Mount {
	return &controlv1.Mount{Mountpoint: m.Mountpoint, Image: m.Image, Source: m.Source, ApiSocket: m.APISocket,
		Started: timestamppb.New(m.Started), P2P: m.P2P, Prefetch: m.Prefetch, FsDriver: m.FSDriver}
}

func mountFromProto(m *controlv1.Mount) MountInfo {
	return MountInfo{Mountpoint: m.GetMountpoint(), Image: m.GetImage(), Source: m.GetSource(), APISocket: m.GetApiSocket(),
		Started: m.GetStarted().AsTime(), P2P: m.GetP2P(), Prefetch: m.GetPrefetch(), FSDriver: m.GetFsDriver()}
}

func statsToProto(s peer.Stats) *controlv1.ImageStats {
	return &controlv1.ImageStats{Name: s.Name, Source: s.Source, Chunks: int64(s.Chunks), ChunksCached: int64(s.ChunksCached),
		BytesTotal: s.BytesTotal, BytesCached: s.BytesCached, ChunkReads: s.ChunkReads, Fetches: s.Fetches,
		BytesFetched: s.BytesFetched, BytesFetchedOnDemand: s.BytesOnDemand, BytesFetchedByPrefetch: s.BytesPrefetched,
		VerifyFailures: s.VerifyFailures, ReadErrors: s.ReadErrors, StoreRepaired: s.StoreRepairedEver,
		Prefetch: &controlv1.PrefetchStatus{State: s.Prefetch.State, ChunksTotal: int64(s.Prefetch.ChunksTotal),
			ChunksDone: int64(s.Prefetch.ChunksDone), ChunksFailed: int64(s.Prefetch.Failed), LastError: s.Prefetch.Error}}
}

func statsFromProto(s *controlv1.ImageStats) peer.Stats {
	p := s.GetPrefetch()
	return peer.Stats{Name: s.GetName(), Source: s.GetSource(), Chunks: int(s.GetChunks()), ChunksCached: int(s.GetChunksCached()),
		BytesTotal: s.GetBytesTotal(), BytesCached: s.GetBytesCached(), ChunkReads: s.GetChunkReads(), Fetches: s.GetFetches(),
		BytesFetched: s.GetBytesFetched(), BytesOnDemand: s.GetBytesFetchedOnDemand(), BytesPrefetched: s.GetBytesFetchedByPrefetch(),
		VerifyFailures: s.GetVerifyFailures(), ReadErrors: s.GetReadErrors(), StoreRepairedEver: s.GetStoreRepaired(),
		Prefetch: peer.PrefetchStatus{State: p.GetState(), ChunksTotal: int(p.GetChunksTotal()), ChunksDone: int(p.GetChunksDone()),
			Failed: int(p.GetChunksFailed()), Error: p.GetLastError()}}
}
