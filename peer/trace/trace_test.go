package trace

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/dfnydus/dfnydus/rafs"
)

const (
	blobA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	dig1  = "1111111111111111111111111111111111111111111111111111111111111111"
	dig2  = "2222222222222222222222222222222222222222222222222222222222222222"
)

var manifest = digest.FromString("manifest")

// testImage has /bin/sh (chunks 1 and 2 of blob A) and /etc/passwd (chunk 2, dedup).
func testImage() *rafs.Image {
	var d1, d2 rafs.Digest
	copy(d1[:], []byte(strings.Repeat("\x11", 32)))
	copy(d2[:], []byte(strings.Repeat("\x22", 32)))
	c1 := rafs.Chunk{Digest: d1, CompressedOffset: 0, CompressedSize: 100, UncompressedSize: 200}
	c2 := rafs.Chunk{Digest: d2, CompressedOffset: 100, CompressedSize: 50, UncompressedSize: 80, FileOffset: 200}
	reg := func(cs ...rafs.Chunk) *rafs.Inode { return &rafs.Inode{Mode: 0o100644, Chunks: cs} }
	dir := func(children ...*rafs.Node) *rafs.Node {
		return &rafs.Node{Inode: &rafs.Inode{Mode: 0o40755}, Children: children}
	}
	sh := &rafs.Node{Name: "sh", Inode: reg(c1, c2)}
	pw := &rafs.Node{Name: "passwd", Inode: reg(rafs.Chunk{Digest: d2, CompressedOffset: 100, CompressedSize: 50, UncompressedSize: 80})}
	bin := dir(sh)
	bin.Name = "bin"
	etc := dir(pw)
	etc.Name = "etc"
	return &rafs.Image{Blobs: []*rafs.Blob{{ID: blobA}}, Root: dir(bin, etc)}
}

func good() *Trace {
	return &Trace{Version: 1, Manifest: manifest, Created: time.Unix(1700000000, 0).UTC(), Entries: []Entry{
		{Path: "/etc/passwd", Blob: blobA, Offset: 100, Size: 50, Digest: dig2},
		{Path: "/bin/sh", Blob: blobA, Offset: 0, Size: 100, Digest: dig1},
	}}
}

func TestRoundTrip(t *testing.T) {
	data, err := good().Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	if got.Manifest != manifest || len(got.Entries) != 2 || got.Entries[0] != good().Entries[0] || !got.Created.Equal(good().Created) {
		t.Fatalf("round trip: %+v", got)
	}
	cs, err := got.Resolve(testImage())
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 2 || cs[0].CompressedOffset != 100 || cs[1].CompressedOffset != 0 {
		t.Fatalf("resolve kept not the trace order: %+v", cs)
	}
	if ps := got.PrefetchPaths(); strings.Join(ps, " ") != "/etc/passwd /bin/sh" {
		t.Fatalf("prefetch paths %v", ps)
	}
}

func TestDecodeInvalid(t *testing.T) {
	enc := func(mut func(*Trace)) string {
		tr := good()
		mut(tr)
		data, err := jsonOf(tr)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	for _, tc := range []struct{ name, data, want string }{
		{"not json", "{", "unexpected end"},
		{"wrong version", enc(func(tr *Trace) { tr.Version = 2 }), "version 2"},
		{"no version", `{"manifest":"` + manifest.String() + `","entries":[]}`, "version 0"},
		{"unknown field", strings.Replace(enc(func(*Trace) {}), `"version": 1`, `"version": 1, "extra": true`, 1), "unknown field"},
		{"unbound", enc(func(tr *Trace) { tr.Manifest = "" }), "neither a manifest"},
		{"bad manifest digest", enc(func(tr *Trace) { tr.Manifest = "sha256:zz" }), "digest"},
		{"relative path", enc(func(tr *Trace) { tr.Entries[0].Path = "etc/passwd" }), "absolute"},
		{"unclean path", enc(func(tr *Trace) { tr.Entries[0].Path = "/etc/../passwd" }), "absolute"},
		{"short blob", enc(func(tr *Trace) { tr.Entries[0].Blob = "abc" }), "blob"},
		{"upper-case digest", enc(func(tr *Trace) { tr.Entries[0].Digest = strings.ToUpper(dig2[:60]) + "ABCD" }), "digest"},
		{"zero size", enc(func(tr *Trace) { tr.Entries[0].Size = 0 }), "size"},
		{"duplicate chunk", enc(func(tr *Trace) { tr.Entries[1] = tr.Entries[0] }), "twice"},
		{"trailing data", enc(func(*Trace) {}) + "{}", "after top-level value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode([]byte(tc.data))
			if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want ErrInvalid mentioning %q", err, tc.want)
			}
		})
	}
}

func TestResolveNotThisImage(t *testing.T) {
	for _, tc := range []struct {
		name string
		mut  func(*Trace)
	}{
		{"unknown blob", func(tr *Trace) { tr.Entries[0].Blob = strings.Repeat("b", 64) }},
		{"no chunk at offset", func(tr *Trace) { tr.Entries[0].Offset = 7 }},
		{"other size", func(tr *Trace) { tr.Entries[0].Size = 51 }},
		{"other digest", func(tr *Trace) { tr.Entries[0].Digest = dig1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := good()
			tc.mut(tr)
			if _, err := tr.Resolve(testImage()); !errors.Is(err, ErrNotThisImage) {
				t.Fatalf("err %v, want ErrNotThisImage", err)
			}
		})
	}
	tr := good()
	if err := tr.BoundTo(digest.FromString("other"), ""); !errors.Is(err, ErrNotThisImage) {
		t.Fatalf("other manifest: %v", err)
	}
	if err := tr.BoundTo(manifest, ""); err != nil {
		t.Fatal(err)
	}
}

func TestPatterns(t *testing.T) {
	got := Patterns([]string{"/usr/bin/python3", "/usr/lib", "/usr/lib/x.so", "/usr/bin/python3", "/a", "/usr"})
	if want := "/usr/bin/python3 /usr/lib /a /usr"; strings.Join(got, " ") != want {
		t.Fatalf("patterns %v, want %s", got, want)
	}
}

// fakeReader returns zeros of the chunk's size.
type fakeReader struct{}

func (fakeReader) ReadChunk(_ context.Context, _ *rafs.Blob, c *rafs.Chunk, _ []byte) ([]byte, error) {
	return make([]byte, c.UncompressedSize), nil
}

func TestRecorder(t *testing.T) {
	img := testImage()
	rec := NewRecorder(img, fakeReader{})
	pw := img.Lookup("/etc/passwd").Inode
	sh := img.Lookup("/bin/sh").Inode
	b := img.Blobs[0]
	for _, c := range []*rafs.Chunk{&pw.Chunks[0], &sh.Chunks[1], &sh.Chunks[0], &sh.Chunks[0]} {
		if _, err := rec.ReadChunk(context.Background(), b, c, nil); err != nil {
			t.Fatal(err)
		}
	}
	tr := rec.Stop(manifest, "")
	if len(tr.Entries) != 2 || tr.Entries[0].Path != "/etc/passwd" || tr.Entries[0].Offset != 100 ||
		tr.Entries[1].Path != "/bin/sh" || tr.Entries[1].Offset != 0 || tr.Entries[1].Digest != dig1 {
		t.Fatalf("recorded %+v", tr.Entries)
	}
	if _, err := tr.Encode(); err != nil {
		t.Fatal(err)
	}
}
