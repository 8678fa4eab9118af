package fuse

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/dfnydus/dfnydus/rafs"
)

// The mount shows exactly the tree the image was built from, for both fs-versions: every file
// type, content, modes, owners, nanosecond mtimes, device numbers, symlink targets, xattrs and
// hard-link structure; link counts match the source and inode numbers are the image's.
func TestMountShowsTheSourceTree(t *testing.T) {
	requireFUSE(t)
	src := filepath.Join(t.TempDir(), "src")
	makeTree(t, src, fullTree)
	want := snapshot(t, src)
	for _, v := range []int{5, 6} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			b := buildImage(t, src, v, 4096)
			mounts := map[string]string{}
			mounts["Mount"], _ = mountImage(t, b.img, dirReader(t, b.blobDir), DefaultOptions())
			mounts["NewRoot"] = mountNewRoot(t, b.img, dirReader(t, b.blobDir))
			for how, mnt := range mounts {
				t.Run(how, func(t *testing.T) {
					assertSameTree(t, want, snapshot(t, mnt))
					assertLinkCounts(t, src, mnt)
					assertImageInodeNumbers(t, b.img, mnt)
				})
			}
		})
	}
}

// assertLinkCounts compares st_nlink of every path under the source and the mount.
func assertLinkCounts(t *testing.T, src, mnt string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		var a, b unix.Stat_t
		if err := unix.Lstat(p, &a); err != nil {
			return err
		}
		if err := unix.Lstat(filepath.Join(mnt, rel), &b); err != nil {
			return err
		}
		if a.Nlink != b.Nlink {
			t.Errorf("%s: nlink %d in the source, %d in the mount", rel, a.Nlink, b.Nlink)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// assertImageInodeNumbers checks that every path's st_ino is the image's inode number (the root
// is 1), so hard links share one and every mount of the image shows the same numbers.
func assertImageInodeNumbers(t *testing.T, img *rafs.Image, mnt string) {
	t.Helper()
	err := img.Walk(func(p string, n *rafs.Node) error {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(mnt, p), &st); err != nil {
			return err
		}
		want := n.Inode.Ino
		if n == img.Root {
			want = 1
		}
		if st.Ino != want {
			t.Errorf("%s: st_ino %d, image inode %d", p, st.Ino, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Hard links are one inode on the mount: same st_ino, and the same number on a second mount.
func TestHardLinksShareOneStableInode(t *testing.T) {
	requireFUSE(t)
	src := filepath.Join(t.TempDir(), "src")
	makeTree(t, src, treeSpec{bigFile: 1, wideDir: 1, deepDirs: 1})
	b := buildImage(t, src, 6, 4096)
	var inos [2][]uint64
	for i := range 2 {
		mnt, _ := mountImage(t, b.img, dirReader(t, b.blobDir), DefaultOptions())
		for _, p := range []string{"links/a", "links/b", "other/c"} {
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(mnt, p), &st); err != nil {
				t.Fatal(err)
			}
			if st.Nlink != 3 {
				t.Errorf("%s: nlink %d, want 3", p, st.Nlink)
			}
			inos[i] = append(inos[i], st.Ino)
		}
	}
	if inos[0][0] != inos[0][1] || inos[0][0] != inos[0][2] {
		t.Errorf("hard links have inode numbers %v, want one number", inos[0])
	}
	if fmt.Sprint(inos[0]) != fmt.Sprint(inos[1]) {
		t.Errorf("inode numbers differ between mounts: %v vs %v", inos[0], inos[1])
	}
}

// statfs describes a read-only filesystem holding the image's inodes and data.
func TestStatfs(t *testing.T) {
	requireFUSE(t)
	src := filepath.Join(t.TempDir(), "src")
	makeTree(t, src, treeSpec{bigFile: 1 << 20, wideDir: 10, deepDirs: 2})
	b := buildImage(t, src, 6, 4096)
	mnt, _ := mountImage(t, b.img, dirReader(t, b.blobDir), DefaultOptions())

	inodes := map[*rafs.Inode]bool{}
	var dataBlocks uint64
	_ = b.img.Walk(func(_ string, n *rafs.Node) error {
		if !inodes[n.Inode] && n.Inode.IsReg() {
			dataBlocks += (n.Inode.Size + 4095) / 4096
		}
		inodes[n.Inode] = true
		return nil
	})
	var st unix.Statfs_t
	if err := unix.Statfs(filepath.Join(mnt, "links/a"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Files != uint64(len(inodes)) || st.Ffree != 0 {
		t.Errorf("files %d free %d, want %d and 0", st.Files, st.Ffree, len(inodes))
	}
	if st.Bsize != 4096 || st.Blocks != dataBlocks || st.Bfree != 0 || st.Bavail != 0 {
		t.Errorf("bsize %d blocks %d free %d avail %d, want 4096, %d, 0, 0", st.Bsize, st.Blocks, st.Bfree, st.Bavail, dataBlocks)
	}
	if st.Flags&unix.ST_RDONLY == 0 {
		t.Errorf("flags %#x lack ST_RDONLY", st.Flags)
	}
	if st.Namelen != 255 {
		t.Errorf("namelen %d, want 255", st.Namelen)
	}
}

// Every way of changing the filesystem fails with EROFS, on a normal mount (the kernel refuses
// for "ro") and on a mount made without "ro" (the filesystem refuses).
func TestWritesFailWithEROFS(t *testing.T) {
	requireFUSE(t)
	src := filepath.Join(t.TempDir(), "src")
	makeTree(t, src, treeSpec{bigFile: 1, wideDir: 1, deepDirs: 1})
	b := buildImage(t, src, 6, 4096)
	mounts := map[string]string{}
	mounts["ro"], _ = mountImage(t, b.img, dirReader(t, b.blobDir), DefaultOptions())
	mounts["rw-mount-option"] = mountNewRoot(t, b.img, dirReader(t, b.blobDir), withoutRO)

	for name, mnt := range mounts {
		p := func(rel string) string { return filepath.Join(mnt, rel) }
		ops := []struct {
			name string
			op   func() error
		}{
			{"open O_WRONLY", func() error { return openClose(p("hello.txt"), os.O_WRONLY) }},
			{"open O_RDWR", func() error { return openClose(p("hello.txt"), os.O_RDWR) }},
			{"open O_TRUNC", func() error { return openClose(p("hello.txt"), os.O_RDONLY|os.O_TRUNC) }},
			{"create", func() error { return openClose(p("new"), os.O_WRONLY|os.O_CREATE) }},
			{"O_TMPFILE", func() error { return openClose(mnt, os.O_RDWR|unix.O_TMPFILE) }},
			{"mkdir", func() error { return os.Mkdir(p("newdir"), 0o755) }},
			{"rmdir", func() error { return unix.Rmdir(p("other")) }},
			{"unlink", func() error { return unix.Unlink(p("hello.txt")) }},
			{"rename", func() error { return unix.Rename(p("hello.txt"), p("renamed")) }},
			{"link", func() error { return unix.Link(p("hello.txt"), p("newlink")) }},
			{"symlink", func() error { return unix.Symlink("target", p("newsym")) }},
			{"mknod", func() error { return unix.Mknod(p("newfifo"), unix.S_IFIFO|0o644, 0) }},
			{"chmod", func() error { return unix.Chmod(p("hello.txt"), 0o600) }},
			{"chown", func() error { return unix.Lchown(p("hello.txt"), 1, 1) }},
			{"truncate", func() error { return unix.Truncate(p("hello.txt"), 0) }},
			{"utimes", func() error { return unix.UtimesNano(p("hello.txt"), make([]unix.Timespec, 2)) }},
			{"setxattr", func() error { return unix.Setxattr(p("hello.txt"), "user.new", []byte("v"), 0) }},
			{"removexattr", func() error { return unix.Removexattr(p("hello.txt"), "user.greeting") }},
		}
		for _, tc := range ops {
			t.Run(name+"/"+tc.name, func(t *testing.T) {
				if err := tc.op(); !errors.Is(err, unix.EROFS) {
					t.Errorf("got %v, want EROFS", err)
				}
			})
		}
	}
}

func openClose(p string, flags int) error {
	f, err := os.OpenFile(p, flags, 0o644)
	if err == nil {
		f.Close()
	}
	return err
}

// POSIX ACLs in the image are enforced: a user named only in a file's ACL can read it.
func TestPOSIXACLsAreEnforced(t *testing.T) {
	requireFUSE(t)
	src := filepath.Join(t.TempDir(), "src")
	makeTree(t, src, treeSpec{bigFile: 1, wideDir: 1, deepDirs: 1})
	b := buildImage(t, src, 6, 4096)
	opts := DefaultOptions()
	opts.AllowOther = true // the test users are not the mounting user
	mnt, _ := mountImage(t, b.img, dirReader(t, b.blobDir), opts)
	for _, root := range []string{src, mnt} {
		// t.TempDir makes private directories; let the test users reach the trees.
		for d := filepath.Dir(root); d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for _, tc := range []struct {
			uid  uint32
			want bool
		}{{1234, true}, {1235, false}} {
			cmd := exec.Command("cat", filepath.Join(root, "acl/file"))
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: tc.uid, Gid: tc.uid}}
			out, err := cmd.CombinedOutput()
			if got := err == nil; got != tc.want {
				t.Errorf("%s: uid %d read acl/file: %v (%s), want allowed=%v", root, tc.uid, err, out, tc.want)
			}
		}
	}
}

// Mount widens the kernel's readahead beyond the 128 KiB the FUSE handshake allows.
func TestMountSetsReadAhead(t *testing.T) {
	requireFUSE(t)
	img, mem, _ := modelImage(4096, []modelChunk{{off: 0, size: 4096}})
	for _, tc := range []struct {
		readAhead int
		wantKiB   string
	}{
		{0, "1024"}, // the default
		{4 << 20, "4096"},
		{64 << 10, "64"}, // within the handshake's 128 KiB: the handshake sets it
	} {
		opts := DefaultOptions()
		opts.MaxReadAhead = tc.readAhead
		mnt, _ := mountImage(t, img, mem, opts)
		var st unix.Stat_t
		if err := unix.Stat(mnt, &st); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev)))
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(string(got)) != tc.wantKiB {
			t.Errorf("MaxReadAhead %d: read_ahead_kb %s, want %s", tc.readAhead, got, tc.wantKiB)
		}
	}
}

// The mount appears in /proc/mounts as "FSName mountpoint fuse.rafs ro,...", and an FSName that
// would break the mount options is refused.
func TestProcMountsEntry(t *testing.T) {
	requireFUSE(t)
	img, mem, _ := modelImage(4096, []modelChunk{{off: 0, size: 4096}})
	opts := DefaultOptions()
	opts.FSName = "image:tag"
	mnt, _ := mountImage(t, img, mem, opts)
	mounts, err := os.ReadFile("/proc/mounts")
	if err != nil {
		t.Fatal(err)
	}
	var line string
	for _, l := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(l); len(f) > 3 && f[1] == mnt {
			line = l
		}
	}
	f := strings.Fields(line)
	if len(f) < 4 || f[0] != "image:tag" || f[2] != "fuse.rafs" || !strings.HasPrefix(f[3], "ro,") ||
		!strings.Contains(f[3], "default_permissions") {
		t.Errorf("/proc/mounts entry %q, want image:tag %s fuse.rafs ro,...,default_permissions,...", line, mnt)
	}

	opts.FSName = "a,b"
	if srv, err := Mount(t.TempDir(), img, mem, opts); err == nil {
		srv.Unmount()
		t.Error("Mount accepted an FSName with a comma")
	}
}
