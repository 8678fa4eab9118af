package daemon

import (
	"context"
	"fmt"
	"path/filepath"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/dfnydus/dfnydus/peer"
	controlv1 "github.com/dfnydus/dfnydus/proto/dfnydus/v1"
)

// Client talks to a daemon's control API. Its errors wrap the package's sentinels (ErrNotMounted,
// ErrAlreadyMounted, ErrInvalidRequest, ErrNoP2P) for the daemon's answers, and ErrUnavailable
// when no daemon answers (or it is shutting down).
type Client struct {
	conn   *grpc.ClientConn
	c      controlv1.ControlClient
	socket string
}

// Dial returns a client of the daemon at the unix socket path. It does not connect yet: the first
// call does, and fails with ErrUnavailable if nothing answers.
func Dial(socket string) (*Client, error) {
	abs, err := filepath.Abs(socket)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", socket, err)
	}
	conn, err := grpc.NewClient("unix://"+abs, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", socket, err)
	}
	return &Client{conn: conn, c: controlv1.NewControlClient(conn), socket: abs}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Socket is the daemon's control socket.
func (c *Client) Socket() string { return c.socket }

// Version asks which daemon answers; it is the cheap "is a daemon there?" probe.
func (c *Client) Version(ctx context.Context) (VersionInfo, error) {
	r, err := c.c.Version(ctx, &controlv1.VersionRequest{})
	if err != nil {
		return VersionInfo{}, c.wrap(err)
	}
	return VersionInfo{Version: r.GetVersion(), PID: int(r.GetPid()), Started: r.GetStarted().AsTime(),
		CacheDir: r.GetCacheDir(), P2P: r.GetP2P()}, nil
}

// Mount asks the daemon to mount; it returns once the mount serves.
func (c *Client) Mount(ctx context.Context, req MountRequest) (MountInfo, error) {
	r, err := c.c.Mount(ctx, mountRequestToProto(req))
	if err != nil {
		return MountInfo{}, c.wrap(err)
	}
	return mountFromProto(r.GetMount()), nil
}

// Umount asks the daemon to unmount mountpoint; it returns once the mount is released.
func (c *Client) Umount(ctx context.Context, mountpoint string) error {
	_, err := c.c.Umount(ctx, &controlv1.UmountRequest{Mountpoint: mountpoint})
	return c.wrap(err)
}

// List returns the daemon's mounts, ordered by mountpoint.
func (c *Client) List(ctx context.Context) ([]MountInfo, error) {
	r, err := c.c.List(ctx, &controlv1.ListRequest{})
	if err != nil {
		return nil, c.wrap(err)
	}
	out := make([]MountInfo, 0, len(r.GetMounts()))
	for _, m := range r.GetMounts() {
		out = append(out, mountFromProto(m))
	}
	return out, nil
}

// Stat returns a mount's progress in the shape of the per-mount API's /api/v1/stat.
func (c *Client) Stat(ctx context.Context, mountpoint string) (*peer.MountInfo, error) {
	r, err := c.c.Stat(ctx, &controlv1.StatRequest{Mountpoint: mountpoint})
	if err != nil {
		return nil, c.wrap(err)
	}
	info := &peer.MountInfo{Mountpoint: r.GetMountpoint(), PID: int(r.GetPid()), Started: r.GetStarted().AsTime()}
	for _, s := range r.GetImages() {
		info.Images = append(info.Images, statsFromProto(s))
	}
	return info, nil
}

// Preheat asks the daemon to preheat an image through P2P.
func (c *Client) Preheat(ctx context.Context, req PreheatRequest) error {
	_, err := c.c.Preheat(ctx, &controlv1.PreheatRequest{Ref: req.Ref, Platform: req.Platform, Registry: registryToProto(&req.Registry)})
	return c.wrap(err)
}

func (c *Client) wrap(err error) error {
	if err == nil {
		return nil
	}
	err = fromStatus(err)
	return fmt.Errorf("dfnydus daemon at %s: %w", c.socket, err)
}
