package builder

import (
	"fmt"
	"path"
	"strings"

	"github.com/dfnydus/dfnydus/rafs"
)

// OCI whiteout names (image-spec layer.md "Whiteouts").
const (
	whiteoutPrefix = ".wh."
	whiteoutOpaque = ".wh..wh..opq"
)

// tree is the image being merged, layer over layer, with overlay semantics: a layer's entries
// replace lower ones, .wh.NAME deletes NAME, .wh..wh..opq hides everything a lower layer put in its
// directory, and whiteout files themselves never reach the image.
type tree struct {
	root    *rafs.Node
	layerOf map[*rafs.Node]int // which layer last wrote each node
	nextIno uint64
}

func newTree() *tree {
	t := &tree{layerOf: map[*rafs.Node]int{}, nextIno: 1}
	t.root = &rafs.Node{Inode: t.newInode(rafs.SIFDIR | 0o755)}
	t.layerOf[t.root] = -1
	return t
}

func (t *tree) newInode(mode uint32) *rafs.Inode {
	ino := &rafs.Inode{Ino: t.nextIno, Mode: mode}
	t.nextIno++
	return ino
}

// lookup returns the node at p or nil.
func (t *tree) lookup(p string) *rafs.Node {
	n := t.root
	for _, part := range strings.Split(strings.Trim(p, "/"), "/") {
		if part == "" {
			continue
		}
		if !n.Inode.IsDir() {
			return nil
		}
		if n = n.Child(part); n == nil {
			return nil
		}
	}
	return n
}

// parentDir returns the directory that holds p, creating missing ancestors (mode 0755, root-owned,
// as runtimes do for a layer that omits them).
func (t *tree) parentDir(p string, layer int) (*rafs.Node, error) {
	n := t.root
	dir := path.Dir(p)
	for _, part := range strings.Split(strings.Trim(dir, "/"), "/") {
		if part == "" {
			continue
		}
		c := n.Child(part)
		if c == nil {
			c = &rafs.Node{Name: part, Inode: t.newInode(rafs.SIFDIR | 0o755)}
			n.AddChild(c)
			t.layerOf[c] = layer
		} else if !c.Inode.IsDir() {
			return nil, fmt.Errorf("entry %s: parent %s is not a directory", p, c.Path())
		}
		n = c
	}
	return n, nil
}

// apply merges one entry of layer into the tree. For regular files it returns the new inode whose
// chunks the caller must fill; otherwise nil.
func (t *tree) apply(e *entry, layer int) (*rafs.Inode, error) {
	if e.path == "/" {
		if e.hardlink != "" || e.mode&rafs.SIFMT != rafs.SIFDIR {
			return nil, fmt.Errorf("entry /: the root must be a directory")
		}
		setMeta(t.root.Inode, e)
		return nil, nil
	}
	name := path.Base(e.path)
	if strings.HasPrefix(name, whiteoutPrefix) {
		t.whiteout(e.path, name, layer)
		return nil, nil
	}
	parent, err := t.parentDir(e.path, layer)
	if err != nil {
		return nil, err
	}
	if e.hardlink != "" {

		target := t.lookup(e.hardlink)
		if target == nil {
			return nil, fmt.Errorf("entry %s: hard link target %s does not exist", e.path, e.hardlink)
		}
		if target.Inode.IsDir() {
			return nil, fmt.Errorf("entry %s: hard link target %s is a directory", e.path, e.hardlink)
		}
		if target.Parent == parent && target.Name == name {
			return nil, nil // a link to itself changes nothing
		}
		n := &rafs.Node{Name: name, Inode: target.Inode}
		parent.AddChild(n)
		t.layerOf[n] = layer
		return nil, nil
	}
	existing := parent.Child(name)
	if existing != nil && existing.Inode.IsDir() && e.mode&rafs.SIFMT == rafs.SIFDIR {
		setMeta(existing.Inode, e) // a directory over a directory merges
		t.layerOf[existing] = layer
		return nil, nil
	}
	ino := t.newInode(e.mode)
	setMeta(ino, e)
	n := &rafs.Node{Name: name, Inode: ino}
	parent.AddChild(n)
	t.layerOf[n] = layer
	if ino.IsReg() {
		return ino, nil
	}
	return nil, nil
}

// whiteout applies .wh.NAME (delete NAME) or .wh..wh..opq (hide what lower layers put in the
// directory). A whiteout under a path that is not a directory hides nothing: umoci, for one, writes
// "dir/.wh.x" after replacing dir with a file in the same layer.
func (t *tree) whiteout(p, name string, layer int) {
	parent := t.lookup(path.Dir(p))
	if parent == nil || !parent.Inode.IsDir() {
		return
	}
	if name != whiteoutOpaque {
		parent.RemoveChild(strings.TrimPrefix(name, whiteoutPrefix))
		return
	}
	kept := parent.Children[:0]
	for _, c := range parent.Children {
		if t.layerOf[c] >= layer {
			kept = append(kept, c)
		}
	}
	parent.Children = kept
}

func setMeta(ino *rafs.Inode, e *entry) {
	ino.Mode, ino.UID, ino.GID = e.mode, e.uid, e.gid
	ino.Mtime, ino.MtimeNsec = e.mtime, e.mtimeNsec
	ino.Xattrs = e.xattrs
	ino.Rdev = 0
	ino.Symlink = ""
	ino.Size = 0
	switch e.mode & rafs.SIFMT {
	case rafs.SIFLNK:
		ino.Symlink = e.symlink
		ino.Size = uint64(len(e.symlink))
	case rafs.SIFREG:
		ino.Size = uint64(e.size)
	case rafs.SIFCHR, rafs.SIFBLK:
		ino.Rdev = e.rdev
	}
}

// finish fixes what only the whole tree knows: link counts.
func (t *tree) finish() {
	links := map[*rafs.Inode]uint32{}
	var walk func(n *rafs.Node)
	walk = func(n *rafs.Node) {
		if n.Inode.IsDir() {
			sub := uint32(0)
			for _, c := range n.Children {
				if c.Inode.IsDir() {
					sub++
				}
				walk(c)
			}
			n.Inode.Nlink = 2 + sub
			return
		}
		links[n.Inode]++
	}
	walk(t.root)
	for ino, nl := range links {
		ino.Nlink = nl
	}
}
