package fuse

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"unsafe"

	gofuse "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/sys/unix"

	"github.com/dfnydus/dfnydus/rafs"
)

// getxattr and listxattr follow the syscall contract: a size query returns the size, a buffer
// too small gives ERANGE, a missing attribute gives ENODATA.
func TestXattrSyscallContract(t *testing.T) {
	requireFUSE(t)
	src := filepath.Join(t.TempDir(), "src")
	makeTree(t, src, treeSpec{bigFile: 1, wideDir: 1, deepDirs: 1})
	b := buildImage(t, src, 6, 4096)
	mnt, _ := mountImage(t, b.img, dirReader(t, b.blobDir), DefaultOptions())
	p := filepath.Join(mnt, "hello.txt")
	in := b.img.Lookup("/hello.txt").Inode
	listSize := 0
	for _, x := range in.Xattrs {
		listSize += len(x.Name) + 1
	}

	for _, tc := range []struct {
		name    string
		call    func() (int, error)
		wantN   int
		wantErr error
	}{
		{"getxattr size query", func() (int, error) { return unix.Getxattr(p, "user.long", nil) }, 3000, nil},
		{"getxattr exact buffer", func() (int, error) { return unix.Getxattr(p, "user.long", make([]byte, 3000)) }, 3000, nil},
		{"getxattr small buffer", func() (int, error) { return unix.Getxattr(p, "user.long", make([]byte, 2999)) }, -1, unix.ERANGE},
		{"getxattr empty value", func() (int, error) { return unix.Getxattr(p, "user.empty", make([]byte, 10)) }, 0, nil},
		{"getxattr missing", func() (int, error) { return unix.Getxattr(p, "user.missing", make([]byte, 10)) }, -1, unix.ENODATA},
		{"getxattr none on a dir without xattrs", func() (int, error) { return unix.Getxattr(filepath.Join(mnt, "links"), "user.x", nil) }, -1, unix.ENODATA},
		{"listxattr size query", func() (int, error) { return unix.Listxattr(p, nil) }, listSize, nil},
		{"listxattr small buffer", func() (int, error) { return unix.Listxattr(p, make([]byte, listSize-1)) }, -1, unix.ERANGE},
		{"listxattr of a symlink", func() (int, error) { return unix.Llistxattr(filepath.Join(mnt, "links/rel"), make([]byte, 100)) }, 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := tc.call()
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Errorf("got %d, %v; want %v", n, err, tc.wantErr)
				}
				return
			}
			if err != nil || n != tc.wantN {
				t.Errorf("got %d, %v; want %d", n, err, tc.wantN)
			}
		})
	}
	buf := make([]byte, 3000)
	if _, err := unix.Getxattr(p, "trusted.bin", buf); err != nil || !bytes.Equal(buf[:4], []byte{0, 1, 2, 0xff}) {
		t.Errorf("trusted.bin: %x, %v", buf[:4], err)
	}
}

// A directory lists ".", ".." (with the right inode numbers) and its entries in name order, and
// rewinding a half-read listing starts it over.
func TestReaddir(t *testing.T) {
	requireFUSE(t)
	src := filepath.Join(t.TempDir(), "src")
	makeTree(t, src, treeSpec{bigFile: 1, wideDir: 5000, deepDirs: 1})
	b := buildImage(t, src, 6, 4096)
	mnt, _ := mountImage(t, b.img, dirReader(t, b.blobDir), DefaultOptions())
	plain := mountNewRoot(t, b.img, dirReader(t, b.blobDir), func(o *gofuse.Options) { o.DisableReadDirPlus = true })
	wide := b.img.Lookup("/wide")
	for _, m := range []string{mnt, plain} { // READDIRPLUS, READDIR
		checkWideListing(t, wide, rawDirents(t, filepath.Join(m, "wide")))
	}

	f, err := os.Open(filepath.Join(mnt, "wide"))

	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	first, err := f.Readdirnames(10)
	if err != nil || len(first) != 10 {
		t.Fatalf("first batch: %v, %v", first, err)
	}
	if _, err := f.Seek(0, 0); err != nil {
		t.Fatal(err)
	}
	all, err := f.Readdirnames(-1)
	if err != nil || len(all) != len(wide.Children) || all[0] != first[0] {
		t.Errorf("after rewind: %d names (want %d), first %q, err %v", len(all), len(wide.Children), all[0], err)
	}
}

// checkWideListing compares a getdents listing of /wide with the image.
func checkWideListing(t *testing.T, wide *rafs.Node, got []dirent) {
	t.Helper()
	if len(got) != len(wide.Children)+2 {
		t.Fatalf("%d entries, want %d", len(got), len(wide.Children)+2)
	}
	if got[0].name != "." || got[0].ino != wide.Inode.Ino || got[1].name != ".." || got[1].ino != 1 {
		t.Errorf("dot entries %+v %+v, want . ino %d and .. ino 1", got[0], got[1], wide.Inode.Ino)
	}
	for i, c := range wide.Children {
		if e := got[i+2]; e.name != c.Name || e.ino != c.Inode.Ino || e.typ != unix.DT_REG {
			t.Fatalf("entry %d: %+v, want %s ino %d", i, e, c.Name, c.Inode.Ino)
		}
	}
}

type dirent struct {
	name string
	ino  uint64
	typ  uint8
}

// rawDirents lists dir with getdents64, keeping "." and "..".
func rawDirents(t *testing.T, dir string) []dirent {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	var out []dirent
	buf := make([]byte, 32<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return out
		}
		for off := 0; off < n; {
			d := (*unix.Dirent)(unsafe.Pointer(&buf[off]))
			name := d.Name[:]
			l := 0
			for l < len(name) && name[l] != 0 {
				l++
			}
			b := make([]byte, l)
			for i := range l {
				b[i] = byte(name[i])
			}
			out = append(out, dirent{name: string(b), ino: d.Ino, typ: d.Type})
			off += int(d.Reclen)
		}
	}
}

// Images that cannot be served are refused by Mount with an error wrapping rafs.ErrCorrupt; NewRoot
// serves them as a root on which everything fails with EIO.
func TestUnservableImages(t *testing.T) {
	requireFUSE(t)
	dir := func(ino uint64) *rafs.Inode { return &rafs.Inode{Ino: ino, Mode: rafs.SIFDIR | 0o755, Nlink: 2} }
	file := func(ino uint64) *rafs.Inode { return &rafs.Inode{Ino: ino, Mode: rafs.SIFREG | 0o644, Nlink: 1} }
	withChildren := func(root *rafs.Inode, kids ...*rafs.Node) *rafs.Image {
		r := &rafs.Node{Inode: root}
		for _, k := range kids {
			k.Parent = r
		}
		r.Children = kids
		return &rafs.Image{Root: r}
	}
	sharedDir := dir(5)
	for _, tc := range []struct {
		name string
		img  *rafs.Image
	}{
		{"no image", nil},
		{"no root", &rafs.Image{}},
		{"root is a file", withChildren(file(1))},
		{"unsorted entries", withChildren(dir(1), &rafs.Node{Name: "b", Inode: file(2)}, &rafs.Node{Name: "a", Inode: file(3)})},
		{"duplicate entries", withChildren(dir(1), &rafs.Node{Name: "a", Inode: file(2)}, &rafs.Node{Name: "a", Inode: file(3)})},
		{"entry named ..", withChildren(dir(1), &rafs.Node{Name: "..", Inode: file(2)})},
		{"entry name with a slash", withChildren(dir(1), &rafs.Node{Name: "a/b", Inode: file(2)})},
		{"entry without inode", withChildren(dir(1), &rafs.Node{Name: "a"})},
		{"hard-linked directory", withChildren(dir(1), &rafs.Node{Name: "a", Inode: sharedDir}, &rafs.Node{Name: "b", Inode: sharedDir})},
		{"file with entries", withChildren(dir(1), &rafs.Node{Name: "a", Inode: file(2), Children: []*rafs.Node{{Name: "x", Inode: file(3)}}})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mnt := filepath.Join(t.TempDir(), "mnt")
			if err := os.Mkdir(mnt, 0o755); err != nil {
				t.Fatal(err)
			}
			srv, err := Mount(mnt, tc.img, memReader{}, DefaultOptions())
			if err == nil {
				srv.Unmount()
				t.Fatal("Mount accepted the image")
			}
			if !errors.Is(err, rafs.ErrCorrupt) {
				t.Errorf("error %v does not wrap rafs.ErrCorrupt", err)
			}

			broken := mountNewRoot(t, tc.img, memReader{}, withoutRO)
			if _, err := os.ReadDir(broken); !errors.Is(err, unix.EIO) {
				t.Errorf("NewRoot of the image: readdir gave %v, want EIO", err)
			}
		})
	}
}

// Inode numbers are the image's, except the root (always 1) and numbers that are zero or taken
// by another inode, which are renumbered above the largest in the same order on every mount.
func TestInodeNumbers(t *testing.T) {
	mk := func(inos ...uint64) (*rafs.Image, []*rafs.Inode) {
		root := &rafs.Node{Inode: &rafs.Inode{Ino: inos[0], Mode: rafs.SIFDIR | 0o755}}
		var ins []*rafs.Inode
		for i, ino := range inos[1:] {
			in := &rafs.Inode{Ino: ino, Mode: rafs.SIFREG | 0o644}
			ins = append(ins, in)
			root.AddChild(&rafs.Node{Name: string(rune('a' + i)), Inode: in})
		}
		return &rafs.Image{Root: root}, ins
	}
	for _, tc := range []struct {
		name string
		inos []uint64 // root first
		want []uint64 // children's numbers on the mount
	}{
		{"distinct", []uint64{1, 2, 3, 4}, []uint64{2, 3, 4}},
		{"root not 1", []uint64{7, 2, 3}, []uint64{2, 3}},
		{"child takes 1", []uint64{7, 1, 3}, []uint64{4, 3}},
		{"clash", []uint64{1, 5, 5, 6}, []uint64{5, 7, 6}},
		{"zero", []uint64{1, 0, 2}, []uint64{3, 2}},
		{"max", []uint64{1, ^uint64(0), 2}, []uint64{3, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img, ins := mk(tc.inos...)
			fs, err := newFilesystem(img, memReader{}, DefaultOptions())
			if err != nil {
				t.Fatal(err)
			}
			if got := fs.ino(img.Root.Inode); got != 1 {
				t.Errorf("root is %d, want 1", got)
			}
			for i, in := range ins {
				if got := fs.ino(in); got != tc.want[i] {
					t.Errorf("child %d (image ino %d) is %d, want %d", i, in.Ino, got, tc.want[i])
				}
			}
		})
	}
}

// A read's error becomes EINTR only when the read itself was interrupted; reader failures and
// reads during unmount give EIO.
func TestReadErrno(t *testing.T) {
	img, _, _ := modelImage(4096, []modelChunk{{off: 0, size: 4096}})
	for _, tc := range []struct {
		name      string
		reader    rafs.ChunkReader
		interrupt bool
		unmount   bool
		want      syscall.Errno
	}{
		{"reader fails", &failingReader{r: memReader{}, bad: map[rafs.Digest]bool{{}: true}}, false, false, syscall.EIO},
		{"caller interrupted", newBlockingReader(), true, false, syscall.EINTR},
		{"unmounting", newBlockingReader(), false, true, syscall.EIO},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs, err := newFilesystem(img, tc.reader, DefaultOptions())
			if err != nil {
				t.Fatal(err)
			}
			cancel := make(chan struct{})
			ctx := &fuse.Context{Cancel: cancel}
			if tc.interrupt {
				close(cancel)
			}
			if tc.unmount {
				fs.close()
			}
			f := &fileHandle{n: &node{fs: fs, rn: img.Root.Children[0]}}
			if _, errno := f.Read(ctx, make([]byte, 4096), 0); errno != tc.want {
				t.Errorf("got %v, want %v", errno, tc.want)
			}
		})
	}
}

// Reads are counted in the registry's dfnydus_fuse_* series; mounts can share a registry.
func TestMetrics(t *testing.T) {
	requireFUSE(t)
	img, mem, want := modelImage(10000, []modelChunk{{off: 0, size: 4096}, {off: 4096, size: 4096}})
	reg := prometheus.NewRegistry()
	opts := DefaultOptions()
	opts.Metrics = reg
	mnt1, _ := mountImage(t, img, mem, opts)
	mnt2, _ := mountImage(t, img, &failingReader{r: mem, bad: map[rafs.Digest]bool{img.Root.Children[0].Inode.Chunks[0].Digest: true}}, opts)
	if got, err := os.ReadFile(filepath.Join(mnt1, "f")); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read: %v", err)
	}
	if _, err := os.ReadFile(filepath.Join(mnt2, "f")); !errors.Is(err, unix.EIO) {
		t.Fatalf("read of a failing chunk: %v", err)
	}
	got := map[string]float64{}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				name += "{" + l.GetName() + "=" + l.GetValue() + "}"
			}
			got[name] = value(m)
		}
	}
	for _, tc := range []struct {
		series string
		check  func(float64) bool
	}{
		{"dfnydus_fuse_reads_total", func(v float64) bool { return v >= 2 }},
		{"dfnydus_fuse_read_bytes_total", func(v float64) bool { return v == float64(len(want)) }},
		{"dfnydus_fuse_read_seconds", func(v float64) bool { return v >= 2 }},
		{"dfnydus_fuse_read_errors_total{kind=io}", func(v float64) bool { return v >= 1 }},
		{"dfnydus_fuse_chunk_fetches_total", func(v float64) bool { return v >= 3 }},
	} {
		if v, ok := got[tc.series]; !ok || !tc.check(v) {
			t.Errorf("%s = %v (present %v)", tc.series, v, ok)
		}
	}
}

// value is a counter's value or a histogram's sample count.
func value(m *dto.Metric) float64 {
	if c := m.GetCounter(); c != nil {
		return c.GetValue()
	}
	return float64(m.GetHistogram().GetSampleCount())
}
