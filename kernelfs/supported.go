package kernelfs

import (
	"bytes"
	"fmt"
	"os"
)

// Supported reports why this kernel cannot serve kernel-mode mounts, or nil: EROFS must be
// registered (built in, or its module loaded) and FUSE there for the views.
func Supported() error {
	data, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		return fmt.Errorf("%w: read /proc/filesystems: %w", ErrUnsupported, err)
	}
	var erofs, fuse bool
	for _, l := range bytes.Split(data, []byte("\n")) {
		f := bytes.Fields(l)
		if len(f) == 0 {
			continue
		}
		switch string(f[len(f)-1]) {
		case "erofs":
			erofs = true
		case "fuse":
			fuse = true
		}
	}
	switch {
	case !erofs:
		return fmt.Errorf("%w: the kernel has no EROFS (not in /proc/filesystems)", ErrUnsupported)
	case !fuse:
		return fmt.Errorf("%w: the kernel has no FUSE (not in /proc/filesystems)", ErrUnsupported)
	}
	return nil
}
