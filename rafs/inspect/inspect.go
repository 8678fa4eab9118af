// Package inspect lists an image's entries in a stable, JSON-friendly form (dfnydus inspect).
package inspect

import (
	"fmt"
	"io/fs"
	"time"

	"github.com/dfnydus/dfnydus/rafs"
)

// Entry is one path of an image.
type Entry struct {
	Path   string            `json:"path"`
	Type   string            `json:"type"` // file, dir, symlink, char, block, fifo, socket
	Mode   string            `json:"mode"` // permission and special bits, octal
	UID    uint32            `json:"uid"`
	GID    uint32            `json:"gid"`
	Size   uint64            `json:"size"`
	Mtime  string            `json:"mtime"` // RFC 3339 with nanoseconds, UTC
	Target string            `json:"target,omitempty"`
	Nlink  uint32            `json:"nlink"`
	Ino    uint64            `json:"ino"`
	Rdev   string            `json:"rdev,omitempty"` // major:minor
	Xattrs map[string]string `json:"xattrs,omitempty"`
	Digest string            `json:"digest,omitempty"` // v5 Merkle digest
	Chunks int               `json:"chunks"`
}

// TypeName names the file type of a stat mode.
func TypeName(mode uint32) string {
	switch rafs.ModeType(mode) {
	case fs.ModeDir:
		return "dir"
	case fs.ModeSymlink:
		return "symlink"
	case fs.ModeDevice | fs.ModeCharDevice:
		return "char"
	case fs.ModeDevice:
		return "block"
	case fs.ModeNamedPipe:
		return "fifo"
	case fs.ModeSocket:
		return "socket"
	}
	return "file"
}

// Entries lists every path of img in walk order (pre-order, names sorted).
func Entries(img *rafs.Image) ([]Entry, error) {
	var out []Entry
	err := img.Walk(func(p string, n *rafs.Node) error {
		ino := n.Inode
		e := Entry{
			Path: p, Type: TypeName(ino.Mode), Mode: fmt.Sprintf("%04o", ino.Mode&0o7777),
			UID: ino.UID, GID: ino.GID, Size: ino.Size, Target: ino.Symlink, Nlink: ino.Nlink, Ino: ino.Ino,
			Mtime:  time.Unix(int64(ino.Mtime), int64(ino.MtimeNsec)).UTC().Format(time.RFC3339Nano),
			Chunks: len(ino.Chunks),
		}
		if t := e.Type; t == "char" || t == "block" {
			e.Rdev = fmt.Sprintf("%d:%d", major(ino.Rdev), minor(ino.Rdev))
		}
		if len(ino.Xattrs) > 0 {
			e.Xattrs = map[string]string{}
			for _, x := range ino.Xattrs {
				e.Xattrs[x.Name] = string(x.Value)
			}
		}
		if !ino.Digest.IsZero() {
			e.Digest = ino.Digest.String()
		}
		out = append(out, e)
		return nil
	})
	return out, err
}

// major and minor decode a Linux dev_t (the glibc encoding unix.Mkdev produces).
func major(dev uint64) uint32 { return uint32((dev>>8)&0xfff) | uint32((dev>>32)&^0xfff) }
func minor(dev uint64) uint32 { return uint32(dev&0xff) | uint32((dev>>12)&^0xff) }
