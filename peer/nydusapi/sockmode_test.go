package nydusapi

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// Under umask 000 bind(2) would create the API socket 0777, and the API mounts filesystems. Listen
// must leave it 0600 from the moment it exists (it renames it into place from a private directory)
// and leave nothing else behind.
func TestListenSocketPrivateUnderUmask000(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := t.TempDir()
	sock := filepath.Join(dir, "api.sock")
	s := NewServer(ServerOptions{ID: "d", Mounter: &fakeMounter{mounted: map[string]*fakeHandle{}}, Root: "/mnt/root"})
	if err := s.Listen(sock); err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	fi, err := os.Lstat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("api socket mode %v, want socket 0600", fi.Mode())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("socket directory holds %v, want only the socket", ents)
	}
}
