package v5

import (
	"bytes"
	"fmt"
	"os"
	"path"
	"reflect"
	"testing"

	"github.com/dfnydus/dfnydus/rafs"
)

const (
	fixtureSHA256 = "testdata/sha256-nocompress-repeatable"
	fixtureBlake3 = "testdata/blake3-lz4_block-non_repeatable"
	fixtureResult = "testdata/sha256-nocompress-repeatable.result"
	// The fixtures' data blob is 3.5 MB, so it is read from the shared fixture directory.
	fixtureBlob = "../../testdata/fixtures/nydus/v5-repeatable/blobs/7334a2594e133cf8ae364189c2276b090fc490c627bcc3fb1077f0419a538e00"
)

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func mustDecode(t testing.TB, data []byte) *rafs.Image {
	t.Helper()
	img, err := Decode(data)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	return img
}

func mustEncode(t testing.TB, img *rafs.Image) []byte {
	t.Helper()
	out, err := Encode(img)
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	return out
}

// diffImages lists every difference between two models: image fields, blobs, prefetch list, and
// the trees compared node by node, including which nodes share an inode (hard links). Parent
// pointers are not compared.
func diffImages(a, b *rafs.Image) []string {
	var diffs []string
	add := func(format string, args ...any) { diffs = append(diffs, fmt.Sprintf(format, args...)) }
	if a.Version != b.Version || a.Flags != b.Flags || a.ChunkSize != b.ChunkSize || a.Compressor != b.Compressor || a.Digester != b.Digester {
		add("image: version %d/%d flags %#x/%#x chunk size %#x/%#x compressor %v/%v digester %v/%v",
			a.Version, b.Version, a.Flags, b.Flags, a.ChunkSize, b.ChunkSize, a.Compressor, b.Compressor, a.Digester, b.Digester)
	}
	if len(a.Blobs) != len(b.Blobs) {
		add("blobs: %d vs %d", len(a.Blobs), len(b.Blobs))
	} else {
		for i := range a.Blobs {
			if *a.Blobs[i] != *b.Blobs[i] {
				add("blob %d: %+v vs %+v", i, *a.Blobs[i], *b.Blobs[i])
			}
		}
	}
	if fmt.Sprint(a.Prefetch) != fmt.Sprint(b.Prefetch) || len(a.Prefetch) != len(b.Prefetch) {
		add("prefetch: %q vs %q", a.Prefetch, b.Prefetch)
	}
	// Walk both trees side by side; hard links must pair up the same way on both sides.
	pair := map[*rafs.Inode]*rafs.Inode{}
	type item struct {
		p    string
		x, y *rafs.Node
	}
	stack := []item{{"/", a.Root, b.Root}}
	for len(stack) > 0 && len(diffs) < 20 {
		it := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if it.x.Name != it.y.Name {
			add("%s: name %q vs %q", it.p, it.x.Name, it.y.Name)
		}
		if q, ok := pair[it.x.Inode]; ok {
			if q != it.y.Inode {
				add("%s: hard-link structure differs", it.p)
			}
		} else {
			pair[it.x.Inode] = it.y.Inode
			if d := diffInodes(it.x.Inode, it.y.Inode); d != "" {
				add("%s: %s", it.p, d)
			}
		}
		if len(it.x.Children) != len(it.y.Children) {
			add("%s: %d vs %d children", it.p, len(it.x.Children), len(it.y.Children))
			continue
		}
		for i := range it.x.Children {
			stack = append(stack, item{path.Join(it.p, it.x.Children[i].Name), it.x.Children[i], it.y.Children[i]})
		}
	}
	return diffs
}

func diffInodes(a, b *rafs.Inode) string {
	ca, cb := *a, *b
	ca.Xattrs, cb.Xattrs, ca.Chunks, cb.Chunks = nil, nil, nil, nil
	if !reflect.DeepEqual(ca, cb) {
		return fmt.Sprintf("inode %+v vs %+v", ca, cb)
	}
	if len(a.Xattrs) != len(b.Xattrs) {
		return fmt.Sprintf("xattrs %v vs %v", a.Xattrs, b.Xattrs)
	}
	for i := range a.Xattrs {
		if a.Xattrs[i].Name != b.Xattrs[i].Name || !bytes.Equal(a.Xattrs[i].Value, b.Xattrs[i].Value) {
			return fmt.Sprintf("xattr %d: %v vs %v", i, a.Xattrs[i], b.Xattrs[i])
		}
	}
	if len(a.Chunks) != len(b.Chunks) {
		return fmt.Sprintf("%d vs %d chunks", len(a.Chunks), len(b.Chunks))
	}
	for i := range a.Chunks {
		if a.Chunks[i] != b.Chunks[i] {
			return fmt.Sprintf("chunk %d: %+v vs %+v", i, a.Chunks[i], b.Chunks[i])
		}
	}
	return ""
}

func assertSameImage(t testing.TB, want, got *rafs.Image) {
	t.Helper()
	for _, d := range diffImages(want, got) {
		t.Error(d)
	}
}

// recordOffset returns the byte offset of inode ino's record in a v5 bootstrap.
func recordOffset(data []byte, ino uint32) int {
	tab := int(le.Uint64(data[32:]))
	return int(le.Uint32(data[tab+4*int(ino-1):])) << 3
}
