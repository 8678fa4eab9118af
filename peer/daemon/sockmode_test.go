package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Under umask 000 bind(2) would create the control socket 0777. The socket must be 0600 from the
// moment it appears at its path (it is renamed there from a private directory, so the first stat
// that sees it sees its final mode), and nothing else may be left next to it.
func TestControlSocketPrivateUnderUmask000(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	cfg := testConfig(t)
	// inotify shows how the socket came to be at its path: bind(2) reports IN_CREATE, which means the
	// socket existed there with the umask's mode before any chmod; a rename reports IN_MOVED_TO.
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if _, err := unix.InotifyAddWatch(fd, filepath.Dir(cfg.ControlSocket), unix.IN_CREATE|unix.IN_MOVED_TO); err != nil {
		t.Fatal(err)
	}
	serve(t, newTestDaemon(t, cfg, Options{}))
	var created, moved bool
	buf := make([]byte, 64<<10)
	n, _ := unix.Read(fd, buf)
	for off := 0; n > 0 && off+unix.SizeofInotifyEvent <= n; {
		ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
		name := strings.TrimRight(string(buf[off+unix.SizeofInotifyEvent:off+unix.SizeofInotifyEvent+int(ev.Len)]), "\x00")
		if name == filepath.Base(cfg.ControlSocket) {
			created = created || ev.Mask&unix.IN_CREATE != 0
			moved = moved || ev.Mask&unix.IN_MOVED_TO != 0
		}
		off += unix.SizeofInotifyEvent + int(ev.Len)
	}
	if created || !moved {
		t.Errorf("control socket was bound at its path (IN_CREATE %v, IN_MOVED_TO %v): it existed there before its mode was set", created, moved)
	}
	fi, err := os.Lstat(cfg.ControlSocket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket mode %v, want socket 0600", fi.Mode())
	}
	ents, err := os.ReadDir(filepath.Dir(cfg.ControlSocket))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() != filepath.Base(cfg.ControlSocket) && e.Type() == os.ModeSocket {
			t.Errorf("another socket %s next to the control socket", e.Name())
		}
		if len(e.Name()) > 6 && e.Name()[:6] == ".sock-" {
			t.Errorf("temporary directory %s left behind", e.Name())
		}
	}
}
