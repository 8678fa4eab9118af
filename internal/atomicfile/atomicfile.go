// Package atomicfile writes files so that their path holds either the old content or the whole new
// one, also after a crash: the bytes go to a temporary file beside the destination, which is synced,
// renamed over it, and the directory synced so that the rename itself is durable.
package atomicfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// File is a file being written in place of path; nothing is visible at path until Commit. Close
// without Commit abandons it and removes the temporary file, so `defer f.Close()` cleans up every
// failed write.
type File struct {
	f      *os.File
	path   string
	perm   os.FileMode
	closed bool
}

// Create starts writing a file that Commit puts at path with permissions perm (applied as given,
// not filtered by the umask). The temporary file is in path's directory, named after path and
// hidden (".NAME.*.tmp"), so that the rename does not cross file systems.
func Create(path string, perm os.FileMode) (*File, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", path, err)
	}
	return &File{f: tmp, path: path, perm: perm}, nil
}

// Write writes to the temporary file.
func (f *File) Write(p []byte) (int, error) {
	n, err := f.f.Write(p)
	if err != nil {
		return n, fmt.Errorf("write %s: %w", f.path, err)
	}
	return n, nil
}

// Commit syncs the file, renames it to its path and syncs the directory. After an error, path holds
// what it held before, unless the error is the directory's sync (the file is then in place but the
// rename may not survive a crash), and the temporary file is gone.
func (f *File) Commit() error {
	if f.closed {
		return fmt.Errorf("commit %s: already closed", f.path)
	}
	f.closed = true
	tmp := f.f.Name()
	err := f.f.Sync()
	if cerr := f.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, f.perm)
	}
	if err == nil {
		err = os.Rename(tmp, f.path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("commit %s: %w", f.path, err)
	}
	if err := syncDir(filepath.Dir(f.path)); err != nil {
		return fmt.Errorf("commit %s: sync directory: %w", f.path, err)
	}
	return nil
}

// Close abandons an uncommitted file, removing the temporary file; after Commit it does nothing.
func (f *File) Close() error {
	if f.closed {
		return nil
	}
	f.closed = true
	err := f.f.Close()
	if rerr := os.Remove(f.f.Name()); err == nil {
		err = rerr
	}
	return err
}

// WriteFile writes data to path atomically and durably (see the package documentation), with
// permissions perm applied as given.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	f, err := Create(path, perm)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		return err
	}
	return f.Commit()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	// Some file systems cannot sync a directory; their renames are as durable as they get.
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOTSUP) {
		return err
	}
	return nil
}
