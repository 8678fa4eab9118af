package sockutil

import (
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// withUmask runs the test body under umask mask; the umask is process-wide, so these tests are
// not parallel.
func withUmask(t *testing.T, mask int) {
	old := syscall.Umask(mask)
	t.Cleanup(func() { syscall.Umask(old) })
}

func TestListenIsPrivateUnderUmask000(t *testing.T) {
	withUmask(t, 0)
	dir := t.TempDir()
	path := filepath.Join(dir, "api.sock")
	// The socket is only ever reachable by others through path; before the rename it must sit in
	// a directory only the owner can enter, already with its final mode.
	var sawTmp bool
	beforeRename = func(tmp string) {
		sawTmp = true
		if fi, err := os.Stat(filepath.Dir(tmp)); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("temporary directory: %v, mode %v; want 0700", err, fi.Mode())
		}
		if fi, err := os.Lstat(tmp); err != nil || fi.Mode().Perm() != Mode {
			t.Errorf("socket before the rename: %v, mode %v; want %v", err, fi.Mode(), Mode)
		}
	}
	t.Cleanup(func() { beforeRename = nil })
	// A stale socket (world-accessible) is replaced atomically.
	if err := os.WriteFile(path, nil, 0o777); err != nil {
		t.Fatal(err)
	}
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	if !sawTmp {
		t.Fatal("Listen did not bind in a private directory")
	}
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != Mode {
		t.Fatalf("socket mode %v, want socket %v", fi.Mode(), Mode)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("directory holds %d entries, want only the socket: %v", len(ents), ents)
	}
	if ln.Addr().String() != path {
		t.Errorf("Addr %s, want %s", ln.Addr(), path)
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c.Close()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("socket still there after Close: %v", err)
	}
}

// Close must not remove a socket another listener has put at the same path since.
func TestCloseKeepsAReplacement(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	old, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	cur, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close()
	old.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("the newer socket was removed: %v", err)
	}
}
