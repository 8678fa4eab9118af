package fstree

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

type tarEnt struct {
	hdr  tar.Header
	body string
}

func makeTar(t testing.TB, ents ...tarEnt) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := e.hdr
		h.Size = int64(len(e.body))
		if h.Format == tar.FormatUnknown {
			h.Format = tar.FormatPAX
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestFromTarRecordsEveryAttribute(t *testing.T) {
	mt := time.Unix(1_700_000_000, 42)
	data := makeTar(t,
		tarEnt{hdr: tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt}},
		tarEnt{hdr: tar.Header{Name: "./d/", Typeflag: tar.TypeDir, Mode: 0o1777, Uid: 1, Gid: 2, ModTime: mt}},
		tarEnt{hdr: tar.Header{Name: "d/f", Typeflag: tar.TypeReg, Mode: 0o4755, ModTime: mt,
			PAXRecords: map[string]string{"SCHILY.xattr.user.a": "1", "SCHILY.xattr.security.capability": "\x00\x01"}}, body: "hello"},
		tarEnt{hdr: tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "../x", Mode: 0o755, ModTime: mt}},
		tarEnt{hdr: tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "./d/f", ModTime: mt}},
		tarEnt{hdr: tar.Header{Name: "c", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3, Mode: 0o666, ModTime: mt}},
		tarEnt{hdr: tar.Header{Name: "b", Typeflag: tar.TypeBlock, Devmajor: 259, Devminor: 70000, Mode: 0o600, ModTime: mt}},
		tarEnt{hdr: tar.Header{Name: "p", Typeflag: tar.TypeFifo, Mode: 0o600, ModTime: mt}},
	)
	got, err := FromTar(bytes.NewReader(data), Options{})
	if err != nil {
		t.Fatal(err)
	}
	ts := Timestamp{Sec: 1_700_000_000, Nsec: 42}
	file := Entry{Type: TypeFile, Mode: 0o4755, Size: 5, Mtime: ts, ContentSHA256: sha("hello"),
		Xattrs: map[string]string{"user.a": "1", "security.capability": "\x00\x01"}, HardLinkGroup: "/d/f"}
	withPath := func(e Entry, p string) Entry { e.Path = p; return e }
	want := map[string]Entry{
		"/":    {Path: "/", Type: TypeDir, Mode: 0o755, Mtime: ts},
		"/d":   {Path: "/d", Type: TypeDir, Mode: 0o1777, UID: 1, GID: 2, Mtime: ts},
		"/d/f": withPath(file, "/d/f"),
		"/h":   withPath(file, "/h"),
		"/l":   {Path: "/l", Type: TypeSymlink, Mode: 0o777, Mtime: ts, LinkTarget: "../x"},
		"/c":   {Path: "/c", Type: TypeChar, Mode: 0o666, Mtime: ts, Rdev: unix.Mkdev(1, 3)},
		"/b":   {Path: "/b", Type: TypeBlock, Mode: 0o600, Mtime: ts, Rdev: unix.Mkdev(259, 70000)},
		"/p":   {Path: "/p", Type: TypeFifo, Mode: 0o600, Mtime: ts},
	}
	if d := Diff(want, got); d != nil {
		t.Fatalf("FromTar differs from the stream written:\n%q", d)
	}
}

func TestFromTarRejects(t *testing.T) {
	tests := []struct {
		name string
		ents []tarEnt
		want string
	}{
		{"hard link to an unseen path", []tarEnt{{hdr: tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "nope"}}}, "not seen before"},
		{"hard link to a directory", []tarEnt{
			{hdr: tar.Header{Name: "d/", Typeflag: tar.TypeDir}},
			{hdr: tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "d"}}}, "hard link to directory"},
		{"a file listed twice", []tarEnt{
			{hdr: tar.Header{Name: "f", Typeflag: tar.TypeReg}},
			{hdr: tar.Header{Name: "./f", Typeflag: tar.TypeReg}}}, "listed twice"},
		{"PAX sparse claiming a huge size", nil, "unsupported GNU sparse"},
		{"GNU sparse", []tarEnt{{hdr: tar.Header{Name: "s", Typeflag: tar.TypeGNUSparse, Format: tar.FormatGNU}}}, "unsupported"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var data []byte
			if tc.ents == nil {
				data = paxSparseTar()
			} else if tc.ents[0].hdr.Typeflag == tar.TypeGNUSparse {
				// archive/tar cannot write GNU sparse headers; patch the type byte of a plain one.
				data = makeTar(t, tarEnt{hdr: tar.Header{Name: "s", Typeflag: tar.TypeReg, Format: tar.FormatGNU}})
				data[156] = tar.TypeGNUSparse
				fixTarChecksum(data[:512])
			} else {
				data = makeTar(t, tc.ents...)
			}
			_, err := FromTar(bytes.NewReader(data), Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("FromTar error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestFromTarLaterDirectoryWins(t *testing.T) {
	data := makeTar(t,
		tarEnt{hdr: tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o700}},
		tarEnt{hdr: tar.Header{Name: "./d/", Typeflag: tar.TypeDir, Mode: 0o755}},
	)
	got, err := FromTar(bytes.NewReader(data), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got["/d"].Mode != 0o755 {
		t.Fatalf("mode of /d = %04o, want the later entry's 0755", got["/d"].Mode)
	}
}

// TestFromTarAgreesWithGNUTar cross-checks Snapshot and FromTar against an independent tool: a tree
// archived by GNU tar (PAX, with xattrs) must read back as the same snapshot, minus the socket tar
// cannot hold.
func TestFromTarAgreesWithGNUTar(t *testing.T) {
	tarBin, err := exec.LookPath("tar")
	if err != nil {
		t.Skip("GNU tar not installed")
	}
	root := buildTree(t, nil, nil)
	want, err := Snapshot(root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	delete(want, "/sock")
	cmd := exec.Command(tarBin, "--format=posix", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-cpf", "-", "-C", root, ".")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tar: %v: %s", err, stderr.String())
	}
	got, err := FromTar(bytes.NewReader(out), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if d := Diff(want, got); d != nil {
		t.Fatalf("GNU tar's archive reads back differently from the tree:\n%q", d)
	}
}

// paxSparseTar returns a stream whose only file is a GNU PAX 0.1 sparse file with a logical size of
// 2^60 bytes, all hole (archive/tar's reader would serve its zeros forever). archive/tar will not
// write GNU.sparse records, so the blocks are made by hand.
func paxSparseTar() []byte {
	rec := func(k, v string) string {
		n := len(k) + len(v) + 3
		for len(fmt.Sprint(n))+len(k)+len(v)+3 != n {
			n = len(fmt.Sprint(n)) + len(k) + len(v) + 3
		}
		return fmt.Sprintf("%d %s=%s\n", n, k, v)
	}
	body := rec("GNU.sparse.major", "0") + rec("GNU.sparse.minor", "1") + rec("GNU.sparse.size", "1152921504606846976") +
		rec("GNU.sparse.numblocks", "1") + rec("GNU.sparse.map", "0,0")
	var buf bytes.Buffer
	buf.Write(ustarBlock("PaxHeaders/s", tar.TypeXHeader, len(body)))
	buf.WriteString(body + strings.Repeat("\x00", 512-len(body)))
	buf.Write(ustarBlock("s", tar.TypeReg, 0))
	buf.Write(make([]byte, 1024))
	return buf.Bytes()
}

// ustarBlock returns a ustar header block.
func ustarBlock(name string, typ byte, size int) []byte {
	b := make([]byte, 512)
	copy(b, name)
	copy(b[100:], "0000644\x00")
	copy(b[108:], "0000000\x00")
	copy(b[116:], "0000000\x00")
	copy(b[124:], fmt.Sprintf("%011o\x00", size))
	copy(b[136:], "00000000000\x00")
	b[156] = typ
	copy(b[257:], "ustar\x0000")
	fixTarChecksum(b)
	return b
}

// fixTarChecksum recomputes the checksum field of header block blk.
func fixTarChecksum(blk []byte) {
	copy(blk[148:156], "        ")
	sum := 0
	for _, b := range blk {
		sum += int(b)
	}
	copy(blk[148:156], fmt.Sprintf("%06o\x00 ", sum))
}

// FuzzFromTar: arbitrary bytes never crash FromTar; whatever it accepts diffs clean against itself.
// Seeds are the gzip'd tars from upstream's zran fixtures (decompressed), a hand-made stream with a
// hard link and xattrs, and a PAX sparse file claiming 2^60 bytes (which once hung FromTar).
func FuzzFromTar(f *testing.F) {
	for _, s := range fixtureTars(f) {
		f.Add(s)
	}
	f.Add(makeTar(f,
		tarEnt{hdr: tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755}},
		tarEnt{hdr: tar.Header{Name: "f", Typeflag: tar.TypeReg, PAXRecords: map[string]string{"SCHILY.xattr.user.x": "y"}}, body: "abc"},
		tarEnt{hdr: tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "f"}},
	))
	f.Add(paxSparseTar())
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := FromTar(bytes.NewReader(data), Options{})
		if err != nil {
			return
		}
		for p, e := range m {
			if p != e.Path || !strings.HasPrefix(p, "/") {
				t.Fatalf("entry keyed %q has path %q", p, e.Path)
			}
			if e.HardLinkGroup != "" && m[e.HardLinkGroup].HardLinkGroup != e.HardLinkGroup {
				t.Fatalf("%s: group %q is not its own group's member", p, e.HardLinkGroup)
			}
		}
		if d := Diff(m, m); d != nil {
			t.Fatalf("snapshot differs from itself: %q", d)
		}
	})
}

func fixtureTars(tb testing.TB) [][]byte {
	tb.Helper()
	names, _ := filepath.Glob("testdata/*.tar.gz")
	var out [][]byte
	for _, n := range names {
		data, err := gunzipFile(n)
		if err != nil {
			tb.Fatalf("%s: %v", n, err)
		}
		out = append(out, data)
	}
	if len(out) == 0 {
		tb.Fatal("no fixture tars under testdata/")
	}
	return out
}

// TestFromTarReadsUpstreamFixtures reads the real layer tarballs from upstream's zran tests; the
// expectations are GNU tar's listing of them (`tar tvzf`).
func TestFromTarReadsUpstreamFixtures(t *testing.T) {
	type want struct {
		typ  Type
		mode uint32
		size int64
	}
	tree := map[string]want{
		"/a": {TypeDir, 0o755, 0}, "/b": {TypeDir, 0o755, 0}, "/c": {TypeDir, 0o755, 0}, "/d": {TypeDir, 0o755, 0},
		"/d/d1.txt": {TypeFile, 0o644, 2}, "/d/d2.txt": {TypeFile, 0o644, 2}, "/e.txt": {TypeFile, 0o644, 15},
	}
	tests := map[string]map[string]want{
		"testdata/zran-single-stream.tar.gz": tree,
		"testdata/zran-two-streams.tar.gz":   tree,
		"testdata/zran-zero-file.tar.gz":     {"/zero.bin": {TypeFile, 0o644, 262144}},
	}
	for name, wantTree := range tests {
		data, err := gunzipFile(name)
		if err != nil {
			t.Fatal(err)
		}
		m, err := FromTar(bytes.NewReader(data), Options{})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(m) != len(wantTree) {
			t.Errorf("%s: %d entries, want %d", name, len(m), len(wantTree))
		}
		for p, w := range wantTree {
			e := m[p]
			if e.Type != w.typ || e.Mode != w.mode || e.Size != w.size || e.UID != 0 || e.GID != 0 {
				t.Errorf("%s: %s = %+v, want %+v owned by root", name, p, e, w)
			}
		}
	}
	data, _ := gunzipFile("testdata/zran-zero-file.tar.gz")
	m, _ := FromTar(bytes.NewReader(data), Options{})
	if got, want := m["/zero.bin"].ContentSHA256, sha(string(make([]byte, 262144))); got != want {
		t.Errorf("zero.bin sha256 %s, want that of 256 KiB of zeros %s", got, want)
	}
}

func gunzipFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(zr)
}
