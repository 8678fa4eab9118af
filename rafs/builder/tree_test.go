package builder

import (
	"sort"
	"strings"
	"testing"

	"github.com/dfnydus/dfnydus/rafs"
)

func dir(p string) *entry  { return &entry{path: p, mode: rafs.SIFDIR | 0o755} }
func file(p string) *entry { return &entry{path: p, mode: rafs.SIFREG | 0o644} }
func link(p, target string) *entry {
	return &entry{path: p, hardlink: target}
}

// paths lists the tree as "path" or "path=ino" for shared inodes, sorted.
func paths(t *tree) string {
	var out []string
	var walk func(n *rafs.Node, p string)
	walk = func(n *rafs.Node, p string) {
		out = append(out, p)
		for _, c := range n.Children {
			walk(c, strings.TrimSuffix(p, "/")+"/"+c.Name)
		}
	}
	walk(t.root, "/")
	sort.Strings(out)
	return strings.Join(out, " ")
}

// Overlay rules, one scenario per row: layers of entries, lowest first, and the merged tree.
func TestTreeOverlayRules(t *testing.T) {
	tests := []struct {
		name   string
		layers [][]*entry
		want   string
	}{
		{"missing parents are created", [][]*entry{{file("/a/b/c")}}, "/ /a /a/b /a/b/c"},
		{"upper file replaces lower file", [][]*entry{{file("/f")}, {file("/f")}}, "/ /f"},
		{"whiteout removes a lower file", [][]*entry{{file("/d/f"), file("/d/g")}, {file("/d/.wh.f")}}, "/ /d /d/g"},
		{"whiteout removes a lower directory tree", [][]*entry{{file("/d/x/y")}, {file("/d/.wh.x")}}, "/ /d"},
		{"whiteout of a missing name is harmless", [][]*entry{{dir("/d")}, {file("/d/.wh.nothing")}}, "/ /d"},
		{"opaque hides lower children, keeps this layer's",
			[][]*entry{{file("/d/old"), file("/d/sub/x")}, {file("/d/new"), file("/d/.wh..wh..opq"), file("/d/later")}},
			"/ /d /d/later /d/new"},
		{"opaque in the lowest layer changes nothing", [][]*entry{{file("/d/a"), file("/d/.wh..wh..opq")}}, "/ /d /d/a"},
		{"directory over directory merges", [][]*entry{{file("/d/a")}, {dir("/d"), file("/d/b")}}, "/ /d /d/a /d/b"},
		{"file replaces a directory and its subtree", [][]*entry{{file("/d/a")}, {file("/d")}}, "/ /d"},
		{"directory replaces a file", [][]*entry{{file("/d")}, {dir("/d"), file("/d/a")}}, "/ /d /d/a"},
		{"whiteouts never reach the image", [][]*entry{{file("/.wh.x"), dir("/d"), file("/d/.wh..wh..opq")}}, "/ /d"},
		{"whiteout under a missing directory is a no-op", [][]*entry{{file("/nodir/.wh..wh..opq"), file("/nodir2/.wh.x")}}, "/"},
		{"whiteout under a file is a no-op (umoci writes these)", [][]*entry{{file("/d/x")}, {file("/d"), file("/d/.wh.x")}}, "/ /d"},
		{"hard link to a lower layer file", [][]*entry{{file("/a")}, {link("/b", "/a")}}, "/ /a /b"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTree()
			for i, l := range tc.layers {
				for _, e := range l {
					if _, err := tr.apply(e, i); err != nil {
						t.Fatalf("apply %s: %v", e.path, err)
					}
				}
			}
			if got := paths(tr); got != tc.want {
				t.Errorf("tree = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestTreeErrors(t *testing.T) {
	tests := []struct {
		name    string
		entries []*entry
		want    string
	}{
		{"hard link to nothing", []*entry{link("/b", "/a")}, "does not exist"},
		{"hard link to a directory", []*entry{dir("/d"), link("/b", "/d")}, "is a directory"},
		{"child of a regular file", []*entry{file("/f"), file("/f/x")}, "not a directory"},
		{"root replaced by a file", []*entry{file("/")}, "root must be a directory"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTree()
			var err error
			for _, e := range tc.entries {
				if _, err = tr.apply(e, 0); err != nil {
					break
				}
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestTreeLinkCounts(t *testing.T) {
	tr := newTree()
	for _, e := range []*entry{dir("/d"), dir("/d/s1"), dir("/d/s2"), file("/d/f"), link("/d/g", "/d/f"), link("/h", "/d/f")} {
		if _, err := tr.apply(e, 0); err != nil {
			t.Fatal(err)
		}
	}
	tr.finish()
	for p, want := range map[string]uint32{"/": 3, "/d": 4, "/d/s1": 2, "/d/f": 3, "/h": 3} {
		n := tr.lookup(p)
		if n == nil {
			t.Fatalf("%s missing", p)
		}
		if n.Inode.Nlink != want {
			t.Errorf("%s nlink = %d, want %d", p, n.Inode.Nlink, want)
		}
	}
	if tr.lookup("/d/g").Inode != tr.lookup("/d/f").Inode {
		t.Error("hard links do not share an inode")
	}
}
