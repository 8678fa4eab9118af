package fuse

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	gofuse "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/dfnydus/dfnydus/rafs"
)

// NewRoot returns the root node of img's filesystem for callers that mount it themselves; mount
// it with GoFuseOptions(opts). Reads go through r. An image that cannot be served (no root, a root
// that is not a directory, unsorted or invalid names) gives a root on which every operation fails
// with EIO, and the reason is logged; Mount reports it as an error instead.
func NewRoot(img *rafs.Image, r rafs.ChunkReader, opts Options) gofuse.InodeEmbedder {
	fs, err := newFilesystem(img, r, opts)
	if err != nil {
		fs.log.Error("image cannot be served", zap.Error(err))
		fs.broken = err
		return &node{fs: fs, rn: &rafs.Node{Inode: &rafs.Inode{Ino: rootIno, Mode: rafs.SIFDIR | 0o555, Nlink: 2}}}
	}
	return &node{fs: fs, rn: img.Root}
}

// Server is a mounted image.
type Server struct {
	fuse       *fuse.Server
	fs         *filesystem
	mountpoint string
}

// Mount serves img at mountpoint (an existing directory) until Unmount. img must not change while
// it is mounted. Reads go through r under the context of the FUSE request: a read whose caller is
// interrupted stops waiting, and the chunk fetch is cancelled once no read waits for it.
func Mount(mountpoint string, img *rafs.Image, r rafs.ChunkReader, opts Options) (*Server, error) {
	if strings.ContainsAny(opts.FSName, ", \t\n") {
		return nil, fmt.Errorf("mount %s: FSName %q contains a comma or white space", mountpoint, opts.FSName)
	}
	fs, err := newFilesystem(img, r, opts)
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	root := &node{fs: fs, rn: img.Root}
	gopts := GoFuseOptions(opts)
	srv, err := fuse.NewServer(gofuse.NewNodeFS(root, gopts), mountpoint, &gopts.MountOptions)
	if err != nil {
		fs.close()
		return nil, fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	go srv.Serve()
	if err := srv.WaitMount(); err != nil {
		fs.close()
		_ = srv.Unmount() // the kernel mount may exist even though the first request failed
		return nil, fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	if err := SetReadAhead(mountpoint, fs.opts.MaxReadAhead); err != nil {
		fs.log.Warn("readahead stays at the kernel's FUSE default", zap.String("mountpoint", mountpoint), zap.Error(err))
	}
	return &Server{fuse: srv, fs: fs, mountpoint: mountpoint}, nil
}

// fuseHandshakeReadAhead is the most readahead the FUSE handshake grants.
const fuseHandshakeReadAhead = 128 << 10

// SetReadAhead sets the readahead window of the filesystem mounted at mountpoint to bytes (rounded
// down to KiB) through /sys/class/bdi/<major>:<minor>/read_ahead_kb, which needs root. It does
// nothing for windows the FUSE handshake already grants (128 KiB or less).
func SetReadAhead(mountpoint string, bytes int) error {
	if bytes <= fuseHandshakeReadAhead {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Stat(mountpoint, &st); err != nil {
		return fmt.Errorf("set readahead: %w", err)
	}
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	if err := os.WriteFile(p, []byte(strconv.Itoa(bytes>>10)), 0o644); err != nil {
		return fmt.Errorf("set readahead: %w", err)
	}
	return nil
}

// Mountpoint returns where the image is mounted.
func (s *Server) Mountpoint() string { return s.mountpoint }

// unmountTries and unmountDelay bound how long Unmount waits for a busy mount to be released
// after cancelling the reads in flight.
const (
	unmountTries = 3
	unmountDelay = 100 * time.Millisecond
)

// Unmount unmounts the image and returns once the server has stopped; chunk fetches still in
// flight are cancelled. If the mount is busy (a process has a file open, maybe blocked in a read,
// or sits in a directory), the fetches are cancelled first, so blocked reads fail with EIO and
// their callers can let go, and the unmount is retried for a while. A mount that stays busy is
// left mounted, every later read failing, and the error says why.
func (s *Server) Unmount() error {
	err := s.fuse.Unmount()
	s.fs.close()
	for try := 0; err != nil && try < unmountTries; try++ {
		time.Sleep(unmountDelay)
		err = s.fuse.Unmount()
	}
	if err != nil {
		return fmt.Errorf("unmount %s: %w", s.mountpoint, err)
	}
	return nil
}

// Wait blocks until the mount is gone (Unmount, or an unmount from outside such as
// `fusermount3 -u` or `umount`).
func (s *Server) Wait() {
	s.fuse.Wait()
	s.fs.close()
}
