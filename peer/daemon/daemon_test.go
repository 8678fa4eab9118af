package daemon

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dfnydus/dfnydus/peer"
)

func TestMountListStatUmount(t *testing.T) {
	requireFUSE(t)
	ctx := context.Background()
	cfg := testConfig(t)
	d := newTestDaemon(t, cfg, Options{})
	img := buildTestImage(t, 1)
	mp := newMountpoint(t)

	info, err := d.Mount(ctx, img.request(mp))
	if err != nil {
		t.Fatal(err)
	}
	t.Run("the mount describes itself", func(t *testing.T) {
		want := MountInfo{Mountpoint: mp, Image: img.bootstrap, Source: "local", APISocket: peer.SocketPath(cfg.CacheDir, mp),
			Started: info.Started, P2P: false, Prefetch: "off", FSDriver: "fuse"}
		if !reflect.DeepEqual(info, want) {
			t.Errorf("MountInfo %+v, want %+v", info, want)
		}
	})
	t.Run("files read back as built", func(t *testing.T) { img.checkFiles(t, mp) })
	t.Run("List shows the mount", func(t *testing.T) {
		if got := d.List(); !reflect.DeepEqual(got, []MountInfo{info}) {
			t.Errorf("List() = %+v", got)
		}
	})
	t.Run("Stat counts the reads", func(t *testing.T) {
		st, err := d.Stat(mp)
		if err != nil || len(st) != 1 {
			t.Fatalf("Stat: %v, %d images", err, len(st))
		}
		if s := st[0]; s.Name != img.bootstrap || s.Source != "local" || s.ChunkReads == 0 || s.BytesOnDemand == 0 || s.Prefetch.State != peer.PrefetchIdle {
			t.Errorf("stats %+v", s)
		}
	})
	t.Run("the per-mount API socket answers as before", func(t *testing.T) {
		got, err := peer.QueryStat(ctx, info.APISocket)
		if err != nil || got.Mountpoint != mp || len(got.Images) != 1 || got.PID != os.Getpid() {
			t.Errorf("QueryStat: %+v, %v", got, err)
		}
	})
	t.Run("a second mount of the same mountpoint is refused", func(t *testing.T) {
		if _, err := d.Mount(ctx, img.request(mp)); !errors.Is(err, ErrAlreadyMounted) {
			t.Errorf("second Mount: %v, want ErrAlreadyMounted", err)
		}
		img.checkFiles(t, mp)
	})
	t.Run("Umount releases everything", func(t *testing.T) {
		if err := d.Umount(ctx, mp); err != nil {
			t.Fatal(err)
		}
		assertNothingLeft(t, d, mp)
		if _, err := d.Stat(mp); !errors.Is(err, ErrNotMounted) {
			t.Errorf("Stat after Umount: %v, want ErrNotMounted", err)
		}
		if err := d.Umount(ctx, mp); !errors.Is(err, ErrNotMounted) {
			t.Errorf("second Umount: %v, want ErrNotMounted", err)
		}
	})
	t.Run("the mountpoint can be mounted again", func(t *testing.T) {
		if _, err := d.Mount(ctx, img.request(mp)); err != nil {
			t.Fatal(err)
		}
		img.checkFiles(t, mp)
		if err := d.Umount(ctx, mp); err != nil {
			t.Fatal(err)
		}
	})
}

func TestTwoImagesShareOneStore(t *testing.T) {
	requireFUSE(t)
	ctx := context.Background()
	d := newTestDaemon(t, testConfig(t), Options{})
	a, b := buildTestImage(t, 1), buildTestImage(t, 2)
	mpA, mpB := newMountpoint(t), newMountpoint(t)
	for _, m := range []struct {
		img testImage
		mp  string
	}{{a, mpA}, {b, mpB}} {
		if _, err := d.Mount(ctx, m.img.request(m.mp)); err != nil {
			t.Fatal(err)
		}
	}
	a.checkFiles(t, mpA)
	b.checkFiles(t, mpB)
	if got := d.List(); len(got) != 2 {
		t.Fatalf("List() has %d mounts, want 2", len(got))
	}
	if err := d.Umount(ctx, mpA); err != nil {
		t.Fatal(err)
	}
	b.checkFiles(t, mpB) // the other mount is untouched
	if got := d.List(); len(got) != 1 || got[0].Mountpoint != mpB {
		t.Errorf("List() after one Umount = %+v", got)
	}
}

func TestAFailedMountLeavesNothing(t *testing.T) {
	requireFUSE(t)
	img := buildTestImage(t, 1)
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		req    func(mp string) MountRequest
		setup  func(t *testing.T, cfg *Config, dist *fakeDistributor, cancel context.CancelFunc)
		wantIs error  // sentinel the error wraps, if any
		want   string // substring of the error
	}{
		{name: "relative mountpoint", req: func(string) MountRequest { return img.request("mnt") },
			wantIs: ErrInvalidRequest, want: "absolute"},
		{name: "missing mountpoint", req: func(mp string) MountRequest { return img.request(mp + "-missing") },
			wantIs: ErrInvalidRequest, want: "no such file"},
		{name: "mountpoint is a file", req: func(string) MountRequest { return img.request(file) },
			wantIs: ErrInvalidRequest, want: "not a directory"},
		{name: "local source without a blob dir", req: func(mp string) MountRequest {
			r := img.request(mp)
			r.BlobDir = ""
			return r
		}, wantIs: ErrInvalidRequest, want: "blob dir"},
		{name: "s3 source without a bootstrap", req: func(mp string) MountRequest {
			return MountRequest{Mountpoint: mp, Ref: "s3://bucket/prefix"}
		}, wantIs: ErrInvalidRequest, want: "bootstrap"},
		{name: "bad prefetch mode", req: func(mp string) MountRequest {
			r := img.request(mp)
			r.Prefetch = "some"
			return r
		}, wantIs: ErrInvalidRequest, want: "prefetch"},
		{name: "bad platform", req: func(mp string) MountRequest {
			return MountRequest{Mountpoint: mp, Ref: "127.0.0.1:1/x:v1", Platform: "linux"}
		}, wantIs: ErrInvalidRequest, want: "os/arch"},
		{name: "missing bootstrap", req: func(mp string) MountRequest {
			r := img.request(mp)
			r.Bootstrap += "-missing"
			return r
		}, want: "bootstrap"},
		{name: "the distributor refuses to attach", req: img.request,
			setup: func(t *testing.T, _ *Config, dist *fakeDistributor, _ context.CancelFunc) {
				dist.attachErr = errors.New("scheduler says no")
			}, want: "attach to P2P: scheduler says no"},
		{name: "the caller gives up during attach", req: img.request,
			setup: func(t *testing.T, _ *Config, dist *fakeDistributor, cancel context.CancelFunc) {
				dist.onAttach = cancel
			}, wantIs: context.Canceled},
		{name: "the API socket cannot be made after the FUSE mount", req: img.request,
			setup: func(t *testing.T, cfg *Config, _ *fakeDistributor, _ context.CancelFunc) {
				// cacheDir/run is a file: the per-mount socket's directory cannot exist.
				if err := os.MkdirAll(cfg.CacheDir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(cfg.CacheDir, "run"), nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}, want: "api socket"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			dist := &fakeDistributor{}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tt.setup != nil {
				tt.setup(t, &cfg, dist, cancel)
			}
			d := newTestDaemon(t, cfg, Options{Distributor: dist})
			mp := newMountpoint(t)
			req := tt.req(mp)
			_, err := d.Mount(ctx, req)
			if err == nil {
				t.Fatal("Mount succeeded")
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error %q does not wrap %v", err, tt.wantIs)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
			assertNothingLeft(t, d, req.Mountpoint)
			for i, s := range dist.sources {
				if s.closes.Load() != 1 {
					t.Errorf("attached source %d closed %d times, want 1 (detached)", i, s.closes.Load())
				}
			}
			// The mountpoint is usable afterwards.
			if tt.setup == nil {
				if _, err := d.Mount(context.Background(), img.request(mp)); err != nil {
					t.Fatalf("mount after the failure: %v", err)
				}
				img.checkFiles(t, mp)
			}
		})
	}
}

func TestUnmountFromOutsideIsNoticed(t *testing.T) {
	requireFUSE(t)
	ctx := context.Background()
	dist := &fakeDistributor{}
	d := newTestDaemon(t, testConfig(t), Options{Distributor: dist})
	img := buildTestImage(t, 1)
	mp := newMountpoint(t)
	if _, err := d.Mount(ctx, img.request(mp)); err != nil {
		t.Fatal(err)
	}
	if err := unix.Unmount(mp, 0); err != nil { // what umount(8) does
		t.Fatal(err)
	}
	if err := d.Wait(ctx, mp); err != nil {
		t.Fatal(err)
	}
	assertNothingLeft(t, d, mp)
	if n := dist.sources[0].closes.Load(); n != 1 {
		t.Errorf("the P2P source was closed %d times, want 1", n)
	}
	if err := d.Umount(ctx, mp); !errors.Is(err, ErrNotMounted) {
		t.Errorf("Umount after an outside unmount: %v, want ErrNotMounted", err)
	}
}

func TestDistributorSeesBlobsAndServesReads(t *testing.T) {
	requireFUSE(t)
	ctx := context.Background()
	dist := &fakeDistributor{}
	d := newTestDaemon(t, testConfig(t), Options{Distributor: dist})
	img := buildTestImage(t, 1)
	mp := newMountpoint(t)
	info, err := d.Mount(ctx, img.request(mp))
	if err != nil {
		t.Fatal(err)
	}
	if len(dist.attached) != 1 {
		t.Fatalf("Attach called %d times, want 1", len(dist.attached))
	}
	att := dist.attached[0]
	var want []BlobRef
	for _, id := range img.blobIDs {
		fi, err := os.Stat(filepath.Join(img.blobDir, id))
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, BlobRef{ID: id, Size: fi.Size()}) // no URL: not a registry source
	}
	if !reflect.DeepEqual(att.Blobs, want) {
		t.Errorf("attached blobs %+v, want %+v", att.Blobs, want)
	}
	if att.Name != img.bootstrap || att.RAFS == nil || len(att.RAFS.Blobs) != len(att.Blobs) || att.Source.String() != "local" {
		t.Errorf("attached image %q, %d rafs blobs, source %v", att.Name, len(att.RAFS.Blobs), att.Source)
	}
	if !info.P2P {
		t.Error("MountInfo.P2P is false for a mount attached to the distributor")
	}
	img.checkFiles(t, mp)
	src := dist.sources[0]
	if src.reads.Load() == 0 {
		t.Error("reads did not go through the distributor's source")
	}
	st, err := d.Stat(mp)
	if err != nil || st[0].Source != "p2p" || st[0].BytesFetched == 0 {
		t.Errorf("stats %+v, %v: want source p2p and bytes fetched", st, err)
	}
	if err := d.Umount(ctx, mp); err != nil {
		t.Fatal(err)
	}
	if n := src.closes.Load(); n != 1 {
		t.Errorf("the distributor's source was closed %d times after Umount, want 1", n)
	}
}

func TestPreheat(t *testing.T) {
	ctx := context.Background()
	t.Run("without a distributor it says P2P is not configured", func(t *testing.T) {
		d := newTestDaemon(t, testConfig(t), Options{})
		err := d.Preheat(ctx, PreheatRequest{Ref: "127.0.0.1:5000/a:v1"})
		if !errors.Is(err, ErrNoP2P) || !strings.Contains(err.Error(), "scheduler") {
			t.Errorf("Preheat: %v, want ErrNoP2P naming the scheduler", err)
		}
	})
	t.Run("the distributor gets the request with the config's registry options", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.Registry = RegistryOptions{PlainHTTP: true, DockerConfig: "/etc/docker.json"}
		dist := &fakeDistributor{}
		d := newTestDaemon(t, cfg, Options{Distributor: dist})
		req := PreheatRequest{Ref: "127.0.0.1:5000/a:v1", Platform: "linux/arm64",
			Registry: RegistryOptions{Insecure: true, Username: "u", Password: "p"}}
		if err := d.Preheat(ctx, req); err != nil {
			t.Fatal(err)
		}
		want := req
		want.Registry = RegistryOptions{PlainHTTP: true, Insecure: true, DockerConfig: "/etc/docker.json", Username: "u", Password: "p"}
		if !reflect.DeepEqual(dist.preheats, []PreheatRequest{want}) {
			t.Errorf("distributor got %+v, want %+v", dist.preheats, want)
		}
	})
	t.Run("bad requests", func(t *testing.T) {
		d := newTestDaemon(t, testConfig(t), Options{Distributor: &fakeDistributor{}})
		for _, req := range []PreheatRequest{{}, {Ref: "127.0.0.1:5000/a:v1", Platform: "linux"}} {
			if err := d.Preheat(ctx, req); !errors.Is(err, ErrInvalidRequest) {
				t.Errorf("Preheat(%+v): %v, want ErrInvalidRequest", req, err)
			}
		}
	})
}

func TestCloseUnmountsEverything(t *testing.T) {
	requireFUSE(t)
	ctx := context.Background()
	cfg := testConfig(t)
	d, err := New(ctx, cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	img := buildTestImage(t, 1)
	idle, busy := newMountpoint(t), newMountpoint(t)
	for _, mp := range []string{idle, busy} {
		if _, err := d.Mount(ctx, img.request(mp)); err != nil {
			t.Fatal(err)
		}
	}
	// A process keeps a file open on one mount: a plain unmount fails with EBUSY.
	f, err := os.Open(filepath.Join(busy, "d", "a"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := d.Umount(ctx, busy); !errors.Is(err, unix.EBUSY) {
		t.Fatalf("Umount of a busy mount: %v, want EBUSY", err)
	}
	if got := d.List(); len(got) != 2 {
		t.Fatalf("after a failed Umount List has %d mounts, want 2", len(got))
	}
	img.checkFiles(t, busy) // the busy mount still serves

	closed := make(chan error, 1)
	go func() { closed <- d.Close(ctx) }()
	// Close detaches the busy mount lazily: it leaves the mount table at once, and the daemon lets
	// go of it when its last file is closed.
	for mounted(t, idle) || mounted(t, busy) {
		select {
		case err := <-closed:
			t.Fatalf("Close returned %v with mounts still in the table", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	f.Close()
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	assertNothingLeft(t, d, idle)
	assertNothingLeft(t, d, busy)
	if _, err := d.Mount(ctx, img.request(idle)); !errors.Is(err, ErrClosed) {
		t.Errorf("Mount after Close: %v, want ErrClosed", err)
	}
	if err := d.Close(ctx); err != nil {
		t.Errorf("second Close: %v", err)
	}
	// The store is free again: another daemon can open it.
	d2 := newTestDaemon(t, cfg, Options{})
	if _, err := d2.Mount(ctx, img.request(idle)); err != nil {
		t.Fatal(err)
	}
	img.checkFiles(t, idle)
}

func TestNewFails(t *testing.T) {
	t.Run("an invalid config", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.Prefetch.Mode = "sometimes"
		if _, err := New(context.Background(), cfg, Options{}); err == nil || !strings.Contains(err.Error(), "prefetch.mode") {
			t.Errorf("New: %v, want an error naming prefetch.mode", err)
		}
	})
	t.Run("a store another daemon holds", func(t *testing.T) {
		cfg := testConfig(t)
		newTestDaemon(t, cfg, Options{})
		if _, err := New(context.Background(), cfg, Options{}); err == nil || !strings.Contains(err.Error(), "another dfnydus") {
			t.Errorf("second New on one cache dir: %v", err)
		}
	})
	t.Run("the metrics address is taken", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		cfg := testConfig(t)
		cfg.Metrics.Addr = ln.Addr().String()
		if _, err := New(context.Background(), cfg, Options{}); err == nil || !strings.Contains(err.Error(), "metrics.addr") {
			t.Errorf("New with a taken metrics address: %v", err)
		}
		cfg.Metrics.Addr = ""
		newTestDaemon(t, cfg, Options{}) // the failed New released the store
	})
	t.Run("NewDistributor fails", func(t *testing.T) {
		cfg := testConfig(t)
		_, err := New(context.Background(), cfg, Options{NewDistributor: func(context.Context, *Daemon) (Distributor, error) {
			return nil, errors.New("no scheduler answers")
		}})
		if err == nil || !strings.Contains(err.Error(), "no scheduler answers") {
			t.Errorf("New: %v", err)
		}
		newTestDaemon(t, cfg, Options{})
	})
}

// The mount's own API socket unmounts it when asked (what `dfnydus umount --cache-dir` does for a
// foreground mount): a busy mount refuses and keeps serving, an idle one is unmounted, and the
// request returns once the mount is released, with its start trace written.
func TestUmountThroughTheMountAPI(t *testing.T) {
	requireFUSE(t)
	ctx := context.Background()
	d := newTestDaemon(t, testConfig(t), Options{})
	img := buildTestImage(t, 3)
	mp := newMountpoint(t)
	req := img.request(mp)
	req.RecordTrace = filepath.Join(t.TempDir(), "start.trace")
	info, err := d.Mount(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	img.checkFiles(t, mp)

	busy, err := os.Open(mp)
	if err != nil {
		t.Fatal(err)
	}
	err = peer.RequestUmount(ctx, info.APISocket)
	if err == nil || errors.Is(err, peer.ErrNoMountAPI) || !strings.Contains(err.Error(), "busy") {
		t.Errorf("umount of a busy mount: %v, want a refusal saying it is busy", err)
	}
	img.checkFiles(t, mp)
	busy.Close()

	if err := peer.RequestUmount(ctx, info.APISocket); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(req.RecordTrace); err != nil {
		t.Errorf("the start trace is not written when umount returns: %v", err)
	}
	// The socket goes just before the daemon drops its entry.
	if err := d.Wait(ctx, mp); err != nil {
		t.Fatal(err)
	}
	assertNothingLeft(t, d, mp)
}
