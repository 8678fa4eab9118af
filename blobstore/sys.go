package blobstore

import (
	"io/fs"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// diskUsage is the space a file occupies (st_blocks * 512), or its size where the platform does not
// say.
func diskUsage(info fs.FileInfo) int64 {
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512
	}
	return info.Size()
}

// control runs fn on f's descriptor, which stays open meanwhile even if f is closed concurrently.
func control(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// punch deallocates [off, off+n) of f, keeping its size; the bytes read back as zeros.
func punch(f *os.File, off, n int64) error {
	return control(f, func(fd int) error {
		for {
			err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
			if err != unix.EINTR {
				return err
			}
		}
	})
}

func fdatasync(f *os.File) error {
	return control(f, func(fd int) error {
		for {
			err := unix.Fdatasync(fd)
			if err != unix.EINTR {
				return err
			}
		}
	})
}
