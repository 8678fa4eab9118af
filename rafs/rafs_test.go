package rafs

import (
	"errors"
	"io/fs"
	"strings"
	"testing"
)

func TestNodeChildrenStaySorted(t *testing.T) {
	root := &Node{Inode: &Inode{Mode: SIFDIR | 0o755}}
	for _, n := range []string{"m", "a", "z", "b", "m"} {
		root.AddChild(&Node{Name: n, Inode: &Inode{Mode: SIFREG}})
	}
	var names []string
	for _, c := range root.Children {
		names = append(names, c.Name)
	}
	if got := strings.Join(names, ","); got != "a,b,m,z" {
		t.Fatalf("children = %s, want a,b,m,z (sorted, replaced not duplicated)", got)
	}
	root.RemoveChild("b")
	root.RemoveChild("nope")
	if root.Child("b") != nil || root.Child("m") == nil || len(root.Children) != 3 {
		t.Errorf("after RemoveChild: %d children", len(root.Children))
	}
}

func TestImageWalkLookupPath(t *testing.T) {
	img := &Image{Root: &Node{Inode: &Inode{Mode: SIFDIR}}}
	d := &Node{Name: "d", Inode: &Inode{Mode: SIFDIR}}
	img.Root.AddChild(d)
	d.AddChild(&Node{Name: "f", Inode: &Inode{Mode: SIFREG}})
	img.Root.AddChild(&Node{Name: "e", Inode: &Inode{Mode: SIFREG}})
	var order []string
	if err := img.Walk(func(p string, n *Node) error {
		order = append(order, p)
		if p != n.Path() {
			t.Errorf("walk path %s != node path %s", p, n.Path())
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(order, " "); got != "/ /d /d/f /e" {
		t.Errorf("walk order %q", got)
	}
	order = nil
	_ = img.Walk(func(p string, n *Node) error {
		order = append(order, p)
		if p == "/d" {
			return fs.SkipDir
		}
		return nil
	})
	if got := strings.Join(order, " "); got != "/ /d /e" {
		t.Errorf("SkipDir walk %q", got)
	}
	for p, want := range map[string]bool{"/d/f": true, "d/f": true, "/d/../e": true, "/x": false, "/d/f/g": false} {
		if got := img.Lookup(p) != nil; got != want {
			t.Errorf("Lookup(%q) found=%v, want %v", p, got, want)
		}
	}
	if err := (&Image{}).Walk(func(string, *Node) error { return nil }); !errors.Is(err, ErrCorrupt) {
		t.Errorf("walk of an image without root: %v", err)
	}
}

func TestFlagsAndNames(t *testing.T) {
	for _, c := range []Compressor{CompressNone, CompressLZ4Block, CompressGzip, CompressZstd} {
		got, err := CompressorFromFlags(c.Flag() | FlagHashBlake3)
		if err != nil || got != c {
			t.Errorf("CompressorFromFlags(%v.Flag()) = %v, %v", c, got, err)
		}
		if p, err := ParseCompressor(c.String()); err != nil || p != c {
			t.Errorf("ParseCompressor(%q) = %v, %v", c.String(), p, err)
		}
	}
	for _, d := range []Digester{DigestBlake3, DigestSHA256} {
		got, err := DigesterFromFlags(d.Flag())
		if err != nil || got != d {
			t.Errorf("DigesterFromFlags(%v.Flag()) = %v, %v", d, got, err)
		}
	}
	if _, err := CompressorFromFlags(0); !errors.Is(err, ErrCorrupt) {
		t.Error("flags without a compressor accepted")
	}
	if _, err := ParseCompressor("brotli"); err == nil {
		t.Error("unknown compressor accepted")
	}
	for n, want := range map[uint64]bool{0x1000: true, 0x100000: true, 0x1000000: true, 0x800: false, 0x2000000: false, 0x3000: false, 0: false} {
		if ValidChunkSize(n) != want {
			t.Errorf("ValidChunkSize(%#x) != %v", n, want)
		}
	}
}
