package fstree

import (
	"fmt"
	"sort"

	"golang.org/x/sys/unix"
)

// Diff returns the differences between snapshots a and b, one human-readable line each
// ("/etc/passwd: mode 0644 != 0600", "/x: only in a"), ordered by path and then by attribute.
// Values from a come first. It returns nil when the snapshots are equal. Hard links are compared
// through HardLinkGroup, that is as partitions of the paths, never by inode numbers.
func Diff(a, b map[string]Entry) []string {
	paths := make([]string, 0, len(a)+len(b))
	for p := range a {
		paths = append(paths, p)
	}
	for p := range b {
		if _, ok := a[p]; !ok {
			paths = append(paths, p)
		}
	}
	sort.Strings(paths)
	var out []string
	for _, p := range paths {
		ea, inA := a[p]
		eb, inB := b[p]
		switch {
		case !inB:
			out = append(out, p+": only in a")
		case !inA:
			out = append(out, p+": only in b")
		default:
			for _, d := range diffEntry(ea, eb) {
				out = append(out, p+": "+d)
			}
		}
	}
	return out
}

// diffEntry lists how two entries at the same path differ, in a fixed attribute order. A type
// mismatch is reported alone, since every other attribute then differs as a consequence.
func diffEntry(a, b Entry) []string {
	if a.Type != b.Type {
		return []string{fmt.Sprintf("type %s != %s", a.Type, b.Type)}
	}
	var d []string
	add := func(format string, args ...any) { d = append(d, fmt.Sprintf(format, args...)) }
	if a.Mode != b.Mode {
		add("mode %04o != %04o", a.Mode, b.Mode)
	}
	if a.UID != b.UID {
		add("uid %d != %d", a.UID, b.UID)
	}
	if a.GID != b.GID {
		add("gid %d != %d", a.GID, b.GID)
	}
	if a.Size != b.Size {
		add("size %d != %d", a.Size, b.Size)
	} else if a.ContentSHA256 != b.ContentSHA256 {
		add("content sha256 %s != %s", shortHash(a.ContentSHA256), shortHash(b.ContentSHA256))
	}
	if a.Mtime != b.Mtime {
		add("mtime %s != %s", a.Mtime, b.Mtime)
	}
	if a.LinkTarget != b.LinkTarget {
		add("link target %q != %q", a.LinkTarget, b.LinkTarget)
	}
	if a.Rdev != b.Rdev {
		add("rdev %s != %s", devString(a.Rdev), devString(b.Rdev))
	}
	d = append(d, diffXattrs(a.Xattrs, b.Xattrs)...)
	if a.HardLinkGroup != b.HardLinkGroup {
		add("hard link group %s != %s", groupString(a.HardLinkGroup), groupString(b.HardLinkGroup))
	}
	return d
}

func diffXattrs(a, b map[string]string) []string {
	names := make([]string, 0, len(a)+len(b))
	for k := range a {
		names = append(names, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	var d []string
	for _, k := range names {
		va, inA := a[k]
		vb, inB := b[k]
		switch {
		case !inB:
			d = append(d, fmt.Sprintf("xattr %s only in a", k))
		case !inA:
			d = append(d, fmt.Sprintf("xattr %s only in b", k))
		case va != vb:
			d = append(d, fmt.Sprintf("xattr %s %q != %q", k, va, vb))
		}
	}
	return d
}

func shortHash(h string) string {
	if h == "" {
		return "(none)"
	}
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

func devString(rdev uint64) string {
	return fmt.Sprintf("%d:%d", unix.Major(rdev), unix.Minor(rdev))
}

func groupString(g string) string {
	if g == "" {
		return "(none)"
	}
	return g
}
