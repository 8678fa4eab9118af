package fstree

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// baseTime is the mtime given to every entry of a test tree; entry i gets baseTime+i seconds.
const baseTime = 1_700_000_000

// buildTree creates a tree with one entry of every type and a hard-link pair, lets tweak change it,
// then sets every mtime (directories after their children) and lets post change it further.
//
//	/            0755                 /hard1, /hard2  0644 "same" (one inode)
//	/dir         0750 uid 1 gid 2     /chr            char 1:3
//	/dir/file    0644 "hello" xattrs  /blk            block 7:0
//	/exec        4755 "bin"           /fifo           fifo
//	/link        -> dir/file          /sock           socket
//	/sticky      1777 dir
func buildTree(t *testing.T, tweak, post func(root string)) string {
	t.Helper()
	root := t.TempDir()
	at := func(p string) string { return filepath.Join(root, p) }
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Chmod(root, 0o755))
	must(os.Mkdir(at("dir"), 0o750))
	must(os.Chown(at("dir"), 1, 2))
	must(os.WriteFile(at("dir/file"), []byte("hello"), 0o644))
	must(unix.Lsetxattr(at("dir/file"), "user.a", []byte("1"), 0))
	must(unix.Lsetxattr(at("dir/file"), "trusted.t", []byte("x\x00y"), 0))
	must(os.WriteFile(at("exec"), []byte("bin"), 0o644))
	must(unix.Chmod(at("exec"), 0o4755))
	must(os.Symlink("dir/file", at("link")))
	must(os.Mkdir(at("sticky"), 0o755))
	must(unix.Chmod(at("sticky"), 0o1777))
	must(os.WriteFile(at("hard1"), []byte("same"), 0o644))
	must(os.Link(at("hard1"), at("hard2")))
	must(unix.Mknod(at("chr"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))))
	must(unix.Mknod(at("blk"), unix.S_IFBLK|0o600, int(unix.Mkdev(7, 0))))
	must(unix.Mkfifo(at("fifo"), 0o644))
	must(unix.Mknod(at("sock"), unix.S_IFSOCK|0o755, 0))
	for _, p := range []string{"chr", "blk", "fifo", "sock"} {
		must(os.Chmod(at(p), map[string]os.FileMode{"chr": 0o600, "blk": 0o600, "fifo": 0o644, "sock": 0o755}[p]))
	}
	if tweak != nil {
		tweak(root)
	}
	// Both names of the hard-linked inode get second 4, so breaking the link changes no mtime.
	order := []string{"dir/file", "exec", "link", "hard1", "hard2", "chr", "blk", "fifo", "sock", "sticky", "dir", "."}
	for i, p := range order {
		if p == "hard1" {
			i = 4
		}
		ts := []unix.Timespec{{Sec: baseTime + int64(i), Nsec: 123456789}, {Sec: baseTime + int64(i), Nsec: 123456789}}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, at(p), ts, unix.AT_SYMLINK_NOFOLLOW); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	if post != nil {
		post(root)
	}
	return root
}

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func setMtime(t *testing.T, p string, sec, nsec int64) {
	t.Helper()
	ts := []unix.Timespec{{Sec: sec, Nsec: nsec}, {Sec: sec, Nsec: nsec}}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		t.Fatal(err)
	}
}

func TestSnapshotRecordsEveryAttribute(t *testing.T) {
	root := buildTree(t, nil, nil)
	got, err := Snapshot(root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ts := func(i int64) Timestamp { return Timestamp{Sec: baseTime + i, Nsec: 123456789} }
	want := map[string]Entry{
		"/":         {Path: "/", Type: TypeDir, Mode: 0o755, Mtime: ts(11)},
		"/dir":      {Path: "/dir", Type: TypeDir, Mode: 0o750, UID: 1, GID: 2, Mtime: ts(10)},
		"/dir/file": {Path: "/dir/file", Type: TypeFile, Mode: 0o644, Size: 5, Mtime: ts(0), ContentSHA256: sha("hello"), Xattrs: map[string]string{"user.a": "1", "trusted.t": "x\x00y"}},
		"/exec":     {Path: "/exec", Type: TypeFile, Mode: 0o4755, Size: 3, Mtime: ts(1), ContentSHA256: sha("bin")},
		"/link":     {Path: "/link", Type: TypeSymlink, Mode: 0o777, Mtime: ts(2), LinkTarget: "dir/file"},
		"/hard1":    {Path: "/hard1", Type: TypeFile, Mode: 0o644, Size: 4, Mtime: ts(4), ContentSHA256: sha("same"), HardLinkGroup: "/hard1"},
		"/hard2":    {Path: "/hard2", Type: TypeFile, Mode: 0o644, Size: 4, Mtime: ts(4), ContentSHA256: sha("same"), HardLinkGroup: "/hard1"},
		"/chr":      {Path: "/chr", Type: TypeChar, Mode: 0o600, Mtime: ts(5), Rdev: unix.Mkdev(1, 3)},
		"/blk":      {Path: "/blk", Type: TypeBlock, Mode: 0o600, Mtime: ts(6), Rdev: unix.Mkdev(7, 0)},
		"/fifo":     {Path: "/fifo", Type: TypeFifo, Mode: 0o644, Mtime: ts(7)},
		"/sock":     {Path: "/sock", Type: TypeSocket, Mode: 0o755, Mtime: ts(8)},
		"/sticky":   {Path: "/sticky", Type: TypeDir, Mode: 0o1777, Mtime: ts(9)},
	}
	if d := Diff(want, got); d != nil {
		t.Fatalf("snapshot differs from the tree built:\n%q", d)
	}
}

func TestDiffFindsEachDifference(t *testing.T) {
	at := func(root, p string) string { return filepath.Join(root, p) }
	tests := []struct {
		name  string
		tweak func(t *testing.T, root string) // before mtimes are set
		post  func(t *testing.T, root string) // after
		want  []string
	}{
		{name: "identical trees", want: nil},
		{name: "permission bits", tweak: func(t *testing.T, r string) { chk(t, os.Chmod(at(r, "dir/file"), 0o600)) },
			want: []string{"/dir/file: mode 0644 != 0600"}},
		{name: "setuid bit", tweak: func(t *testing.T, r string) { chk(t, unix.Chmod(at(r, "exec"), 0o755)) },
			want: []string{"/exec: mode 4755 != 0755"}},
		{name: "sticky bit", tweak: func(t *testing.T, r string) { chk(t, unix.Chmod(at(r, "sticky"), 0o777)) },
			want: []string{"/sticky: mode 1777 != 0777"}},
		{name: "uid", tweak: func(t *testing.T, r string) { chk(t, os.Lchown(at(r, "dir/file"), 5, 0)) },
			want: []string{"/dir/file: uid 0 != 5"}},
		{name: "gid", tweak: func(t *testing.T, r string) { chk(t, os.Lchown(at(r, "dir"), 1, 7)) },
			want: []string{"/dir: gid 2 != 7"}},
		{name: "symlink owner, not its target's", tweak: func(t *testing.T, r string) { chk(t, os.Lchown(at(r, "link"), 9, 9)) },
			want: []string{"/link: uid 0 != 9", "/link: gid 0 != 9"}},
		{name: "size", tweak: func(t *testing.T, r string) { appendTo(t, at(r, "exec"), "!") },
			want: []string{"/exec: size 3 != 4"}},
		{name: "content of equal size", tweak: func(t *testing.T, r string) { chk(t, os.WriteFile(at(r, "dir/file"), []byte("hellO"), 0)) },
			want: []string{"/dir/file: content sha256 " + sha("hello")[:12] + " != " + sha("hellO")[:12]}},
		{name: "mtime seconds", post: func(t *testing.T, r string) { setMtime(t, at(r, "exec"), baseTime+100, 123456789) },
			want: []string{"/exec: mtime 1700000001.123456789 != 1700000100.123456789"}},
		{name: "mtime nanoseconds", post: func(t *testing.T, r string) { setMtime(t, at(r, "exec"), baseTime+1, 123456790) },
			want: []string{"/exec: mtime 1700000001.123456789 != 1700000001.123456790"}},
		{name: "symlink mtime, not its target's", post: func(t *testing.T, r string) { setMtime(t, at(r, "link"), 5, 0) },
			want: []string{"/link: mtime 1700000002.123456789 != 5.000000000"}},
		{name: "root mtime", post: func(t *testing.T, r string) { setMtime(t, r, 5, 0) },
			want: []string{"/: mtime 1700000011.123456789 != 5.000000000"}},
		{name: "symlink target", tweak: func(t *testing.T, r string) {
			chk(t, os.Remove(at(r, "link")))
			chk(t, os.Symlink("dir/other", at(r, "link")))
		}, want: []string{`/link: link target "dir/file" != "dir/other"`}},
		{name: "device number", tweak: func(t *testing.T, r string) {
			chk(t, os.Remove(at(r, "chr")))
			chk(t, unix.Mknod(at(r, "chr"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 5))))
			chk(t, os.Chmod(at(r, "chr"), 0o600))
		}, want: []string{"/chr: rdev 1:3 != 1:5"}},
		{name: "xattr value", tweak: func(t *testing.T, r string) { chk(t, unix.Lsetxattr(at(r, "dir/file"), "user.a", []byte("2"), 0)) },
			want: []string{`/dir/file: xattr user.a "1" != "2"`}},
		{name: "xattr added", tweak: func(t *testing.T, r string) { chk(t, unix.Lsetxattr(at(r, "fifo"), "trusted.new", nil, 0)) },
			want: []string{"/fifo: xattr trusted.new only in b"}},
		{name: "xattr removed", tweak: func(t *testing.T, r string) { chk(t, unix.Lremovexattr(at(r, "dir/file"), "trusted.t")) },
			want: []string{"/dir/file: xattr trusted.t only in a"}},
		{name: "type", tweak: func(t *testing.T, r string) {
			chk(t, os.Remove(at(r, "fifo")))
			chk(t, os.WriteFile(at(r, "fifo"), nil, 0o644))
		}, want: []string{"/fifo: type fifo != file"}},
		{name: "entry added", tweak: func(t *testing.T, r string) { chk(t, os.WriteFile(at(r, "dir/new"), nil, 0o644)) },
			want: []string{"/dir/new: only in b"}},
		{name: "entry removed", tweak: func(t *testing.T, r string) { chk(t, os.Remove(at(r, "sock"))) },
			want: []string{"/sock: only in a"}},
		{name: "hard link broken into two equal files", tweak: func(t *testing.T, r string) {
			chk(t, os.Remove(at(r, "hard2")))
			chk(t, os.WriteFile(at(r, "hard2"), []byte("same"), 0o644))
		}, want: []string{"/hard1: hard link group /hard1 != (none)", "/hard2: hard link group /hard1 != (none)"}},
	}
	base := buildTree(t, nil, nil)
	a, err := Snapshot(base, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var tweak, post func(string)
			if tc.tweak != nil {
				tweak = func(r string) { tc.tweak(t, r) }
			}
			if tc.post != nil {
				post = func(r string) { tc.post(t, r) }
			}
			b, err := Snapshot(buildTree(t, tweak, post), Options{})
			if err != nil {
				t.Fatal(err)
			}
			if got := Diff(a, b); !slices.Equal(got, tc.want) {
				t.Errorf("Diff:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestOptionsIgnoreWhatTheySay(t *testing.T) {
	at := func(root, p string) string { return filepath.Join(root, p) }
	tests := []struct {
		name string
		opts Options
		post func(t *testing.T, root string)
		want []string // with opts; the change must show without them
	}{
		{name: "root mtime", opts: Options{IgnoreRootMtime: true},
			post: func(t *testing.T, r string) { setMtime(t, r, 1, 0) }},
		{name: "root mtime option leaves other dirs alone", opts: Options{IgnoreRootMtime: true},
			post: func(t *testing.T, r string) { setMtime(t, at(r, "dir"), 1, 0) },
			want: []string{"/dir: mtime 1700000010.123456789 != 1.000000000"}},
		{name: "dir mtimes", opts: Options{IgnoreDirMtimes: true},
			post: func(t *testing.T, r string) { setMtime(t, at(r, "dir"), 1, 0); setMtime(t, r, 1, 0) }},
		{name: "dir mtimes option leaves files alone", opts: Options{IgnoreDirMtimes: true},
			post: func(t *testing.T, r string) { setMtime(t, at(r, "exec"), 1, 0) },
			want: []string{"/exec: mtime 1700000001.123456789 != 1.000000000"}},
		{name: "all mtimes", opts: Options{IgnoreMtimes: true},
			post: func(t *testing.T, r string) { setMtime(t, at(r, "exec"), 1, 0); setMtime(t, at(r, "link"), 1, 0) }},
		{name: "owners", opts: Options{IgnoreOwners: true},
			post: func(t *testing.T, r string) { chk(t, os.Lchown(at(r, "dir/file"), 3, 4)) }},
		{name: "xattr prefix", opts: Options{IgnoreXattrPrefixes: []string{"trusted."}},
			post: func(t *testing.T, r string) { chk(t, unix.Lsetxattr(at(r, "exec"), "trusted.selinux", []byte("z"), 0)) }},
		{name: "xattr prefix leaves other xattrs alone", opts: Options{IgnoreXattrPrefixes: []string{"trusted."}},
			post: func(t *testing.T, r string) { chk(t, unix.Lsetxattr(at(r, "exec"), "user.b", []byte("z"), 0)) },
			want: []string{"/exec: xattr user.b only in b"}},
	}
	base := buildTree(t, nil, nil)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			changed := buildTree(t, nil, func(r string) { tc.post(t, r) })
			plainA, _ := Snapshot(base, Options{})
			plainB, _ := Snapshot(changed, Options{})
			if len(Diff(plainA, plainB)) == 0 {
				t.Fatal("the change is invisible even without options; the test proves nothing")
			}
			a, err := Snapshot(base, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			b, err := Snapshot(changed, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if got := Diff(a, b); !slices.Equal(got, tc.want) {
				t.Errorf("Diff with %+v:\n got %q\nwant %q", tc.opts, got, tc.want)
			}
			if got := Diff(Normalize(plainA, tc.opts), Normalize(plainB, tc.opts)); !slices.Equal(got, tc.want) {
				t.Errorf("Diff after Normalize:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestSnapshotRejectsNonDirectoryRoot(t *testing.T) {
	f := filepath.Join(t.TempDir(), "f")
	chk(t, os.WriteFile(f, nil, 0o644))
	if _, err := Snapshot(f, Options{}); err == nil {
		t.Fatal("Snapshot of a regular file succeeded")
	}
	if _, err := Snapshot(filepath.Join(t.TempDir(), "missing"), Options{}); err == nil {
		t.Fatal("Snapshot of a missing path succeeded")
	}
}

func TestSnapshotDoesNotFollowSymlinkedDirs(t *testing.T) {
	outside := t.TempDir()
	chk(t, os.WriteFile(filepath.Join(outside, "secret"), []byte("x"), 0o644))
	root := t.TempDir()
	chk(t, os.Symlink(outside, filepath.Join(root, "escape")))
	m, err := Snapshot(root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := m["/escape/secret"]; ok || len(m) != 2 {
		t.Fatalf("snapshot followed a symlink: %v", m)
	}
}

func chk(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func appendTo(t *testing.T, p, s string) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	chk(t, err)
	_, err = f.WriteString(s)
	chk(t, err)
	chk(t, f.Close())
}
