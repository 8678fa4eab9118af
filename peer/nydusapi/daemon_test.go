package nydusapi

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"

	"github.com/dfnydus/dfnydus/kernelfs"
	"github.com/dfnydus/dfnydus/peer/daemon"
)

// runDaemon starts a real dfnydus daemon serving its control API in this process and returns it
// and its control socket; it goes away when the test ends.
func runDaemon(t *testing.T) (*daemon.Daemon, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "dfn-") // short: unix socket paths
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := daemon.DefaultConfig()
	cfg.CacheDir, cfg.ControlSocket = filepath.Join(dir, "cache"), filepath.Join(dir, "control.sock")
	d, err := daemon.New(context.Background(), cfg, daemon.Options{Log: zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- d.Serve(ctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
		if err := d.Close(context.Background()); err != nil {
			t.Errorf("close daemon: %v", err)
		}
	})
	c, err := daemon.Dial(cfg.ControlSocket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for {
		if _, err := c.Version(context.Background()); err == nil {
			break
		} else if !errors.Is(err, daemon.ErrUnavailable) {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return d, cfg.ControlSocket
}

// newDaemonMounter is a DaemonMounter with its own client of the daemon at socket, as each nydusd
// process has; it is closed when the test ends.
func newDaemonMounter(t *testing.T, socket string, opts DaemonOptions) *DaemonMounter {
	t.Helper()
	c, err := daemon.Dial(socket)
	if err != nil {
		t.Fatal(err)
	}
	m := NewDaemonMounter(c, opts)
	t.Cleanup(func() { m.Close() })
	return m
}

func absFixture(t *testing.T, elem ...string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join(append([]string{fixtureDir}, elem...)...))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func fixtureSpec(t *testing.T, mp string) MountSpec {
	t.Helper()
	return MountSpec{ID: "/", Mountpoint: mp, Bootstrap: absFixture(t, "rafs-v6-2.2.boot"),
		Config: &MountConfig{Prefetch: PrefetchOff, Backend: Backend{Type: BackendLocalfs, Dir: absFixture(t)}}}
}

func readAll(t *testing.T, mp string) int {
	t.Helper()
	var files int
	err := filepath.WalkDir(mp, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		files++
		_, err = os.ReadFile(p)
		return err
	})
	if err != nil || files == 0 {
		t.Fatalf("reading %d files of the mounted image: %v", files, err)
	}
	return files
}

func isFUSE(mp string) bool {
	var sfs unix.Statfs_t
	return unix.Statfs(mp, &sfs) == nil && sfs.Type == 0x65735546 // FUSE_SUPER_MAGIC
}

func TestDaemonRequest(t *testing.T) {
	tests := []struct {
		name        string
		spec        MountSpec
		want        daemon.MountRequest
		wantIgnored int
		wantErr     error
	}{
		{name: "registry backend: the repository, its scheme and credentials",
			spec: MountSpec{Mountpoint: "/m", Bootstrap: "/b/image.boot", Config: &MountConfig{Prefetch: PrefetchAll, PrefetchRate: 1 << 20,
				Backend: Backend{Type: BackendRegistry, Host: "reg:5000", Repo: "lib/app", PlainHTTP: true, SkipVerify: true, Username: "u", Password: "p"}}},
			want: daemon.MountRequest{Mountpoint: "/m", Ref: "reg:5000/lib/app", Bootstrap: "/b/image.boot", Prefetch: PrefetchAll, PrefetchRate: 1 << 20,
				Registry: &daemon.RegistryOptions{PlainHTTP: true, Insecure: true, Username: "u", Password: "p"}, AllowOther: true}},
		{name: "localfs backend: bootstrap and blob dir; bandwidth_rate 0 is unlimited",
			spec: MountSpec{Mountpoint: "/m", Bootstrap: "/b/image.boot", Config: &MountConfig{Prefetch: PrefetchOff, Backend: Backend{Type: BackendLocalfs, Dir: "/blobs"}}},
			want: daemon.MountRequest{Mountpoint: "/m", Bootstrap: "/b/image.boot", BlobDir: "/blobs", Prefetch: PrefetchOff, PrefetchRate: -1, AllowOther: true}},
		{name: "settings the daemon governs are named",
			spec: MountSpec{Mountpoint: "/m", Bootstrap: "/b", PrefetchFiles: []string{"/x"}, Config: &MountConfig{Prefetch: PrefetchFiles, DigestValidate: true,
				Backend: Backend{Type: BackendRegistry, Host: "h", Repo: "r", Timeout: time.Second, Retries: 2}}},
			want: daemon.MountRequest{Mountpoint: "/m", Ref: "h/r", Bootstrap: "/b", Prefetch: PrefetchFiles, PrefetchRate: -1,
				Registry: &daemon.RegistryOptions{}, AllowOther: true}, wantIgnored: 3},
		{name: "other backends are not supported",
			spec: MountSpec{Mountpoint: "/m", Bootstrap: "/b", Config: &MountConfig{Backend: Backend{Type: "oss"}}}, wantErr: ErrUnsupported},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ignored, err := DaemonRequest(tt.spec, DaemonOptions{AllowOther: true})
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("request %+v (registry %+v)\nwant    %+v (registry %+v)", got, got.Registry, tt.want, tt.want.Registry)
			}
			if len(ignored) != tt.wantIgnored {
				t.Errorf("ignored %q, want %d entries", ignored, tt.wantIgnored)
			}
		})
	}
}

// TestDaemonMounterMountsThroughTheDaemon: the daemon serves the mount, this side reports its
// stats, and Unmount removes it from the daemon.
func TestDaemonMounterMountsThroughTheDaemon(t *testing.T) {
	requireFUSE(t)
	ctx := context.Background()
	d, sock := runDaemon(t)
	m := newDaemonMounter(t, sock, DaemonOptions{PollInterval: 10 * time.Millisecond})
	mp := filepath.Join(t.TempDir(), "snap", "mnt") // created by the mounter
	h, err := m.Mount(ctx, fixtureSpec(t, mp))
	if err != nil {
		t.Fatal(err)
	}
	if ms := d.List(); len(ms) != 1 || ms[0].Mountpoint != mp {
		t.Fatalf("daemon mounts %+v, want one at %s", ms, mp)
	}
	readAll(t, mp)
	if st := h.Stats(); st.ChunkReads == 0 || st.Errors != 0 || st.StorePath != filepath.Join(d.Config().CacheDir, "store") {
		t.Errorf("stats after reading: %+v", st)
	}
	if err := m.Unmount(ctx, h); err != nil {
		t.Fatal(err)
	}
	<-h.Done()
	if ms := d.List(); len(ms) != 0 || isFUSE(mp) {
		t.Errorf("after Unmount the daemon lists %+v (still FUSE: %v)", ms, isFUSE(mp))
	}
}

// TestDaemonMounterPassesTheFSDriver: with FSDriver erofs the daemon (whose own fsDriver is fuse)
// mounts the v6 fixture with the kernel's EROFS, and Unmount takes its mounts away.
func TestDaemonMounterPassesTheFSDriver(t *testing.T) {
	requireFUSE(t)
	if err := kernelfs.Supported(); err != nil {
		t.Skip(err)
	}
	ctx := context.Background()
	d, sock := runDaemon(t)
	m := newDaemonMounter(t, sock, DaemonOptions{PollInterval: 10 * time.Millisecond, FSDriver: daemon.FSDriverEROFS})
	dir := t.TempDir()
	mp := filepath.Join(dir, "snap", "mnt")
	h, err := m.Mount(ctx, fixtureSpec(t, mp))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(mp, unix.MNT_DETACH) }) // only if the test failed
	if ms := d.List(); len(ms) != 1 || ms[0].FSDriver != daemon.FSDriverEROFS {
		t.Fatalf("daemon mounts %+v, want one with fs driver erofs", ms)
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(mp, &sfs); err != nil || sfs.Type != unix.EROFS_SUPER_MAGIC_V1 {
		t.Errorf("%s is not an EROFS mount (statfs %v, type %#x)", mp, err, sfs.Type)
	}
	readAll(t, mp)
	if err := m.Unmount(ctx, h); err != nil {
		t.Fatal(err)
	}
	<-h.Done()
	if ms := d.List(); len(ms) != 0 {
		t.Errorf("after Unmount the daemon lists %+v", ms)
	}
	if err := unix.Statfs(mp, &sfs); err != nil || sfs.Type == unix.EROFS_SUPER_MAGIC_V1 {
		t.Errorf("after Unmount %s is still EROFS or broken (statfs %v)", mp, err)
	}
}

// TestDaemonMounterAdoptsTheMountOfAKilledFront: a nydusd killed with SIGKILL never unmounts; its
// successor finds the daemon serving the same image there and adopts it; another image is refused.
func TestDaemonMounterAdoptsTheMountOfAKilledFront(t *testing.T) {
	requireFUSE(t)
	ctx := context.Background()
	_, sock := runDaemon(t)
	mp := filepath.Join(t.TempDir(), "mnt")
	first := newDaemonMounter(t, sock, DaemonOptions{})
	h1, err := first.Mount(ctx, fixtureSpec(t, mp))
	if err != nil {
		t.Fatal(err)
	}
	started := h1.(*daemonHandle).info.Started

	other := fixtureSpec(t, mp)
	other.Bootstrap = filepath.Join(absFixture(t), "..", "v5-repeatable", "sha256-nocompress-repeatable")
	other.Config.Backend.Dir = filepath.Join(absFixture(t), "..", "v5-repeatable", "blobs")
	tests := []struct {
		name    string
		spec    MountSpec
		wantErr error
	}{
		{name: "the same image is adopted", spec: fixtureSpec(t, mp)},
		{name: "another image at the mountpoint is refused", spec: other, wantErr: daemon.ErrAlreadyMounted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			next := newDaemonMounter(t, sock, DaemonOptions{})
			h, err := next.Mount(ctx, tt.spec)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := h.(*daemonHandle).info.Started; !got.Equal(started) {
				t.Errorf("adopted a mount started at %v, want the first one (%v)", got, started)
			}
			readAll(t, mp)
		})
	}
	if err := first.Unmount(ctx, h1); err != nil {
		t.Fatal(err)
	}
}

// TestDaemonMounterNoticesTheMountGo: Done closes when the daemon stops serving the mount, however
// that happens.
func TestDaemonMounterNoticesTheMountGo(t *testing.T) {
	requireFUSE(t)
	tests := []struct {
		name   string
		remove func(t *testing.T, d *daemon.Daemon, mp string)
	}{
		{name: "unmounted through the daemon", remove: func(t *testing.T, d *daemon.Daemon, mp string) {
			if err := d.Umount(context.Background(), mp); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "unmounted from outside", remove: func(t *testing.T, _ *daemon.Daemon, mp string) {
			if err := unix.Unmount(mp, 0); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "the daemon stops", remove: func(t *testing.T, d *daemon.Daemon, _ string) {
			if err := d.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, sock := runDaemon(t)
			m := newDaemonMounter(t, sock, DaemonOptions{PollInterval: 10 * time.Millisecond})
			mp := filepath.Join(t.TempDir(), "mnt")
			h, err := m.Mount(context.Background(), fixtureSpec(t, mp))
			if err != nil {
				t.Fatal(err)
			}
			tt.remove(t, d, mp)
			<-h.Done()
			if err := m.Unmount(context.Background(), h); err != nil {
				t.Errorf("Unmount of a mount already gone: %v", err)
			}
		})
	}
}
