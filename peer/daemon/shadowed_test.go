package daemon

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestMountAgainOverAMountUnmountedWhileInUse: nydus-snapshotter unmounts a killed nydusd's
// mountpoint while containers' overlays still use it (an overlay keeps a private clone of its
// lower layers, so umount succeeds and the FUSE mount lives on, out of sight). The daemon must then
// mount the mountpoint anew, and keep serving the overlay from the old mount until it goes.
func TestMountAgainOverAMountUnmountedWhileInUse(t *testing.T) {
	requireFUSE(t)
	ctx := context.Background()
	d := newTestDaemon(t, testConfig(t), Options{})
	img := buildTestImage(t, 3)
	mp := newMountpoint(t)
	first, err := d.Mount(ctx, img.request(mp))
	if err != nil {
		t.Fatal(err)
	}
	ovl := filepath.Join(t.TempDir(), "ovl")
	for _, dir := range []string{ovl + "/upper", ovl + "/work", ovl + "/merged"} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mount("overlay", ovl+"/merged", "overlay", 0,
		"lowerdir="+mp+",upperdir="+ovl+"/upper,workdir="+ovl+"/work"); err != nil {
		t.Skipf("no overlayfs over FUSE here: %v", err)
	}
	defer unix.Unmount(ovl+"/merged", unix.MNT_DETACH)
	if err := unix.Unmount(mp, 0); err != nil {
		t.Fatalf("umount of the FUSE mount under an overlay: %v (want it to succeed, as the snapshotter's does)", err)
	}

	t.Run("the mountpoint is mounted anew", func(t *testing.T) {
		second, err := d.Mount(ctx, img.request(mp))
		if err != nil {
			t.Fatal(err)
		}
		if second.Started.Equal(first.Started) {
			t.Error("Mount returned the old mount")
		}
		img.checkFiles(t, mp)
		if ms := d.List(); len(ms) != 1 || !ms[0].Started.Equal(second.Started) {
			t.Errorf("List: %+v, want only the new mount", ms)
		}
	})
	t.Run("the overlay is still served by the old mount", func(t *testing.T) {
		img.checkFiles(t, ovl+"/merged")
	})
	t.Run("Umount removes the new mount; the old one goes with the overlay", func(t *testing.T) {
		if err := d.Umount(ctx, mp); err != nil {
			t.Fatal(err)
		}
		if err := unix.Unmount(ovl+"/merged", 0); err != nil {
			t.Fatal(err)
		}
		assertNothingLeft(t, d, mp)
	})
}
