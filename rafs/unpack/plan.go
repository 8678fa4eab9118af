package unpack

import (
	"fmt"
	"math"
	"strings"

	"github.com/dfnydus/dfnydus/rafs"
)

// Kernel limits (linux/limits.h) that bound what an image may ask for.
const (
	nameMax      = 255     // NAME_MAX: bytes in one path component or xattr name
	pathMax      = 4095    // PATH_MAX minus the NUL: bytes in a path or symlink target
	xattrSizeMax = 1 << 16 // XATTR_SIZE_MAX: bytes in one xattr value
)

// kind is what an entry becomes on disk.
type kind int

const (
	kindDir kind = iota
	kindFile
	kindSymlink
	kindSpecial  // char or block device, fifo, socket: created with mknod
	kindHardLink // another name for the inode of entry link
)

// entry is one node of the image, validated, in walk order (depth-first pre-order).
type entry struct {
	ino    *rafs.Inode
	name   string
	parent int // index of the parent directory's entry; -1 for the root
	depth  int // 0 for the root
	kind   kind
	link   int   // kindHardLink: index of the first entry of the same inode
	reads  []int // kindFile: indexes into ino.Chunks of the chunks to fetch (holes excluded)
}

// plan is a validated image: nothing is written until the whole tree has passed every check.
type plan struct {
	img     *rafs.Image
	entries []entry
}

// newPlan validates img as hostile input and lists its entries in walk order.
func newPlan(img *rafs.Image, opts Options) (*plan, error) {
	if img == nil || img.Root == nil {
		return nil, rafs.Corruptf("image has no root")
	}
	p := &plan{img: img}
	v := validator{p: p, maxSize: opts.maxFileSize(), visited: map[*rafs.Node]bool{}, first: map[*rafs.Inode]int{}}
	if err := v.visit(img.Root, "", -1, 0, 1); err != nil {
		return nil, err
	}
	return p, nil
}

// path returns the absolute path of entry i inside the image.
func (p *plan) path(i int) string {
	if p.entries[i].parent < 0 {
		return "/"
	}
	var parts []string
	for ; p.entries[i].parent >= 0; i = p.entries[i].parent {
		parts = append(parts, p.entries[i].name)
	}
	var b strings.Builder
	for j := len(parts) - 1; j >= 0; j-- {
		b.WriteByte('/')
		b.WriteString(parts[j])
	}
	return b.String()
}

type validator struct {
	p       *plan
	maxSize uint64
	visited map[*rafs.Node]bool
	first   map[*rafs.Inode]int // inode -> index of its first entry
}

// visit validates n (whose path is pathLen bytes long) and appends it and its subtree to the plan.
func (v *validator) visit(n *rafs.Node, name string, parent, depth, pathLen int) error {
	idx := len(v.p.entries)
	where := func() string {
		if parent < 0 {
			return "/"
		}
		return strings.TrimSuffix(v.p.path(parent), "/") + "/" + name
	}
	if n == nil {
		return bad(where(), "nil node")
	}
	if v.visited[n] {
		return bad(where(), "node appears twice in the tree (cycle or shared node)")
	}
	v.visited[n] = true
	ino := n.Inode
	if ino == nil {
		return bad(where(), "node has no inode")
	}
	if pathLen > pathMax {
		return bad(where()[:64]+"...", "path longer than %d bytes", pathMax)
	}
	e := entry{ino: ino, name: name, parent: parent, depth: depth, link: -1}
	if err := checkInode(ino, v.maxSize); err != nil {
		return fmt.Errorf("%s: %w", where(), err)
	}
	if parent < 0 && !ino.IsDir() {
		return bad("/", "root is not a directory (mode %#o)", ino.Mode)
	}
	if !ino.IsDir() && len(n.Children) > 0 {
		return bad(where(), "non-directory (mode %#o) has %d children", ino.Mode, len(n.Children))
	}
	if f, seen := v.first[ino]; seen {
		if ino.IsDir() {
			return bad(where(), "hard link to directory %s", v.p.path(f))
		}
		e.kind, e.link = kindHardLink, f
		v.p.entries = append(v.p.entries, e)
		return nil
	}
	v.first[ino] = idx
	switch ino.Mode & rafs.SIFMT {
	case rafs.SIFDIR:
		e.kind = kindDir
	case rafs.SIFREG:
		e.kind = kindFile
		reads, err := checkChunks(v.p.img, ino)
		if err != nil {
			return fmt.Errorf("%s: %w", where(), err)
		}
		e.reads = reads
	case rafs.SIFLNK:
		e.kind = kindSymlink
	default:
		e.kind = kindSpecial
	}
	v.p.entries = append(v.p.entries, e)
	if e.kind != kindDir {
		return nil
	}
	names := make(map[string]bool, len(n.Children))
	for _, c := range n.Children {
		if c == nil {
			return bad(where(), "nil child")
		}
		if err := checkName(c.Name); err != nil {
			return fmt.Errorf("%s: %w", where(), err)
		}
		if names[c.Name] {
			return bad(where(), "two entries named %q", c.Name)
		}
		names[c.Name] = true
		cLen := pathLen + len(c.Name)
		if parent >= 0 {
			cLen++ // the separator; the root's path "/" already ends in one
		}
		if err := v.visit(c, c.Name, idx, depth+1, cLen); err != nil {
			return err
		}
	}
	return nil
}

// bad reports a validation failure at path p, wrapping rafs.ErrCorrupt.
func bad(p, format string, args ...any) error {
	return fmt.Errorf("%s: %w", p, rafs.Corruptf(format, args...))
}

// checkName rejects every name that is not exactly one path component.
func checkName(name string) error {
	switch {
	case name == "":
		return rafs.Corruptf("empty entry name")
	case name == "." || name == "..":
		return rafs.Corruptf("entry named %q", name)
	case strings.ContainsAny(name, "/\x00"):
		return rafs.Corruptf("entry name %q contains '/' or NUL", name)
	case len(name) > nameMax:
		return rafs.Corruptf("entry name %.32q... is %d bytes, more than %d", name, len(name), nameMax)
	}
	return nil
}

// checkInode validates the metadata every kind of entry carries.
func checkInode(ino *rafs.Inode, maxSize uint64) error {
	switch ino.Mode & rafs.SIFMT {
	case rafs.SIFDIR, rafs.SIFREG, rafs.SIFLNK, rafs.SIFCHR, rafs.SIFBLK, rafs.SIFIFO, rafs.SIFSOCK:
	default:
		return rafs.Corruptf("unknown file type in mode %#o", ino.Mode)
	}
	if ino.UID == math.MaxUint32 || ino.GID == math.MaxUint32 {
		// (uid_t)-1 tells chown "leave unchanged"; it can never be an owner.
		return rafs.Corruptf("owner %d:%d is not a valid uid:gid", ino.UID, ino.GID)
	}
	if ino.Mtime > math.MaxInt64 || ino.MtimeNsec >= 1e9 {
		return rafs.Corruptf("mtime %d.%09d out of range", ino.Mtime, ino.MtimeNsec)
	}
	if t := ino.Mode & rafs.SIFMT; (t == rafs.SIFCHR || t == rafs.SIFBLK) && ino.Rdev > math.MaxUint32 {
		// mknod(2) takes a 32-bit device number (v5 and v6 store 32 bits too).
		return rafs.Corruptf("device number %#x does not fit in 32 bits", ino.Rdev)
	}
	if ino.IsReg() && ino.Size > maxSize {
		return rafs.Corruptf("file size %d exceeds the limit of %d", ino.Size, maxSize)
	}
	if ino.IsSymlink() {
		t := ino.Symlink
		if t == "" || len(t) > pathMax || strings.IndexByte(t, 0) >= 0 {
			return rafs.Corruptf("symlink target %.64q is empty, too long or contains NUL", t)
		}
	}
	for _, x := range ino.Xattrs {
		if x.Name == "" || len(x.Name) > nameMax || strings.IndexByte(x.Name, 0) >= 0 {
			return rafs.Corruptf("xattr name %.64q is empty, too long or contains NUL", x.Name)
		}
		if len(x.Value) > xattrSizeMax {
			return rafs.Corruptf("xattr %s value is %d bytes, more than %d", x.Name, len(x.Value), xattrSizeMax)
		}
	}
	return nil
}

// checkChunks verifies that a regular file's chunks are in file order, lie inside the file, do not
// overlap and name existing blobs, and returns the indexes of the chunks that carry data.
func checkChunks(img *rafs.Image, ino *rafs.Inode) ([]int, error) {
	var reads []int
	var end uint64
	for i := range ino.Chunks {
		c := &ino.Chunks[i]
		size := uint64(c.UncompressedSize)
		if size == 0 || size > rafs.MaxChunkSize {
			return nil, rafs.Corruptf("chunk %d: uncompressed size %d outside (0, %d]", i, size, rafs.MaxChunkSize)
		}
		if c.FileOffset > ino.Size || size > ino.Size-c.FileOffset {
			return nil, rafs.Corruptf("chunk %d at offset %d size %d does not fit in the file's %d bytes", i, c.FileOffset, size, ino.Size)
		}
		if c.FileOffset < end {
			return nil, rafs.Corruptf("chunk %d at offset %d overlaps the previous chunk ending at %d", i, c.FileOffset, end)
		}
		end = c.FileOffset + size
		if c.Flags&rafs.ChunkHole != 0 {
			continue // all zeros: left as a hole
		}
		if int(c.BlobIndex) >= len(img.Blobs) || img.Blobs[c.BlobIndex] == nil {
			return nil, rafs.Corruptf("chunk %d: blob index %d out of range (%d blobs)", i, c.BlobIndex, len(img.Blobs))
		}
		reads = append(reads, i)
	}
	return reads, nil
}
