package peer

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// The mount's API socket is 0600 as soon as ServeAPI returns, even under umask 000, and nothing
// else is left next to it.
func TestServeAPISocketPrivateUnderUmask000(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := t.TempDir()
	sock := filepath.Join(dir, "m.sock")
	s, err := ServeAPI(sock, "/mnt", func() []*Image { return nil }, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
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
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left after Close: %v", err)
	}
}
