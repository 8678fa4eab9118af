// Package sockutil creates unix sockets that no other user can connect to, at any moment, whatever
// the process umask.
//
// bind(2) creates the socket file with mode 0777 &^ umask, so under umask 000 a socket is
// world-connectable until it is chmod'ed, and chmod after Listen leaves that window open. Setting
// the umask around Listen would close it, but the umask is process-wide: every goroutine creating a
// file meanwhile (the store, the FUSE server, the caller's own code) would get the wrong mode, and a
// lock only helps if every file-creating path in the process takes it. Instead Listen binds inside a
// fresh directory only the owner can enter, chmods the socket to 0600 there, and renames it into
// place: the socket appears at its final path already 0600, and rename(2) atomically replaces a
// stale socket, so there is never a moment where a wider socket exists where others can reach it.
package sockutil

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
)

// Mode is the mode of every socket Listen creates: the owner only.
const Mode os.FileMode = 0o600

// beforeRename, when set by tests, is called with the temporary socket path just before it is
// renamed into place.
var beforeRename func(tmp string)

// Listen listens on a unix socket at path with mode 0600, replacing whatever socket or file is
// there. The parent directory must exist. Closing the listener removes the socket if it is still
// the one Listen created.
func Listen(path string) (net.Listener, error) {
	dir, err := os.MkdirTemp(filepath.Dir(path), ".sock-")
	if err != nil {
		return nil, fmt.Errorf("socket %s: private directory: %w", path, err)
	}
	defer os.RemoveAll(dir)
	// MkdirTemp asks for 0700, but a umask could take bits away (never add them); make it exact so
	// bind works and nobody else can traverse into the directory.
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("socket %s: private directory: %w", path, err)
	}
	tmp := filepath.Join(dir, "s")
	ln, err := net.Listen("unix", tmp)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	ul := ln.(*net.UnixListener)
	// The listener would unlink tmp on Close; the socket lives at path by then, which Close below
	// handles instead.
	ul.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, Mode); err != nil {
		ul.Close()
		return nil, fmt.Errorf("socket %s: chmod: %w", path, err)
	}
	if beforeRename != nil {
		beforeRename(tmp)
	}
	if err := os.Rename(tmp, path); err != nil {
		ul.Close()
		return nil, fmt.Errorf("socket %s: move into place: %w", path, err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		ul.Close()
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	return &listener{UnixListener: ul, path: path, fi: fi}, nil
}

// listener reports the final path as its address and removes the socket on Close, unless another
// process has replaced it meanwhile (a restarted daemon's socket must survive the old one's exit).
type listener struct {
	*net.UnixListener
	path string
	fi   os.FileInfo
}

func (l *listener) Addr() net.Addr { return &net.UnixAddr{Name: l.path, Net: "unix"} }

func (l *listener) Close() error {
	if fi, err := os.Lstat(l.path); err == nil && os.SameFile(fi, l.fi) {
		os.Remove(l.path)
	}
	return l.UnixListener.Close()
}
