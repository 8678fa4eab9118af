package v6

import (
	"bytes"
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/dfnydus/dfnydus/rafs"
)

// model is a tiny DSL for hand-built images: m.add("/a/b", inode) creates missing parent
// directories (mode 0755, fresh inode numbers) and links the inode at that path.
type model struct {
	img     *rafs.Image
	nextIno uint64
}

func newModel(chunkSize uint32, blobs ...*rafs.Blob) *model {
	m := &model{nextIno: 1}
	m.img = &rafs.Image{
		Version:    6,
		Flags:      rafs.FlagExplicitUIDGID | rafs.FlagEncryptionNone,
		ChunkSize:  chunkSize,
		Compressor: rafs.CompressZstd,
		Digester:   rafs.DigestBlake3,
		Blobs:      blobs,
		Root:       &rafs.Node{Inode: m.ino(&rafs.Inode{Mode: rafs.SIFDIR | 0o755})},
	}
	return m
}

// ino gives in the next inode number unless it has one.
func (m *model) ino(in *rafs.Inode) *rafs.Inode {
	if in.Ino == 0 {
		in.Ino = m.nextIno
		m.nextIno++
	}
	return in
}

func (m *model) add(p string, in *rafs.Inode) *rafs.Inode {
	parts := strings.Split(strings.Trim(p, "/"), "/")
	n := m.img.Root
	for _, part := range parts[:len(parts)-1] {
		c := n.Child(part)
		if c == nil {
			c = &rafs.Node{Name: part, Inode: m.ino(&rafs.Inode{Mode: rafs.SIFDIR | 0o755})}
			n.AddChild(c)
		}
		n = c
	}
	n.AddChild(&rafs.Node{Name: parts[len(parts)-1], Inode: m.ino(in)})
	return in
}

func dirInode(perm uint32) *rafs.Inode  { return &rafs.Inode{Mode: rafs.SIFDIR | perm} }
func fileInode(perm uint32) *rafs.Inode { return &rafs.Inode{Mode: rafs.SIFREG | perm} }
func symlinkInode(target string) *rafs.Inode {
	return &rafs.Inode{Mode: rafs.SIFLNK | 0o777, Symlink: target}
}

// withDerived fills the fields Encode computes rather than stores, following the format's rules
// independently of the encoder: dirent bytes for directory sizes, target length for symlinks,
// 2 + subdirectories / number of names for nlink, 512-byte blocks, holes for unmapped slots.
func withDerived(img *rafs.Image) *rafs.Image {
	refs := map[*rafs.Inode]uint32{}
	hasXattr := false
	_ = img.Walk(func(_ string, n *rafs.Node) error {
		refs[n.Inode]++
		hasXattr = hasXattr || len(n.Inode.Xattrs) > 0
		return nil
	})
	// Flags: compressor and digester bits follow the image's, HAS_XATTR and INLINED_CHUNK_DIGEST
	// are facts about the content.
	img.Flags &^= rafs.FlagCompressNone | rafs.FlagCompressLZ4Block | rafs.FlagCompressGzip | rafs.FlagCompressZstd |
		rafs.FlagHashBlake3 | rafs.FlagHashSHA256 | rafs.FlagHasXattr | rafs.FlagInlinedChunkDig
	img.Flags |= img.Compressor.Flag() | img.Digester.Flag()
	if hasXattr {
		img.Flags |= rafs.FlagHasXattr
	}
	inlined := true
	for _, b := range img.Blobs {
		inlined = inlined && b.Features&rafs.BlobFeatureInlinedChunkDigest != 0
	}
	if inlined {
		img.Flags |= rafs.FlagInlinedChunkDig
	}
	_ = img.Walk(func(_ string, n *rafs.Node) error {
		in := n.Inode
		switch {
		case in.IsDir():
			names := []string{".", ".."}
			in.Nlink = 2
			for _, c := range n.Children {
				names = append(names, c.Name)
				if c.Inode.IsDir() {
					in.Nlink++
				}
			}
			sort.Strings(names)
			in.Size = 0
			for _, name := range names {
				if in.Size%4096+uint64(12+len(name)) > 4096 {
					in.Size = (in.Size + 4095) / 4096 * 4096
				}
				in.Size += uint64(12 + len(name))
			}
		case in.IsSymlink():
			in.Size = uint64(len(in.Symlink))
			in.Nlink = refs[in]
		default:
			in.Nlink = refs[in]
		}
		if in.IsReg() {
			slots := (in.Size + uint64(img.ChunkSize) - 1) / uint64(img.ChunkSize)
			in.HasHole = uint64(len(in.Chunks)) != slots
		}
		in.Blocks = (in.Size + 511) / 512
		return nil
	})
	return img
}

// diffImages lists every difference between two images, including whether the same names share
// an inode (hard links) in both.
func diffImages(want, got *rafs.Image) []string {
	var diffs []string
	add := func(format string, args ...any) { diffs = append(diffs, fmt.Sprintf(format, args...)) }
	if want.Version != got.Version || want.Flags != got.Flags || want.ChunkSize != got.ChunkSize ||
		want.Compressor != got.Compressor || want.Digester != got.Digester {
		add("image header: want v%d flags %#x chunk %#x %v/%v, got v%d flags %#x chunk %#x %v/%v",
			want.Version, want.Flags, want.ChunkSize, want.Compressor, want.Digester,
			got.Version, got.Flags, got.ChunkSize, got.Compressor, got.Digester)
	}
	if want.Root.Name != got.Root.Name {
		add("root name: want %q, got %q", want.Root.Name, got.Root.Name)
	}
	if len(want.Blobs) != len(got.Blobs) {
		add("blob count: want %d, got %d", len(want.Blobs), len(got.Blobs))
	} else {
		for i := range want.Blobs {
			if *want.Blobs[i] != *got.Blobs[i] {
				add("blob %d: want %+v, got %+v", i, *want.Blobs[i], *got.Blobs[i])
			}
		}
	}
	if strings.Join(want.Prefetch, ",") != strings.Join(got.Prefetch, ",") {
		add("prefetch: want %q, got %q", want.Prefetch, got.Prefetch)
	}
	wantNodes, gotNodes := flatten(want), flatten(got)
	wantIDs, gotIDs := map[*rafs.Inode]string{}, map[*rafs.Inode]string{}
	for p, wn := range wantNodes {
		gn, ok := gotNodes[p]
		if !ok {
			add("%s: missing", p)
			continue
		}
		if first, ok := wantIDs[wn.Inode]; ok {
			if gotIDs[gn.Inode] != first {
				add("%s: want a hard link to %s", p, first)
			}
		} else {
			wantIDs[wn.Inode] = p
			if _, ok := gotIDs[gn.Inode]; ok {
				add("%s: unexpectedly shares an inode", p)
			}
			gotIDs[gn.Inode] = p
		}
		for _, d := range diffInodes(wn.Inode, gn.Inode) {
			add("%s: %s", p, d)
		}
	}
	for p := range gotNodes {
		if _, ok := wantNodes[p]; !ok {
			add("%s: unexpected", p)
		}
	}
	sort.Strings(diffs)
	return diffs
}

func flatten(img *rafs.Image) map[string]*rafs.Node {
	out := map[string]*rafs.Node{}
	_ = img.Walk(func(p string, n *rafs.Node) error { out[p] = n; return nil })
	return out
}

func diffInodes(w, g *rafs.Inode) []string {
	var d []string
	field := func(name string, a, b any) {
		if a != b {
			d = append(d, fmt.Sprintf("%s: want %v, got %v", name, a, b))
		}
	}
	field("ino", w.Ino, g.Ino)
	field("mode", fmt.Sprintf("%#o", w.Mode), fmt.Sprintf("%#o", g.Mode))
	field("uid", w.UID, g.UID)
	field("gid", w.GID, g.GID)
	field("projid", w.ProjID, g.ProjID)
	field("size", w.Size, g.Size)
	field("blocks", w.Blocks, g.Blocks)
	field("nlink", w.Nlink, g.Nlink)
	field("rdev", w.Rdev, g.Rdev)
	field("mtime", w.Mtime, g.Mtime)
	field("mtime nsec", w.MtimeNsec, g.MtimeNsec)
	field("symlink", w.Symlink, g.Symlink)
	field("has hole", w.HasHole, g.HasHole)
	field("digest", w.Digest, g.Digest)
	if len(w.Xattrs) != len(g.Xattrs) {
		d = append(d, fmt.Sprintf("xattrs: want %d, got %d", len(w.Xattrs), len(g.Xattrs)))
	} else {
		for i := range w.Xattrs {
			if w.Xattrs[i].Name != g.Xattrs[i].Name || !bytes.Equal(w.Xattrs[i].Value, g.Xattrs[i].Value) {
				d = append(d, fmt.Sprintf("xattr %d: want %s=%q, got %s=%q", i, w.Xattrs[i].Name, w.Xattrs[i].Value, g.Xattrs[i].Name, g.Xattrs[i].Value))
			}
		}
	}
	if len(w.Chunks) != len(g.Chunks) {
		d = append(d, fmt.Sprintf("chunks: want %d, got %d", len(w.Chunks), len(g.Chunks)))
	} else {
		for i := range w.Chunks {
			if w.Chunks[i] != g.Chunks[i] {
				d = append(d, fmt.Sprintf("chunk %d: want %+v, got %+v", i, w.Chunks[i], g.Chunks[i]))
			}
		}
	}
	return d
}

func requireSameImage(t *testing.T, want, got *rafs.Image) {
	t.Helper()
	if diffs := diffImages(want, got); len(diffs) > 0 {
		t.Fatalf("images differ:\n  %s", strings.Join(diffs, "\n  "))
	}
}

// sortedXattrs returns xs sorted by name, as the model keeps them.
func sortedXattrs(xs ...rafs.Xattr) []rafs.Xattr {
	sort.Slice(xs, func(i, j int) bool { return xs[i].Name < xs[j].Name })
	return xs
}
