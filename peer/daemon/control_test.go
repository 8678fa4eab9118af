package daemon

import (
	"context"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/dfnydus/dfnydus/peer"
)

// serve runs d's control API until the test ends and returns a client of it.
func serve(t *testing.T, d *Daemon) *Client {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- d.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	waitSocket(t, d.cfg.ControlSocket, served)
	c, err := Dial(d.cfg.ControlSocket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitSocket waits until Serve listens at path (a unix socket is there) or returns.
func waitSocket(t *testing.T, path string, served chan error) {
	t.Helper()
	for {
		if fi, err := os.Stat(path); err == nil && fi.Mode().Type() == os.ModeSocket {
			return
		}
		select {
		case err := <-served:
			t.Fatalf("Serve returned %v", err)
		case <-time.After(time.Millisecond):
		}
	}
}

func TestControlAPIRoundTrip(t *testing.T) {
	requireFUSE(t)
	ctx := context.Background()
	cfg := testConfig(t)
	dist := &fakeDistributor{}
	d := newTestDaemon(t, cfg, Options{Distributor: dist, Version: "v1.2.3"})
	c := serve(t, d)
	img := buildTestImage(t, 1)
	mp := newMountpoint(t)

	t.Run("the socket is private", func(t *testing.T) {
		fi, err := os.Stat(cfg.ControlSocket)
		if err != nil || fi.Mode().Perm() != 0o600 || fi.Mode().Type() != os.ModeSocket {
			t.Errorf("control socket: %v, %v", fi.Mode(), err)
		}
	})
	t.Run("Version", func(t *testing.T) {
		v, err := c.Version(ctx)
		want := VersionInfo{Version: "v1.2.3", PID: os.Getpid(), Started: d.started.UTC(), CacheDir: cfg.CacheDir, P2P: true}
		if err != nil || !reflect.DeepEqual(v, want) {
			t.Errorf("Version = %+v, %v; want %+v", v, err, want)
		}
	})
	var info MountInfo
	t.Run("Mount", func(t *testing.T) {
		req := img.request(mp)
		req.Registry = &RegistryOptions{Insecure: true} // travels, unused by a local source
		req.AllowOther = true
		var err error
		if info, err = c.Mount(ctx, req); err != nil {
			t.Fatal(err)
		}
		local, _ := d.Info(mp)
		local.Started = local.Started.UTC()
		if !reflect.DeepEqual(info, local) {
			t.Errorf("Mount returned %+v, the daemon has %+v", info, local)
		}
		img.checkFiles(t, mp)
	})
	t.Run("List", func(t *testing.T) {
		got, err := c.List(ctx)
		if err != nil || !reflect.DeepEqual(got, []MountInfo{info}) {
			t.Errorf("List = %+v, %v; want [%+v]", got, err, info)
		}
	})
	t.Run("Stat", func(t *testing.T) {
		got, err := c.Stat(ctx, mp)
		if err != nil {
			t.Fatal(err)
		}
		local, err := peer.QueryStat(ctx, info.APISocket)
		if err != nil {
			t.Fatal(err)
		}
		// Both read the same counters. Started is the mount's over the control API, the socket's
		// (made moments before) over the per-mount API.
		if !got.Started.Equal(info.Started) {
			t.Errorf("started %v, the mount started %v", got.Started, info.Started)
		}
		local.Started = got.Started
		if !reflect.DeepEqual(got, local) {
			t.Errorf("Stat over the control API %+v\nper-mount API %+v", got, local)
		}
		if got.Images[0].ChunkReads == 0 || got.Images[0].Prefetch.State != peer.PrefetchIdle {
			t.Errorf("stats %+v", got.Images[0])
		}
	})
	t.Run("Preheat", func(t *testing.T) {
		req := PreheatRequest{Ref: "127.0.0.1:5000/a:v1", Platform: "linux/amd64", Registry: RegistryOptions{PlainHTTP: true}}
		if err := c.Preheat(ctx, req); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(dist.preheats, []PreheatRequest{req}) {
			t.Errorf("the distributor got %+v", dist.preheats)
		}
	})
	t.Run("Umount", func(t *testing.T) {
		if err := c.Umount(ctx, mp); err != nil {
			t.Fatal(err)
		}
		assertNothingLeft(t, d, mp)
	})
	t.Run("errors keep their meaning across the socket", func(t *testing.T) {
		bad := img.request(mp)
		bad.Prefetch = "sometimes"
		tests := []struct {
			name string
			call func() error
			want error
		}{
			{"Umount of nothing", func() error { return c.Umount(ctx, mp) }, ErrNotMounted},
			{"Stat of nothing", func() error { _, err := c.Stat(ctx, mp); return err }, ErrNotMounted},
			{"Mount of a bad request", func() error { _, err := c.Mount(ctx, bad); return err }, ErrInvalidRequest},
			{"Preheat without a reference", func() error { return c.Preheat(ctx, PreheatRequest{}) }, ErrInvalidRequest},
		}
		for _, tt := range tests {
			if err := tt.call(); !errors.Is(err, tt.want) {
				t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
			}
		}
		if _, err := c.Mount(ctx, img.request(mp)); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Mount(ctx, img.request(mp)); !errors.Is(err, ErrAlreadyMounted) {
			t.Errorf("second Mount: %v, want ErrAlreadyMounted", err)
		}
	})
}

func TestControlAPIWithoutP2P(t *testing.T) {
	d := newTestDaemon(t, testConfig(t), Options{})
	c := serve(t, d)
	err := c.Preheat(context.Background(), PreheatRequest{Ref: "127.0.0.1:5000/a:v1"})
	if !errors.Is(err, ErrNoP2P) || !strings.Contains(err.Error(), "no scheduler is configured") {
		t.Errorf("Preheat: %v, want ErrNoP2P saying no scheduler is configured", err)
	}
	if v, err := c.Version(context.Background()); err != nil || v.P2P {
		t.Errorf("Version = %+v, %v; want P2P false", v, err)
	}
}

func TestControlSocket(t *testing.T) {
	t.Run("no daemon answers", func(t *testing.T) {
		c, err := Dial(testConfig(t).ControlSocket)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Version(context.Background()); !errors.Is(err, ErrUnavailable) {
			t.Errorf("Version with no daemon: %v, want ErrUnavailable", err)
		}
	})
	t.Run("a second daemon on the socket is refused", func(t *testing.T) {
		cfg := testConfig(t)
		serve(t, newTestDaemon(t, cfg, Options{}))
		other := testConfig(t)
		other.ControlSocket = cfg.ControlSocket
		err := newTestDaemon(t, other, Options{}).Serve(context.Background())
		if !errors.Is(err, ErrRunning) {
			t.Errorf("second Serve: %v, want ErrRunning", err)
		}
	})
	t.Run("a stale socket is replaced and removed when serving stops", func(t *testing.T) {
		cfg := testConfig(t)
		if err := os.WriteFile(cfg.ControlSocket, nil, 0o644); err != nil { // as left by a killed daemon
			t.Fatal(err)
		}
		d := newTestDaemon(t, cfg, Options{})
		ctx, cancel := context.WithCancel(context.Background())
		served := make(chan error, 1)
		go func() { served <- d.Serve(ctx) }()
		waitSocket(t, cfg.ControlSocket, served)
		c, err := Dial(cfg.ControlSocket)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Version(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
		if err := <-served; err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(cfg.ControlSocket); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("control socket after Serve returned: %v", err)
		}
	})
}
