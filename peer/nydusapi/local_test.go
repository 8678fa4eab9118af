package nydusapi

import (
	"context"
	"encoding/binary"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/dfnydus/dfnydus/kernelfs"
	"github.com/dfnydus/dfnydus/rafs"
)

// fixture is an upstream nydus image (nydus-image 2.2, RAFS v6, zstd + blake3): its bootstrap and,
// in the same directory, its blob named by id.
const fixtureDir = "../../testdata/fixtures/nydus/v6-zstd-blake3"

func requireFUSE(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
}

func localSpec(t *testing.T, mp string, cfg *MountConfig) MountSpec {
	t.Helper()
	return MountSpec{ID: "/", Mountpoint: mp, Bootstrap: filepath.Join(fixtureDir, "rafs-v6-2.2.boot"), Config: cfg}
}

// TestLocalMounterServesAnUpstreamImage mounts the fixture from a localfs backend, reads every file
// through FUSE, and checks the chunks landed in the store under the configured work_dir.
func TestLocalMounterServesAnUpstreamImage(t *testing.T) {
	requireFUSE(t)
	dir := t.TempDir()
	mp := filepath.Join(dir, "mnt")
	m := NewLocalMounter(LocalOptions{})
	cfg := &MountConfig{DeviceID: "/7", CacheDir: filepath.Join(dir, "cache"), Prefetch: PrefetchOff,
		Backend: Backend{Type: BackendLocalfs, Dir: fixtureDir}}
	h, err := m.Mount(context.Background(), localSpec(t, mp, cfg))
	if err != nil {
		t.Fatal(err)
	}
	var files int
	err = filepath.WalkDir(mp, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		files++
		_, err = os.ReadFile(p)
		return err
	})
	if err != nil {
		t.Errorf("reading the mounted image: %v", err)
	}
	st := h.Stats()
	if files == 0 || st.ChunkReads == 0 || st.Errors != 0 || st.StorePath != filepath.Join(dir, "cache", "dfnydus-store", "7") {
		t.Errorf("after reading %d files: %+v", files, st)
	}
	if err := m.Unmount(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	<-h.Done()
	var sfs unix.Statfs_t
	if err := unix.Statfs(mp, &sfs); err != nil || sfs.Type == 0x65735546 { // FUSE_SUPER_MAGIC
		t.Errorf("%s still a FUSE mount after Unmount (statfs %v)", mp, err)
	}
}

// TestLocalMounterRejectsBadInput: each failure happens before anything is mounted.
func TestLocalMounterRejectsBadInput(t *testing.T) {
	requireFUSE(t)
	dir := t.TempDir()
	notRAFS := filepath.Join(dir, "not.boot")
	if err := os.WriteFile(notRAFS, make([]byte, 8192), 0o644); err != nil {
		t.Fatal(err)
	}
	// The upstream fixture with the zran bit set in its blob table entry (features at byte 84 of
	// the 256-byte entry, the table at the u64 at byte 8 of the extended superblock at 1152).
	zran := filepath.Join(dir, "zran.boot")
	boot, err := os.ReadFile(filepath.Join(fixtureDir, "rafs-v6-2.2.boot"))
	if err != nil {
		t.Fatal(err)
	}
	feat := binary.LittleEndian.Uint64(boot[1152+8:]) + 84
	binary.LittleEndian.PutUint32(boot[feat:], binary.LittleEndian.Uint32(boot[feat:])|rafs.BlobFeatureZran)
	if err := os.WriteFile(zran, boot, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		spec    func(mp string) MountSpec
		wantErr error
	}{
		{"blob using zran", func(mp string) MountSpec {
			s := localSpec(t, mp, &MountConfig{Backend: Backend{Type: BackendLocalfs, Dir: fixtureDir}})
			s.Bootstrap = zran
			return s
		}, rafs.ErrUnsupportedFeature},
		{"bootstrap that is not RAFS", func(mp string) MountSpec {
			s := localSpec(t, mp, &MountConfig{Backend: Backend{Type: BackendLocalfs, Dir: fixtureDir}})
			s.Bootstrap = notRAFS
			return s
		}, ErrNotRAFS},
		{"blob missing from the localfs dir", func(mp string) MountSpec {
			return localSpec(t, mp, &MountConfig{Backend: Backend{Type: BackendLocalfs, Dir: dir}})
		}, os.ErrNotExist},
		{"unsupported backend", func(mp string) MountSpec {
			return localSpec(t, mp, &MountConfig{Backend: Backend{Type: "oss"}})
		}, ErrUnsupported},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mp := filepath.Join(dir, "mnt", string(rune('a'+i)))
			_, err := NewLocalMounter(LocalOptions{CacheDir: filepath.Join(dir, "cache")}).Mount(context.Background(), tc.spec(mp))
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			var sfs unix.Statfs_t
			if err := unix.Statfs(mp, &sfs); err == nil && sfs.Type == 0x65735546 {
				t.Errorf("%s left mounted", mp)
			}
		})
	}
}

// TestPrepareMountpointClearsAStaleMount: a daemon killed with SIGKILL leaves a FUSE mount whose
// reads fail with ENOTCONN; the restarted daemon must be able to mount there again.
func TestPrepareMountpointClearsAStaleMount(t *testing.T) {
	requireFUSE(t)
	dir := t.TempDir()
	mp := filepath.Join(dir, "mnt")
	m := NewLocalMounter(LocalOptions{})
	cfg := &MountConfig{CacheDir: filepath.Join(dir, "cache"), Prefetch: PrefetchOff, Backend: Backend{Type: BackendLocalfs, Dir: fixtureDir}}
	h, err := m.Mount(context.Background(), localSpec(t, mp, cfg))
	if err != nil {
		t.Fatal(err)
	}
	// Abort the FUSE connection as the kernel does when the daemon dies: the mount stays, dead.
	lh := h.(*localHandle)
	var st unix.Stat_t
	if err := unix.Stat(mp, &st); err != nil {
		t.Fatal(err)
	}
	const fusectl = "/sys/fs/fuse/connections"
	if _, err := os.Stat(filepath.Join(fusectl, "abort")); err != nil {
		if ents, _ := os.ReadDir(fusectl); len(ents) == 0 {
			// fusectl is not mounted here: mount it for the test and take it away after.
			if err := unix.Mount("fusectl", fusectl, "fusectl", 0, ""); err == nil {
				t.Cleanup(func() { _ = unix.Unmount(fusectl, 0) })
			}
		}
	}
	abort := filepath.Join(fusectl, strconv.FormatUint(uint64(unix.Minor(st.Dev)), 10), "abort")
	if err := os.WriteFile(abort, []byte("1"), 0o200); err != nil {
		_ = m.Unmount(context.Background(), lh)
		t.Skipf("cannot abort the FUSE connection (%v)", err)
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(mp, &sfs); !errors.Is(err, unix.ENOTCONN) && !errors.Is(err, unix.ECONNABORTED) {
		_ = unix.Unmount(mp, unix.MNT_DETACH)
		t.Fatalf("statfs of the aborted mount: %v, want ENOTCONN", err)
	}
	h2, err := m.Mount(context.Background(), localSpec(t, mp, cfg))
	if err != nil {
		t.Fatalf("mount over the stale mount: %v", err)
	}
	defer func() { _ = unix.Unmount(mp, unix.MNT_DETACH) }() // only if the test failed
	if err := m.Unmount(context.Background(), h2); err != nil {
		t.Fatal(err)
	}
	if err := unix.Statfs(mp, &sfs); err != nil || sfs.Type == 0x65735546 {
		t.Errorf("after the second Unmount %s is still a FUSE mount or broken: %v", mp, err)
	}
}

// TestLocalMounterKernelMode: with FSDriver erofs the fixture (RAFS v6) is mounted by the kernel's
// EROFS, reads through the views land in the store, and Unmount takes away the EROFS mount, the
// view mount and the work directory; an outside unmount of the EROFS mount ends the handle as an
// outside unmount of a FUSE mount does.
func TestLocalMounterKernelMode(t *testing.T) {
	requireFUSE(t)
	if err := kernelfs.Supported(); err != nil {
		t.Skip(err)
	}
	dir := t.TempDir()
	mp := filepath.Join(dir, "mnt")
	m := NewLocalMounter(LocalOptions{FSDriver: "erofs"})
	cfg := &MountConfig{DeviceID: "/9", CacheDir: filepath.Join(dir, "cache"), Prefetch: PrefetchOff,
		Backend: Backend{Type: BackendLocalfs, Dir: fixtureDir}}
	mountRead := func() Handle {
		t.Helper()
		h, err := m.Mount(context.Background(), localSpec(t, mp, cfg))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = unix.Unmount(mp, unix.MNT_DETACH) }) // only if the test failed
		if d := h.(*localHandle).FSDriver(); d != "erofs" {
			t.Errorf("driver %q, want erofs", d)
		}
		var sfs unix.Statfs_t
		if err := unix.Statfs(mp, &sfs); err != nil || sfs.Type != unix.EROFS_SUPER_MAGIC_V1 {
			t.Errorf("%s is not an EROFS mount (statfs %v, type %#x)", mp, err, sfs.Type)
		}
		files := 0
		err = filepath.WalkDir(mp, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return err
			}
			files++
			_, err = os.ReadFile(p)
			return err
		})
		if err != nil {
			t.Errorf("reading the mounted image: %v", err)
		}
		if st := h.Stats(); files == 0 || st.ChunkReads == 0 || st.Errors != 0 {
			t.Errorf("after reading %d files: %+v", files, st)
		}
		return h
	}
	leftovers := func(when string) {
		t.Helper()
		if ms := mountsUnderDir(t, dir); len(ms) != 0 {
			t.Errorf("%s: mounts left under the test dir: %q", when, ms)
		}
		if ents, _ := os.ReadDir(filepath.Join(dir, "cache", "dfnydus-kernel", "9")); len(ents) != 0 {
			t.Errorf("%s: kernel-mode work dirs left: %d", when, len(ents))
		}
	}

	h := mountRead()
	if err := m.Unmount(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	<-h.Done()
	leftovers("after Unmount")

	h = mountRead()
	if err := unix.Unmount(mp, 0); err != nil {
		t.Fatal(err)
	}
	<-h.Done()
	leftovers("after an outside unmount")
}

// mountsUnderDir lists the mount points at or under dir in this process's mount table.
func mountsUnderDir(t *testing.T, dir string) []string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		if f := strings.Fields(l); len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			out = append(out, f[4])
		}
	}
	return out
}
