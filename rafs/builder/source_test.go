package builder

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/dfnydus/dfnydus/rafs"
)

func tarBytes(t testing.TB, hdrs []tar.Header, body string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hdrs {
		h := h
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(body))
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write([]byte(body))
		}
	}
	tw.Close()
	return buf.Bytes()
}

func readAll(s source) ([]*entry, error) {
	var out []*entry
	for {
		e, err := s.next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		if e.data != nil {
			io.Copy(io.Discard, e.data)
		}
		out = append(out, e)
	}
}

// The three layer encodings are sniffed, and every tar type maps onto the right stat mode.
func TestTarSourceTypesAndCompression(t *testing.T) {
	hdrs := []tar.Header{
		{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "./f", Typeflag: tar.TypeReg, Mode: 0o4755, Uid: 70000, Gid: 80000, PAXRecords: map[string]string{"SCHILY.xattr.user.a": "1", "SCHILY.xattr.security.b": "2"}},
		{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "/f"},
		{Name: "h", Typeflag: tar.TypeLink, Linkname: "./f"},
		{Name: "c", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3},
		{Name: "b", Typeflag: tar.TypeBlock, Devmajor: 8, Devminor: 1},
		{Name: "p", Typeflag: tar.TypeFifo},
	}
	plain := tarBytes(t, hdrs, "hello")
	var gz, zs bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(plain)
	zw.Close()
	ze, _ := zstd.NewWriter(&zs)
	ze.Write(plain)
	ze.Close()
	for name, data := range map[string][]byte{"plain": plain, "gzip": gz.Bytes(), "zstd": zs.Bytes()} {
		t.Run(name, func(t *testing.T) {
			src, err := TarLayer(name, bytes.NewReader(data)).open()
			if err != nil {
				t.Fatal(err)
			}
			entries, err := readAll(src)
			if err != nil {
				t.Fatal(err)
			}
			want := []struct {
				path string
				mode uint32
			}{
				{"/", rafs.SIFDIR | 0o755}, {"/f", rafs.SIFREG | 0o4755}, {"/l", rafs.SIFLNK}, {"/h", 0},
				{"/c", rafs.SIFCHR}, {"/b", rafs.SIFBLK}, {"/p", rafs.SIFIFO},
			}
			if len(entries) != len(want) {
				t.Fatalf("%d entries, want %d", len(entries), len(want))
			}
			for i, w := range want {
				if entries[i].path != w.path || entries[i].mode&^0o644 != w.mode&^0o644 {
					t.Errorf("entry %d = %s %o, want %s %o", i, entries[i].path, entries[i].mode, w.path, w.mode)
				}
			}
			f := entries[1]
			if f.uid != 70000 || f.gid != 80000 || len(f.xattrs) != 2 || f.xattrs[0].Name != "security.b" {
				t.Errorf("file metadata: uid %d gid %d xattrs %v", f.uid, f.gid, f.xattrs)
			}
			if entries[3].hardlink != "/f" || entries[2].symlink != "/f" {
				t.Errorf("links: hard %q sym %q", entries[3].hardlink, entries[2].symlink)
			}
			if entries[4].rdev == 0 || entries[5].rdev == 0 {
				t.Errorf("device numbers lost: %d %d", entries[4].rdev, entries[5].rdev)
			}
		})
	}
}

func TestTarSourceHostile(t *testing.T) {
	tests := []struct {
		name string
		hdrs []tar.Header
		path string // expected cleaned path of the first entry, when no error
		err  string
	}{
		{"dot-dot cannot climb out", []tar.Header{{Name: "../../etc/x", Typeflag: tar.TypeReg}}, "/etc/x", ""},
		{"absolute stays inside", []tar.Header{{Name: "/abs", Typeflag: tar.TypeReg}}, "/abs", ""},
		{"hard link target is cleaned too", []tar.Header{{Name: "a", Typeflag: tar.TypeLink, Linkname: "../../../x"}}, "/a", ""},
		{"device numbers out of range", []tar.Header{{Name: "c", Typeflag: tar.TypeChar, Devmajor: 1 << 20}}, "", "out of range"},
		{"negative uid", []tar.Header{{Name: "n", Typeflag: tar.TypeReg, Uid: -1}}, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data := func() (b []byte) {
				defer func() {
					if recover() != nil {
						b = nil
					}
				}()
				return tarBytes(t, tc.hdrs, "")
			}()
			if data == nil {
				t.Skip("archive/tar refuses to write this header")
			}
			src := newTarSource(bytes.NewReader(data), nil)
			entries, err := readAll(src)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if tc.path == "" {
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if entries[0].path != tc.path {
				t.Errorf("path = %q, want %q", entries[0].path, tc.path)
			}
			if entries[0].hardlink != "" && entries[0].hardlink != "/x" {
				t.Errorf("hard link target = %q, want /x", entries[0].hardlink)
			}
		})
	}
}

// FuzzTarSource feeds arbitrary bytes to the layer reader: it may refuse them, but must not panic,
// hang or return an entry whose path escapes the root.
func FuzzTarSource(f *testing.F) {
	f.Add(tarBytes(f, []tar.Header{{Name: "a/b", Typeflag: tar.TypeReg, Mode: 0o644}}, "data"))
	f.Add(tarBytes(f, []tar.Header{{Name: "../x", Typeflag: tar.TypeSymlink, Linkname: "/etc"}, {Name: "d/", Typeflag: tar.TypeDir}}, ""))
	f.Add(tarBytes(f, []tar.Header{{Name: "h", Typeflag: tar.TypeLink, Linkname: "../../a"}, {Name: "w/.wh..wh..opq", Typeflag: tar.TypeReg}}, ""))
	f.Fuzz(func(t *testing.T, data []byte) {
		src, err := TarLayer("fuzz", bytes.NewReader(data)).open()
		if err != nil {
			return
		}
		tr := newTree()
		for i := 0; i < 10000; i++ {
			e, err := src.next()
			if err != nil {
				if err != io.EOF && errors.Is(err, io.EOF) {
					t.Fatalf("bare EOF wrapped: %v", err)
				}
				return
			}
			if !strings.HasPrefix(e.path, "/") || strings.Contains(e.path, "/../") || strings.HasSuffix(e.path, "/..") {
				t.Fatalf("entry path %q escapes the root", e.path)
			}
			if e.data != nil {
				io.Copy(io.Discard, io.LimitReader(e.data, 1<<20))
			}
			tr.apply(e, 0)
		}
	})
}
