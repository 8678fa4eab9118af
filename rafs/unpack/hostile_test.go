package unpack

import (
	"bytes"
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dfnydus/dfnydus/rafs"
	"golang.org/x/sys/unix"
)

// Hand-built nodes: unlike Node.AddChild these keep duplicate names, which is what a hostile
// decoder could hand us.
func dirN(name string, kids ...*rafs.Node) *rafs.Node {
	return withKids(&rafs.Node{Name: name, Inode: &rafs.Inode{Mode: rafs.SIFDIR | 0o755}}, kids...)
}

func withKids(n *rafs.Node, kids ...*rafs.Node) *rafs.Node {
	for _, k := range kids {
		if k != nil {
			k.Parent = n
		}
		n.Children = append(n.Children, k)
	}
	return n
}

func symN(name, target string) *rafs.Node {
	return &rafs.Node{Name: name, Inode: &rafs.Inode{Mode: rafs.SIFLNK | 0o777, Symlink: target, Size: uint64(len(target))}}
}

func inoN(name string, ino *rafs.Inode) *rafs.Node { return &rafs.Node{Name: name, Inode: ino} }

// hostileSrc serves the one chunk that hostile file inodes point at ("pwned!!!").
var hostileSrc, hostileDigest = func() (*memReader, rafs.Digest) {
	m := newMemReader()
	return m, m.add([]byte("pwned!!!"))
}()

func fileN(name string) *rafs.Node {
	return inoN(name, &rafs.Inode{Mode: rafs.SIFREG | 0o644, Size: 8,
		Chunks: []rafs.Chunk{{Digest: hostileDigest, UncompressedSize: 8}}})
}

func chunked(size uint64, chunks ...rafs.Chunk) *rafs.Inode {
	for i := range chunks {
		chunks[i].Digest = hostileDigest
	}
	return &rafs.Inode{Mode: rafs.SIFREG | 0o644, Size: size, Chunks: chunks}
}

func imageOf(root *rafs.Node) *rafs.Image {
	return &rafs.Image{Version: 6, Root: root, Blobs: []*rafs.Blob{{ID: "blob0"}}}
}

func hostileImages(sentinel string) []struct {
	name string
	img  *rafs.Image
	want string
} {
	sharedDir := &rafs.Inode{Mode: rafs.SIFDIR | 0o755}
	loop := dirN("r")
	withKids(loop, dirN("d", loop))
	shared := fileN("twice")
	deep := dirN("")
	for n, i := deep, 0; i < 1400; i++ { // 1400 * len("/abc") > 4095
		c := dirN("abc")
		withKids(n, c)
		n = c
	}
	bigXattr := fileN("f")
	bigXattr.Inode.Xattrs = []rafs.Xattr{{Name: "user.big", Value: make([]byte, 1<<16+1)}}
	return []struct {
		name string
		img  *rafs.Image
		want string
	}{
		{"name climbing out", imageOf(dirN("", fileN("../escape"))), `"../escape" contains '/'`},
		{"name climbing out from a subdirectory", imageOf(dirN("", dirN("d", fileN("../../escape")))), `unpack: /d: corrupt rafs data: entry name "../../escape" contains '/'`},
		{"name ..", imageOf(dirN("", dirN("..", fileN("f")))), `entry named ".."`},
		{"name .", imageOf(dirN("", fileN("."))), `entry named "."`},
		{"empty name", imageOf(dirN("", fileN(""))), "empty entry name"},
		{"name with a slash", imageOf(dirN("", dirN("a"), fileN("a/b"))), `"a/b" contains '/'`},
		{"absolute name", imageOf(dirN("", fileN(sentinel+"/x"))), "contains '/'"},
		{"name with NUL", imageOf(dirN("", fileN("a\x00b"))), "contains '/' or NUL"},
		{"name longer than NAME_MAX", imageOf(dirN("", fileN(strings.Repeat("n", 256)))), "256 bytes, more than 255"},
		{"path longer than PATH_MAX", imageOf(deep), "path longer than 4095 bytes"},
		{"symlink to a dir outside, then a dir of the same name", imageOf(dirN("", symN("a", sentinel), dirN("a", fileN("f")))), `two entries named "a"`},
		{"relative symlink out, then a file of the same name", imageOf(dirN("", symN("a", "../sentinel/f"), fileN("a"))), `two entries named "a"`},
		{"hard link to a directory", imageOf(dirN("", inoN("d", sharedDir), inoN("e", sharedDir))), "unpack: /e: corrupt rafs data: hard link to directory /d"},
		{"directory cycle", imageOf(loop), "node appears twice"},
		{"one node in two directories", imageOf(dirN("", dirN("a", shared), dirN("b", shared))), "unpack: /b/twice: corrupt rafs data: node appears twice"},
		{"nil child", imageOf(dirN("", nil)), "nil child"},
		{"node without inode", imageOf(dirN("", &rafs.Node{Name: "x"})), "node has no inode"},
		{"no root", &rafs.Image{}, "image has no root"},
		{"root is a file", imageOf(fileN("")), "root is not a directory"},
		{"file with children", imageOf(dirN("", withKids(fileN("f"), fileN("g")))), "non-directory"},
		{"unknown file type", imageOf(dirN("", inoN("x", &rafs.Inode{Mode: 0o644}))), "unknown file type"},
		{"absurd size", imageOf(dirN("", inoN("f", chunked(1<<62)))), "file size 4611686018427387904 exceeds the limit"},
		{"maximal size", imageOf(dirN("", inoN("f", chunked(math.MaxUint64)))), "exceeds the limit"},
		{"chunk past the end", imageOf(dirN("", inoN("f", chunked(4, rafs.Chunk{UncompressedSize: 8})))), "chunk 0 at offset 0 size 8 does not fit in the file's 4 bytes"},
		{"chunk offset wrapping around", imageOf(dirN("", inoN("f", chunked(1<<20, rafs.Chunk{FileOffset: math.MaxUint64 - 3, UncompressedSize: 8})))), "does not fit"},
		{"chunk size wrapping around", imageOf(dirN("", inoN("f", chunked(1<<20, rafs.Chunk{FileOffset: 1<<20 - 4, UncompressedSize: 8})))), "does not fit"},
		{"overlapping chunks", imageOf(dirN("", inoN("f", chunked(16, rafs.Chunk{UncompressedSize: 8}, rafs.Chunk{FileOffset: 4, UncompressedSize: 8})))), "chunk 1 at offset 4 overlaps the previous chunk ending at 8"},
		{"chunks out of order", imageOf(dirN("", inoN("f", chunked(16, rafs.Chunk{FileOffset: 8, UncompressedSize: 8}, rafs.Chunk{UncompressedSize: 8})))), "overlaps"},
		{"empty chunk", imageOf(dirN("", inoN("f", chunked(16, rafs.Chunk{})))), "uncompressed size 0"},
		{"chunk bigger than the maximum", imageOf(dirN("", inoN("f", chunked(1<<30, rafs.Chunk{UncompressedSize: 1<<24 + 1})))), "outside (0, 16777216]"},
		{"missing blob", imageOf(dirN("", inoN("f", chunked(8, rafs.Chunk{BlobIndex: 1, UncompressedSize: 8})))), "blob index 1 out of range (1 blobs)"},
		{"nanoseconds out of range", imageOf(dirN("", inoN("f", &rafs.Inode{Mode: rafs.SIFREG, MtimeNsec: 1e9}))), "mtime 0.1000000000 out of range"},
		{"mtime beyond int64", imageOf(dirN("", inoN("f", &rafs.Inode{Mode: rafs.SIFREG, Mtime: math.MaxUint64}))), "out of range"},
		{"owner -1", imageOf(dirN("", inoN("f", &rafs.Inode{Mode: rafs.SIFREG, UID: math.MaxUint32}))), "owner 4294967295:0 is not a valid uid:gid"},
		{"group -1", imageOf(dirN("", inoN("f", &rafs.Inode{Mode: rafs.SIFREG, GID: math.MaxUint32}))), "not a valid uid:gid"},
		{"device number beyond 32 bits", imageOf(dirN("", inoN("c", &rafs.Inode{Mode: rafs.SIFCHR, Rdev: unix.Mkdev(4096, 1)}))), "device number 0x100000000001 does not fit in 32 bits"},
		{"empty symlink target", imageOf(dirN("", symN("l", ""))), "symlink target"},
		{"symlink target with NUL", imageOf(dirN("", symN("l", "a\x00b"))), "symlink target"},
		{"empty xattr name", imageOf(dirN("", inoN("f", &rafs.Inode{Mode: rafs.SIFREG, Xattrs: []rafs.Xattr{{}}}))), "xattr name"},
		{"xattr value over 64 KiB", imageOf(dirN("", bigXattr)), "user.big value is 65537 bytes"},
	}
}

// TestHostileImagesAreRejectedBeforeAnyWrite: every malformed tree fails validation with an error
// naming the problem, before the output directory is even created, and nothing appears beside it.
func TestHostileImagesAreRejectedBeforeAnyWrite(t *testing.T) {
	base := t.TempDir()
	sentinel := filepath.Join(base, "sentinel")
	if err := os.Mkdir(sentinel, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range hostileImages(sentinel) {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(base, "out")
			err := ToDir(context.Background(), tc.img, hostileSrc, out, Options{})
			if !errors.Is(err, rafs.ErrCorrupt) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ToDir error = %v, want ErrCorrupt containing %q", err, tc.want)
			}
			if _, err := os.Lstat(out); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("output directory exists after a rejected image (%v)", err)
				os.RemoveAll(out)
			}
			var buf bytes.Buffer
			err = ToTar(context.Background(), tc.img, hostileSrc, &buf, Options{})
			if !errors.Is(err, rafs.ErrCorrupt) || !strings.Contains(err.Error(), tc.want) || buf.Len() > 0 {
				t.Errorf("ToTar error = %v after %d bytes, want ErrCorrupt containing %q before any byte", err, buf.Len(), tc.want)
			}
			assertEmpty(t, sentinel)
			assertEntries(t, base, "sentinel")
		})
	}
}

func TestMaxFileSizeOption(t *testing.T) {
	img := imageOf(dirN("", inoN("f", chunked(1<<20))))
	if err := ToTar(context.Background(), img, hostileSrc, discard{}, Options{MaxFileSize: 1<<20 - 1}); !errors.Is(err, rafs.ErrCorrupt) {
		t.Fatalf("1 MiB file under a 1 MiB-1 limit: error %v, want ErrCorrupt", err)
	}
	if err := ToTar(context.Background(), img, hostileSrc, discard{}, Options{MaxFileSize: 1 << 20}); err != nil {
		t.Fatalf("1 MiB file under a 1 MiB limit: %v", err)
	}
}

// TestLimitsAreInclusive: the largest names, targets and values the kernel allows are accepted.
func TestLimitsAreInclusive(t *testing.T) {
	requireRoot(t)
	long := dirN("")
	n := long
	for range 20 { // "/" + 200 bytes, 20 times: 4020 bytes
		c := dirN(strings.Repeat("d", 200))
		withKids(n, c)
		n = c
	}
	withKids(n, fileN(strings.Repeat("f", pathMax-4020-1))) // a path of exactly 4095 bytes
	f := fileN(strings.Repeat("x", 255))
	f.Inode.Xattrs = []rafs.Xattr{{Name: "user." + strings.Repeat("x", 250), Value: make([]byte, 1000)}}
	withKids(long, f, symN("l", strings.Repeat("t", pathMax)))
	if err := ToDir(context.Background(), imageOf(long), hostileSrc, t.TempDir(), Options{}); err != nil {
		t.Fatal(err)
	}
}

func assertEmpty(t *testing.T, dir string) {
	t.Helper()
	names, err := os.ReadDir(dir)
	if err != nil || len(names) > 0 {
		t.Fatalf("%s should be empty: %v %v", dir, names, err)
	}
}

// assertEntries checks that dir holds exactly the given names.
func assertEntries(t *testing.T, dir string, want ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("%s holds %v, want %v", dir, got, want)
	}
}

// runPlan writes an already-built plan, skipping validation, to exercise the writer's own guards.
func runPlan(t *testing.T, p *plan, out string) error {
	t.Helper()
	root, err := openOut(out)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	f := startFetch(context.Background(), p, hostileSrc, 2)
	defer f.stop()
	w := &dirWriter{p: p, rootFD: int(root.Fd()), fetch: f}
	return w.run(context.Background())
}

// TestWriterNeverFollowsSymlinks: even if a hostile tree slipped past validation, the writer's
// O_NOFOLLOW / O_EXCL / *at discipline keeps every write inside out. Each case builds a valid plan
// and then corrupts it the way a validation bug would.
func TestWriterNeverFollowsSymlinks(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		name    string
		root    func(sentinel string) *rafs.Node
		corrupt func(p *plan) // applied to the validated plan
		want    string
	}{
		{
			name: "directory named like an earlier symlink to outside",
			root: func(s string) *rafs.Node { return dirN("", symN("a", s), dirN("b", fileN("f"))) },
			corrupt: func(p *plan) {
				p.entries[2].name = "a"
			},
			want: "mkdir: file exists",
		},
		{
			name:    "file named like an earlier symlink to outside",
			root:    func(s string) *rafs.Node { return dirN("", symN("a", s+"/f"), fileN("b")) },
			corrupt: func(p *plan) { p.entries[2].name = "a" },
			want:    "create: file exists",
		},
		{
			name: "device named like an earlier symlink",
			root: func(s string) *rafs.Node {
				return dirN("", symN("a", s+"/f"), inoN("b", &rafs.Inode{Mode: rafs.SIFIFO | 0o644}))
			},
			corrupt: func(p *plan) { p.entries[2].name = "a" },
			want:    "mknod: file exists",
		},
		{
			name: "hard link whose target path runs through a symlink to outside",
			root: func(s string) *rafs.Node {
				victim := fileN("victim")
				return dirN("", symN("a", s), dirN("d", victim), inoN("h", victim.Inode))
			},
			corrupt: func(p *plan) {
				// entries: / a d d/victim h. Pretend victim lives under the symlink a.
				p.entries[3].parent = 1
			},
			want: "open directory of link target /a/victim: open a: not a directory",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			sentinel := filepath.Join(base, "sentinel")
			if err := os.Mkdir(sentinel, 0o755); err != nil {
				t.Fatal(err)
			}
			victim := filepath.Join(sentinel, "victim")
			if err := os.WriteFile(victim, []byte("outside"), 0o644); err != nil {
				t.Fatal(err)
			}
			p, err := newPlan(imageOf(tc.root(sentinel)), Options{})
			if err != nil {
				t.Fatalf("the uncorrupted tree should be valid: %v", err)
			}
			tc.corrupt(p)
			err = runPlan(t, p, filepath.Join(base, "out"))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want one containing %q", err, tc.want)
			}
			assertEntries(t, sentinel, "victim")
			var st unix.Stat_t
			if err := unix.Stat(victim, &st); err != nil || st.Nlink != 1 || st.Mode&0o7777 != 0o644 {
				t.Fatalf("outside file touched: nlink %d mode %o (%v)", st.Nlink, st.Mode, err)
			}
			if data, _ := os.ReadFile(victim); string(data) != "outside" {
				t.Fatalf("outside file rewritten: %q", data)
			}
		})
	}
}
