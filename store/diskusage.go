package store

import (
	"io/fs"
	"syscall"
)

// diskUsage is the space a file occupies (st_blocks * 512), or its size where the platform does not
// say.
func diskUsage(info fs.FileInfo) int64 {
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512
	}
	return info.Size()
}
