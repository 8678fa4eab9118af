package v5

import (
	"bufio"
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path"
	"strings"
	"testing"

	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/digest"
)

// treeEntry is one entry of `tree -J` output.
type treeEntry struct {
	Type     string      `json:"type"`
	Name     string      `json:"name"`
	Target   string      `json:"target"`
	Contents []treeEntry `json:"contents"`
}

// readResult parses the fixture's .result file: `tree -J` JSON of the image's tree followed by
// `md5sum` lines for its regular files.
func readResult(t *testing.T) (map[string]treeEntry, map[string]string) {
	t.Helper()
	r := bytes.NewReader(readFile(t, fixtureResult))
	dec := json.NewDecoder(r)
	var top []treeEntry
	if err := dec.Decode(&top); err != nil {
		t.Fatalf("parse %s: %v", fixtureResult, err)
	}
	if len(top) == 0 || top[0].Type != "directory" {
		t.Fatalf("%s: first entry is not the root directory", fixtureResult)
	}
	entries := map[string]treeEntry{}
	var walk func(p string, e treeEntry)
	walk = func(p string, e treeEntry) {
		entries[p] = e
		for _, c := range e.Contents {
			walk(path.Join(p, c.Name), c)
		}
	}
	walk("/", top[0])

	sums := map[string]string{}
	sc := bufio.NewScanner(io.MultiReader(dec.Buffered(), r))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line == "]" {
			continue
		}
		sum, p, ok := strings.Cut(line, "  ")
		if !ok {
			t.Fatalf("%s: bad md5sum line %q", fixtureResult, line)
		}
		sums[p] = sum
	}
	return entries, sums
}

// treeType maps a model inode to the type `tree -J` reports.
func treeType(in *rafs.Inode) string {
	switch {
	case in.IsDir():
		return "directory"
	case in.IsSymlink():
		return "link"
	case in.IsReg():
		return "file"
	}
	return "other"
}

func TestDecodeFixtures(t *testing.T) {
	blob := &rafs.Blob{
		ID:               "7334a2594e133cf8ae364189c2276b090fc490c627bcc3fb1077f0419a538e00",
		ChunkSize:        0x100000,
		ChunkCount:       23,
		Compressor:       rafs.CompressNone,
		CompressedSize:   3508766,
		UncompressedSize: 3508766,
	}
	tests := []struct {
		file     string
		flags    uint64
		digester rafs.Digester
	}{
		{fixtureSHA256, rafs.FlagCompressNone | rafs.FlagHashSHA256, rafs.DigestSHA256},
		// Despite its name this image says COMPRESSION_NONE and references the same raw blob.
		{fixtureBlake3, rafs.FlagCompressNone | rafs.FlagHashBlake3, rafs.DigestBlake3},
	}
	entries, _ := readResult(t)
	for _, tt := range tests {
		t.Run(path.Base(tt.file), func(t *testing.T) {
			img := mustDecode(t, readFile(t, tt.file))
			if err := Verify(img); err != nil {
				t.Errorf("Verify: %v", err)
			}
			if img.Version != 5 || img.Flags != tt.flags || img.ChunkSize != 0x100000 ||
				img.Compressor != rafs.CompressNone || img.Digester != tt.digester || img.Prefetch != nil {
				t.Errorf("image header: version %d flags %#x chunk size %#x compressor %v digester %v prefetch %q",
					img.Version, img.Flags, img.ChunkSize, img.Compressor, img.Digester, img.Prefetch)
			}
			wantBlob := *blob
			wantBlob.Digester = tt.digester
			if len(img.Blobs) != 1 || *img.Blobs[0] != wantBlob {
				t.Errorf("blobs = %+v, want [%+v]", img.Blobs, wantBlob)
			}

			// Every node is in the expected tree with the same type and link target, and vice versa.
			seen := 0
			err := img.Walk(func(p string, n *rafs.Node) error {
				seen++
				e, ok := entries[p]
				switch {
				case !ok:
					t.Errorf("%s: not in %s", p, fixtureResult)
				case e.Type != treeType(n.Inode):
					t.Errorf("%s: type %s, want %s", p, treeType(n.Inode), e.Type)
				case e.Target != n.Inode.Symlink:
					t.Errorf("%s: link target %q, want %q", p, n.Inode.Symlink, e.Target)
				case n.Path() != p:
					t.Errorf("%s: Path() = %q (parent pointers)", p, n.Path())
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if seen != len(entries) {
				t.Errorf("image has %d entries, %s lists %d", seen, fixtureResult, len(entries))
			}

			// Hard links share one inode; its number is the first link's.
			foo := img.Lookup("/hardlink-test/foo").Inode
			for _, p := range []string{"/hardlink-test/test.sh", "/normal-file-test/test.sh"} {
				if img.Lookup(p).Inode != foo {
					t.Errorf("%s does not share /hardlink-test/foo's inode", p)
				}
			}
			if foo.Ino != 5 || foo.Nlink != 3 || foo.Size != 944 || len(foo.Chunks) != 1 {
				t.Errorf("/hardlink-test/foo: ino %d nlink %d size %d chunks %d, want 5, 3, 944, 1", foo.Ino, foo.Nlink, foo.Size, len(foo.Chunks))
			}
			root := img.Root
			if root.Name != "" || root.Inode.Ino != 1 || root.Inode.Nlink != 5 || root.Inode.Mode != 0o40755 || len(root.Children) != 3 {
				t.Errorf("root: name %q ino %d nlink %d mode %#o children %d", root.Name, root.Inode.Ino, root.Inode.Nlink, root.Inode.Mode, len(root.Children))
			}
			layer := img.Lookup("/normal-file-test/busybox/1f777dbdd68d1c4d554bc0d20e027bfef9ed2dfe2d8d5f029e958552a0e12475/layer.tar").Inode
			if layer.Size != 1415680 || layer.Blocks != 2765 || layer.Mode != 0o100644 || layer.Mtime != 1668232305 ||
				len(layer.Chunks) != 2 || layer.Chunks[1].FileOffset != 0x100000 || layer.Chunks[1].UncompressedSize != 367104 {
				t.Errorf("layer.tar: %+v", layer)
			}
			if l := img.Lookup("/symlink-test/root-1").Inode; l.Symlink != "/////////////////" || l.Size != 17 {
				t.Errorf("/symlink-test/root-1: target %q size %d", l.Symlink, l.Size)
			}
		})
	}
}

// TestFixtureChunksMatchBlob reads every chunk of every regular file from the fixtures' raw data
// blob: its bytes hash to the chunk digest, and the files assembled from chunks have the md5 sums
// listed in the .result file.
func TestFixtureChunksMatchBlob(t *testing.T) {
	blob, err := os.ReadFile(fixtureBlob)
	if errors.Is(err, os.ErrNotExist) {
		t.Skipf("fixture blob %s is missing", fixtureBlob)
	} else if err != nil {
		t.Fatal(err)
	}
	_, sums := readResult(t)
	for _, file := range []string{fixtureSHA256, fixtureBlake3} {
		t.Run(path.Base(file), func(t *testing.T) {
			img := mustDecode(t, readFile(t, file))
			files := 0
			err := img.Walk(func(p string, n *rafs.Node) error {
				if !n.Inode.IsReg() {
					return nil
				}
				files++
				content := make([]byte, n.Inode.Size)
				for i, c := range n.Inode.Chunks {
					end := c.CompressedOffset + uint64(c.CompressedSize)
					if c.IsCompressed() || c.CompressedSize != c.UncompressedSize || end > uint64(len(blob)) {
						t.Errorf("%s chunk %d: %+v does not fit the raw blob of %d bytes", p, i, c, len(blob))
						continue
					}
					data := blob[c.CompressedOffset:end]
					if got := digest.Sum(img.Digester, data); got != c.Digest {
						t.Errorf("%s chunk %d: %v of blob[%d:%d] = %s, chunk digest %s", p, i, img.Digester, c.CompressedOffset, end, got, c.Digest)
					}
					copy(content[c.FileOffset:], data)
				}
				sum := md5.Sum(content)
				if want, ok := sums[p]; !ok || hex.EncodeToString(sum[:]) != want {
					t.Errorf("%s: md5 %x, .result says %q", p, sum, want)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if files != len(sums) {
				t.Errorf("%d regular files, .result lists %d md5 sums", files, len(sums))
			}
		})
	}
}

// TestFixtureReencode is the golden test for Encode against nydus-image's own output: re-encoding
// a decoded fixture reproduces it byte for byte except s_inodes_count. The fixtures were built in
// 2022 by a nydus-image that did not count the root inode (51 = 54 table entries - 2 extra hard
// links - root); nydus-image since counts every unique inode including the root, as the field's
// definition says, and so does Encode (52).
func TestFixtureReencode(t *testing.T) {
	for _, file := range []string{fixtureSHA256, fixtureBlake3} {
		t.Run(path.Base(file), func(t *testing.T) {
			data := readFile(t, file)
			img := mustDecode(t, data)
			out := mustEncode(t, img)

			const inodesCountOffset = 24
			if got := le.Uint64(data[inodesCountOffset:]); got != 51 {
				t.Fatalf("fixture s_inodes_count = %d, want 51", got)
			}
			want := bytes.Clone(data)
			le.PutUint64(want[inodesCountOffset:], 52)
			if !bytes.Equal(out, want) {
				for i := range min(len(out), len(want)) {
					if out[i] != want[i] {
						t.Fatalf("re-encoded bootstrap (%d bytes) differs from the fixture (%d bytes) first at offset %#x", len(out), len(want), i)
					}
				}
				t.Fatalf("re-encoded bootstrap has %d bytes, fixture %d", len(out), len(want))
			}

			// Decode -> Encode -> Decode gives the model Decode gave.
			assertSameImage(t, mustDecode(t, data), mustDecode(t, out))
		})
	}
}

// TestFixtureFlippedDigest corrupts one stored digest at a time in the bytes: Decode still
// succeeds (it does not check digests) and Verify names exactly the corrupted inode.
func TestFixtureFlippedDigest(t *testing.T) {
	data := readFile(t, fixtureSHA256)
	tests := []struct {
		name   string
		offset func() int // byte to flip
		path   string
	}{
		{"file digest", func() int { return recordOffset(data, 38) }, "/normal-file-test/holefiles/chsum"},
		{"chunk digest", func() int { return recordOffset(data, 38) + inodeHeaderSize + 8 }, "/normal-file-test/holefiles/chsum"},
		{"directory digest", func() int { return recordOffset(data, 7) + 31 }, "/normal-file-test/busybox"},
		{"empty directory digest", func() int { return recordOffset(data, 15) }, "/normal-file-test/busybox/1f777dbdd68d1c4d554bc0d20e027bfef9ed2dfe2d8d5f029e958552a0e12475/bin"},
		{"symlink digest", func() int { return recordOffset(data, 54) + 5 }, "/symlink-test/test.sh"},
		{"root digest", func() int { return recordOffset(data, 1) }, "/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bad := bytes.Clone(data)
			bad[tt.offset()] ^= 0x40
			img := mustDecode(t, bad)
			err := Verify(img)
			if !errors.Is(err, rafs.ErrCorrupt) || !strings.Contains(err.Error(), "at "+tt.path+":") {
				t.Errorf("Verify = %v, want ErrCorrupt naming %s", err, tt.path)
			}
		})
	}
}

// TestDecodeHardLinkKeepsFirstLink: a hard link's record may restate permissions, owner and times
// differently (nydus-image's tar path takes them from the link's own tar header); the model has one
// inode per file and keeps the first link's.
func TestDecodeHardLinkKeepsFirstLink(t *testing.T) {
	data := readFile(t, fixtureSHA256)
	both(put32(rec(inoFooLink, fMode), 0o100600), put32(rec(inoFooLink, fUID), 5), put64(rec(inoFooLink, fMtime), 1))(data)
	img := mustDecode(t, data)
	foo, link := img.Lookup("/hardlink-test/foo").Inode, img.Lookup("/hardlink-test/test.sh").Inode
	if foo != link || foo.Mode != 0o100775 || foo.UID != 0 || foo.Mtime != 1668232305 {
		t.Errorf("link shares %v; inode mode %#o uid %d mtime %d, want the first link's 0100775 0 1668232305", foo == link, foo.Mode, foo.UID, foo.Mtime)
	}
}
