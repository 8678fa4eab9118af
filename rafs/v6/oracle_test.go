package v6

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"github.com/dfnydus/dfnydus/rafs"
)

// The tests in this file check Encode's output with tools that know nothing of this package:
// erofs-utils (fsck.erofs, dump.erofs) and the Linux kernel's EROFS driver. The image is
// richSample: its chunks point into uncompressed blob files, which are valid EROFS extra devices.

// writtenSample is richSample encoded to a bootstrap file, with its blobs as files.
type writtenSample struct {
	*sample
	boot  string
	blobs []string
}

func writeSample(t *testing.T) *writtenSample {
	t.Helper()
	s := richSample()
	data, err := Encode(s.img)
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	dir := t.TempDir()
	w := &writtenSample{sample: s, boot: filepath.Join(dir, "image.boot")}
	if err := os.WriteFile(w.boot, data, 0o644); err != nil {
		t.Fatal(err)
	}
	for i, b := range s.blobs {
		p := filepath.Join(dir, s.img.Blobs[i].ID)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		w.blobs = append(w.blobs, p)
	}
	return w
}

func (w *writtenSample) deviceArgs() []string {
	var args []string
	for _, b := range w.blobs {
		args = append(args, "--device="+b)
	}
	return args
}

func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not installed (apt-get install erofs-utils): %v", name, err)
	}
	return p
}

func TestFsckErofsAcceptsEncode(t *testing.T) {
	fsck := needTool(t, "fsck.erofs")
	w := writeSample(t)
	out, err := exec.Command(fsck, append(w.deviceArgs(), w.boot)...).CombinedOutput()
	if err != nil {
		t.Fatalf("fsck.erofs failed: %v\n%s", err, out)
	}
	if lower := strings.ToLower(string(out)); strings.Contains(lower, "err") || strings.Contains(lower, "corrupt") {
		t.Fatalf("fsck.erofs reported problems:\n%s", out)
	}
}

// TestDumpErofsListsEntries compares dump.erofs's directory listings (names, EROFS file types,
// and nids: the names of one inode share a nid) with the model.
func TestDumpErofsListsEntries(t *testing.T) {
	dump := needTool(t, "dump.erofs")
	w := writeSample(t)
	nidOf := map[*rafs.Inode]string{}
	for _, dir := range []string{"/", "/bin", "/etc", "/big", "/mid", "/links", "/dev", "/run", "/data", "/xattr-dir"} {
		out, err := exec.Command(dump, append(w.deviceArgs(), "--ls", "--path="+dir, w.boot)...).CombinedOutput()
		if err != nil {
			t.Fatalf("dump.erofs --ls --path=%s: %v\n%s", dir, err, out)
		}
		n := w.img.Lookup(dir)
		want := map[string]uint8{".": ftDir, "..": ftDir}
		for _, c := range n.Children {
			want[c.Name] = fileType(c.Inode.Mode)
		}
		got := map[string]uint8{}
		listing := false
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) == 3 && f[0] == "NID" {
				listing = true
				continue
			}
			if !listing || len(f) != 3 {
				continue
			}
			typ, err := strconv.Atoi(f[1])
			if err != nil {
				t.Fatalf("dump.erofs line %q: %v", line, err)
			}
			got[f[2]] = uint8(typ)
			if c := n.Child(f[2]); c != nil {
				if prev, ok := nidOf[c.Inode]; ok && prev != f[0] {
					t.Errorf("%s/%s: nid %s, but another name of the inode has nid %s", dir, f[2], f[0], prev)
				}
				nidOf[c.Inode] = f[0]
			}
		}
		if len(got) != len(want) {
			t.Errorf("%s: dump.erofs lists %d entries, model has %d", dir, len(got), len(want))
		}
		for name, typ := range want {
			if got[name] != typ {
				t.Errorf("%s/%s: dump.erofs type %d, want %d", dir, name, got[name], typ)
			}
		}
	}
}

// TestKernelMountsEncode mounts Encode's output with the kernel's EROFS driver, the blobs as its
// extra devices, and checks every file's metadata and content against the model.
func TestKernelMountsEncode(t *testing.T) {
	w := writeSample(t)
	mnt := t.TempDir()
	opts := "device=" + strings.Join(w.blobs, ",device=")
	if err := syscall.Mount(w.boot, mnt, "erofs", syscall.MS_RDONLY, opts); err != nil {
		if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.ENODEV) || errors.Is(err, syscall.ENOTBLK) {
			t.Skipf("cannot mount erofs here (needs root and a kernel with file-backed EROFS): %v", err)
		}
		t.Fatalf("mount erofs: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})

	inos := map[*rafs.Inode]uint64{}
	seen := map[uint64]*rafs.Inode{}
	checked := 0
	err := w.img.Walk(func(p string, n *rafs.Node) error {
		in, full := n.Inode, filepath.Join(mnt, p)
		var st syscall.Stat_t
		if err := syscall.Lstat(full, &st); err != nil {
			t.Errorf("%s: lstat: %v", p, err)
			return nil
		}
		checked++
		check := func(what string, got, want any) {
			if got != want {
				t.Errorf("%s: %s = %v, want %v", p, what, got, want)
			}
		}
		check("mode", st.Mode, in.Mode)
		check("uid", st.Uid, in.UID)
		check("gid", st.Gid, in.GID)
		check("nlink", uint32(st.Nlink), in.Nlink)
		check("size", uint64(st.Size), in.Size)
		check("mtime", st.Mtim.Sec, int64(in.Mtime))
		check("mtime nsec", st.Mtim.Nsec, int64(in.MtimeNsec))
		if in.Type()&os.ModeDevice != 0 {
			check("rdev", st.Rdev, in.Rdev)
		}
		if prev, ok := inos[in]; ok {
			check("st_ino (hard link)", st.Ino, prev)
		} else if other, ok := seen[st.Ino]; ok && other != in {
			t.Errorf("%s: st_ino %d is shared with an unrelated inode", p, st.Ino)
		}
		inos[in], seen[st.Ino] = st.Ino, in

		switch {
		case in.IsReg():
			got, err := os.ReadFile(full)
			if err != nil {
				t.Errorf("%s: read: %v", p, err)
			} else if want := w.contents[in]; want != nil && !bytes.Equal(got, want) {
				t.Errorf("%s: content differs (%d bytes read, want %d)", p, len(got), len(want))
			} else if want == nil && len(got) != int(in.Size) {
				t.Errorf("%s: read %d bytes, want %d", p, len(got), in.Size)
			}
		case in.IsSymlink():
			target, err := os.Readlink(full)
			check("symlink target", target, in.Symlink)
			if err != nil {
				t.Errorf("%s: readlink: %v", p, err)
			}
		case in.IsDir():
			ents, err := os.ReadDir(full)
			if err != nil {
				t.Errorf("%s: readdir: %v", p, err)
				break
			}
			var got, want []string
			for _, e := range ents {
				got = append(got, e.Name())
			}
			for _, c := range n.Children {
				want = append(want, c.Name)
			}
			check("entries", strings.Join(got, "/"), strings.Join(want, "/"))
		}
		checkXattrs(t, p, full, in.Xattrs)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 400 {
		t.Errorf("checked only %d paths", checked)
	}
}

func checkXattrs(t *testing.T, p, full string, want []rafs.Xattr) {
	t.Helper()
	names, err := llistxattr(full)
	if err != nil {
		t.Errorf("%s: llistxattr: %v", p, err)
		return
	}
	var wantNames []string
	for _, x := range want {
		wantNames = append(wantNames, x.Name)
	}
	sort.Strings(names)
	if strings.Join(names, ",") != strings.Join(wantNames, ",") {
		t.Errorf("%s: xattrs %q, want %q", p, names, wantNames)
		return
	}
	for _, x := range want {
		v, err := lgetxattr(full, x.Name)
		if err != nil || !bytes.Equal(v, x.Value) {
			t.Errorf("%s: xattr %s = %q (%v), want %q", p, x.Name, v, err, x.Value)
		}
	}
}

// llistxattr and lgetxattr call the l* xattr syscalls (not following symlinks), which package
// syscall does not wrap.
func llistxattr(path string) ([]string, error) {
	buf, err := xattrCall(syscall.SYS_LLISTXATTR, path, "")
	if err != nil || len(buf) == 0 {
		return nil, err
	}
	return strings.Split(strings.TrimSuffix(string(buf), "\x00"), "\x00"), nil
}

func lgetxattr(path, name string) ([]byte, error) {
	return xattrCall(syscall.SYS_LGETXATTR, path, name)
}

func xattrCall(trap uintptr, path, name string) ([]byte, error) {
	p, err := syscall.BytePtrFromString(path)
	if err != nil {
		return nil, err
	}
	call := func(buf []byte) (int, error) {
		var ptr unsafe.Pointer
		if len(buf) > 0 {
			ptr = unsafe.Pointer(&buf[0])
		}
		var r uintptr
		var errno syscall.Errno
		if trap == syscall.SYS_LLISTXATTR {
			r, _, errno = syscall.Syscall(trap, uintptr(unsafe.Pointer(p)), uintptr(ptr), uintptr(len(buf)))
		} else {
			n, err := syscall.BytePtrFromString(name)
			if err != nil {
				return 0, err
			}
			r, _, errno = syscall.Syscall6(trap, uintptr(unsafe.Pointer(p)), uintptr(unsafe.Pointer(n)), uintptr(ptr), uintptr(len(buf)), 0, 0)
		}
		if errno != 0 {
			return 0, errno
		}
		return int(r), nil
	}
	size, err := call(nil)
	if err != nil || size == 0 {
		return []byte{}, err
	}
	buf := make([]byte, size)
	n, err := call(buf)
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}
