package kernelfs

import (
	"crypto/sha256"
	"fmt"
	"os"

	"github.com/dfnydus/dfnydus/rafs"
)

// MountIn is Mount with a fresh work directory under root (created 0700 if missing). The
// directory's name starts with a hash of the mountpoint, so that mounts of different
// mountpoints never share one and CleanWorkDirs(root) finds every one a killed process left.
// It is removed with the mount, or at once when the mount fails.
func MountIn(root, mountpoint string, img *rafs.Image, raw []byte, r rafs.ChunkReader, opts Options) (*Server, error) {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("kernel mount %s: work root: %w", mountpoint, err)
	}
	sum := sha256.Sum256([]byte(mountpoint))
	dir, err := os.MkdirTemp(root, fmt.Sprintf("%x-", sum[:6]))
	if err != nil {
		return nil, fmt.Errorf("kernel mount %s: work dir: %w", mountpoint, err)
	}
	s, err := Mount(mountpoint, dir, img, raw, r, opts)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err // says "kernel mount MP: ..."
	}
	return s, nil
}
