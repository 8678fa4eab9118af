package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// `umount --cache-dir` reaches a foreground mount through its API socket when no daemon answers:
// the mount process refuses while the mount is busy (its message, not umount(8)'s), then
// unmounts, and umount returns once its start trace is written and the process is done with it.
func TestUmountThroughTheCacheDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no /dev/fuse: %v", err)
	}
	src := writeFiles(t, map[string]string{"etc/app.conf": strings.Repeat("setting = value\n", 100)})
	dir, err := os.MkdirTemp("", "dfu-") // unix socket paths hold at most 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	boot, blobs, cache, mp := filepath.Join(dir, "image.boot"), filepath.Join(dir, "blobs"), filepath.Join(dir, "cache"), filepath.Join(dir, "mnt")
	trace, ready, noDaemon := filepath.Join(dir, "start.trace"), filepath.Join(dir, "ready"), filepath.Join(dir, "no-daemon.sock")
	if err := os.Mkdir(mp, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := runCLI(t, "build", "--bootstrap", boot, "--blob-dir", blobs, src); err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() {
		_, err := runCLI(t, "mount", "--foreground", "--daemon-socket", noDaemon, "--cache-dir", cache, "--prefetch", "off",
			"--record-trace", trace, "--ready-file", ready, "--bootstrap", boot, "--blob-dir", blobs, mp)
		served <- err
	}()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		select {
		case err := <-served:
			t.Fatalf("mount ended before serving: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("mount did not serve within a minute")
		}
	}
	t.Cleanup(func() { runCLI(t, "umount", "--daemon-socket", noDaemon, mp) })
	if data, err := os.ReadFile(filepath.Join(mp, "etc/app.conf")); err != nil || len(data) != 1600 {
		t.Fatalf("read through the mount: %d bytes, %v", len(data), err)
	}

	busy, err := os.Open(mp)
	if err != nil {
		t.Fatal(err)
	}
	_, err = runCLI(t, "umount", "--daemon-socket", noDaemon, "--cache-dir", cache, mp)
	if err == nil || !strings.Contains(err.Error(), "(a process has a file open or its working directory there)") {
		t.Errorf("umount of a busy mount: %v, want the mount process's refusal", err)
	}
	busy.Close()

	if _, err := runCLI(t, "umount", "--daemon-socket", noDaemon, "--cache-dir", cache, mp); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(trace); err != nil {
		t.Errorf("the start trace is not written when umount returns: %v", err)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("the foreground mount ended with %v", err)
		}
	case <-time.After(time.Minute):
		t.Error("the foreground mount still runs a minute after umount")
	}
}
