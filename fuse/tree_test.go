package fuse

import (
	"encoding/binary"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// treeSpec says how big the generated tree is.
type treeSpec struct {
	bigFile  int // bytes of /big, which spans many chunks
	wideDir  int // entries of /wide
	deepDirs int // nesting of /deep
}

var fullTree = treeSpec{bigFile: 3<<20 + 123, wideDir: 5000, deepDirs: 40}

// makeTree creates, under root, every file type with the metadata a mount must show: owners,
// setuid/setgid/sticky and 0000 modes, xattrs (user and trusted, on files and directories, a long
// value), hard links across directories, symlinks (relative, absolute, dangling, long), device
// nodes (including numbers that need the wide encoding), a fifo, a socket, an empty file, a sparse
// file, a file of random data spanning many chunks, a deep chain of directories and a wide
// directory. Every entry gets an mtime with nanoseconds.
func makeTree(t testing.TB, root string, spec treeSpec) {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	p := func(rel string) string { return filepath.Join(root, rel) }
	file := func(rel string, mode uint32, data []byte) {
		t.Helper()
		must(os.MkdirAll(filepath.Dir(p(rel)), 0o755))
		must(os.WriteFile(p(rel), data, 0o600))
		must(unix.Chmod(p(rel), mode)) // raw bits: os.Chmod wants os.ModeSetuid and friends
	}
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}

	must(os.MkdirAll(root, 0o755))
	file("hello.txt", 0o644, []byte("hello, world\n"))
	must(os.Chown(p("hello.txt"), 1234, 5678))
	must(unix.Setxattr(p("hello.txt"), "user.greeting", []byte("hi"), 0))
	must(unix.Setxattr(p("hello.txt"), "trusted.bin", []byte{0, 1, 2, 0xff}, 0))
	must(unix.Setxattr(p("hello.txt"), "user.long", []byte(strings.Repeat("x", 3000)), 0))
	must(unix.Setxattr(p("hello.txt"), "user.empty", nil, 0))
	file("empty", 0o644, nil)
	file("modes/setuid", 0o4755, []byte("#!/bin/sh\n"))
	file("modes/setgid", 0o2711, []byte("x"))
	file("modes/none", 0, []byte("secret"))
	file("modes/all", 0o7777, []byte("all"))
	must(os.Mkdir(p("modes/sticky"), 0o755))
	must(unix.Chmod(p("modes/sticky"), 0o1777))
	must(os.Mkdir(p("modes/private"), 0o700))
	must(os.Chown(p("modes/private"), 42, 43))
	must(unix.Setxattr(p("modes/private"), "user.dir", []byte("on a directory"), 0))
	file("acl/file", 0o640, []byte("acl"))
	must(unix.Setxattr(p("acl/file"), "system.posix_acl_access", posixACL(0o6, 1234, 0o6, 0o4, 0o6, 0), 0))
	must(unix.Setxattr(p("acl"), "system.posix_acl_default", posixACL(0o7, 1234, 0o5, 0o5, 0o7, 0o5), 0))

	file("big", 0o644, random(spec.bigFile))
	f, err := os.Create(p("sparse"))
	must(err)
	_, err = f.WriteAt([]byte("head"), 0)
	must(err)
	_, err = f.WriteAt([]byte("tail"), 10<<20-4)
	must(err)
	must(f.Close())

	file("links/a", 0o640, []byte("linked content\n"))
	must(os.MkdirAll(p("other"), 0o755))
	must(os.Link(p("links/a"), p("links/b")))
	must(os.Link(p("links/a"), p("other/c")))
	must(os.Symlink("a", p("links/rel")))
	must(os.Symlink("/nonexistent/target", p("links/dangling")))
	must(os.Symlink(strings.Repeat("long/", 50)+"end", p("links/long")))
	must(unix.Lchown(p("links/rel"), 7, 8))

	must(os.MkdirAll(p("dev"), 0o755))
	must(unix.Mknod(p("dev/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(unix.Mknod(p("dev/sda1"), unix.S_IFBLK|0o660, int(unix.Mkdev(8, 1))))
	must(unix.Mknod(p("dev/wide"), unix.S_IFCHR|0o600, int(unix.Mkdev(300, 70000))))
	must(unix.Mkfifo(p("dev/fifo"), 0o644))
	must(unix.Mknod(p("dev/socket"), unix.S_IFSOCK|0o755, 0))

	d := "deep"
	for i := range spec.deepDirs {
		d = filepath.Join(d, fmt.Sprintf("d%02d", i))
	}
	file(filepath.Join(d, "leaf"), 0o644, []byte("at the bottom\n"))

	must(os.MkdirAll(p("wide"), 0o755))
	for i := range spec.wideDir {
		var data []byte
		if i%500 == 0 {
			data = random(100 + i)
		}
		file(fmt.Sprintf("wide/entry-%05d", i), 0o644, data)
	}

	// Distinct mtimes with nanoseconds, children before their directories (creating a child
	// changes its directory's mtime).
	var paths []string
	must(filepath.WalkDir(root, func(path string, _ fs.DirEntry, err error) error {
		paths = append(paths, path)
		return err
	}))
	sort.Sort(sort.Reverse(sort.StringSlice(paths)))
	for i, path := range paths {
		ts := unix.Timespec{Sec: 1_600_000_000 + int64(i), Nsec: int64(i*7919+1) % 1_000_000_000}
		must(unix.UtimesNanoAt(unix.AT_FDCWD, path, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW))
	}
}

// posixACL encodes a POSIX ACL xattr value (linux/posix_acl_xattr.h, version 2) granting the owner
// userPerm, user uid namedPerm, the group groupPerm, with the given mask and other entries.
func posixACL(userPerm uint16, uid uint32, namedPerm, groupPerm, mask, other uint16) []byte {
	const undefinedID = 0xffffffff
	b := binary.LittleEndian.AppendUint32(nil, 2)
	entry := func(tag, perm uint16, id uint32) {
		b = binary.LittleEndian.AppendUint16(b, tag)
		b = binary.LittleEndian.AppendUint16(b, perm)
		b = binary.LittleEndian.AppendUint32(b, id)
	}
	entry(0x01, userPerm, undefinedID)  // ACL_USER_OBJ
	entry(0x02, namedPerm, uid)         // ACL_USER
	entry(0x04, groupPerm, undefinedID) // ACL_GROUP_OBJ
	entry(0x10, mask, undefinedID)      // ACL_MASK
	entry(0x20, other, undefinedID)     // ACL_OTHER
	return b
}
