// Package fstree records filesystem trees (a directory on disk, or a tar stream) as comparable
// snapshots of their content and metadata, and reports how two snapshots differ. Round-trip tests
// use it: build an image from a tree, unpack it, and check that nothing changed.
package fstree

import (
	"fmt"
	"sort"
	"strings"
)

// Type is the kind of a filesystem object.
type Type string

const (
	TypeDir     Type = "dir"
	TypeFile    Type = "file"
	TypeSymlink Type = "symlink"
	TypeChar    Type = "char"
	TypeBlock   Type = "block"
	TypeFifo    Type = "fifo"
	TypeSocket  Type = "socket"
)

// Timestamp is a modification time with nanoseconds.
type Timestamp struct {
	Sec  int64
	Nsec int64
}

func (t Timestamp) String() string { return fmt.Sprintf("%d.%09d", t.Sec, t.Nsec) }

// Entry is one filesystem object as a snapshot sees it. Fields that do not apply to the object's type
// are zero: Size and ContentSHA256 for non-regular files, LinkTarget for non-symlinks, Rdev for
// non-devices. Symlink modes are always recorded as 0777 (Linux ignores them).
type Entry struct {
	Path          string // absolute, "/" for the root
	Type          Type
	Mode          uint32 // permission bits plus setuid, setgid and sticky (mask 07777)
	UID, GID      uint32
	Size          int64
	Mtime         Timestamp
	LinkTarget    string
	Rdev          uint64            // Linux dev_t (unix.Mkdev) of a char or block device
	Xattrs        map[string]string // nil when there are none
	ContentSHA256 string            // hex sha256 of a regular file's content
	// HardLinkGroup is the smallest path (in byte order) of the entries sharing this entry's inode,
	// or "" when no other entry of the tree shares it. Two trees whose hard links partition their
	// paths the same way therefore have equal groups, whatever their inode numbers.
	HardLinkGroup string
}

// Options select which metadata a snapshot ignores. Ignored fields are recorded as zero, so a
// snapshot taken with Options compares equal to one normalised with the same Options.
type Options struct {
	IgnoreRootMtime     bool     // the mtime of "/"
	IgnoreDirMtimes     bool     // the mtimes of all directories
	IgnoreMtimes        bool     // all mtimes
	IgnoreOwners        bool     // UID and GID
	IgnoreXattrPrefixes []string // xattr names with any of these prefixes, e.g. "security.selinux"
}

// apply zeroes the fields of e that o ignores.
func (o Options) apply(e Entry) Entry {
	if o.IgnoreMtimes || (o.IgnoreDirMtimes && e.Type == TypeDir) || (o.IgnoreRootMtime && e.Path == "/") {
		e.Mtime = Timestamp{}
	}
	if o.IgnoreOwners {
		e.UID, e.GID = 0, 0
	}
	if len(e.Xattrs) > 0 {
		x := make(map[string]string, len(e.Xattrs))
		for k, v := range e.Xattrs {
			if !o.ignoresXattr(k) {
				x[k] = v
			}
		}
		e.Xattrs = x
	}
	if len(e.Xattrs) == 0 {
		e.Xattrs = nil
	}
	return e
}

func (o Options) ignoresXattr(name string) bool {
	for _, p := range o.IgnoreXattrPrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// Normalize returns a copy of m with the fields o ignores zeroed, for comparing a hand-written or
// model-derived snapshot with one taken with o.
func Normalize(m map[string]Entry, o Options) map[string]Entry {
	out := make(map[string]Entry, len(m))
	for p, e := range m {
		out[p] = o.apply(e)
	}
	return out
}

// assignHardLinkGroups sets HardLinkGroup on every path of each group with two or more members.
func assignHardLinkGroups(m map[string]Entry, groups [][]string) {
	for _, g := range groups {
		if len(g) < 2 {
			continue
		}
		sort.Strings(g)
		for _, p := range g {
			e := m[p]
			e.HardLinkGroup = g[0]
			m[p] = e
		}
	}
}
