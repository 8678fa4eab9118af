package unpack

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/dfnydus/dfnydus/internal/fstree"
	"github.com/dfnydus/dfnydus/rafs"
)

func TestToTarHoldsTheSameTree(t *testing.T) {
	img, src := buildModel(t, 4096, everyTypeSpecs()...)
	var buf bytes.Buffer
	var warnings []string
	var last Progress
	opts := Options{Progress: func(p Progress) {
		last = p
		if p.Warning != "" {
			warnings = append(warnings, p.Path+": "+p.Warning)
		}
	}}
	if err := ToTar(context.Background(), img, src, &buf, opts); err != nil {
		t.Fatal(err)
	}
	got, err := fstree.FromTar(bytes.NewReader(buf.Bytes()), fstree.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if d := fstree.Diff(withoutSockets(expectTree(t, img, src)), got); d != nil {
		t.Fatalf("tar differs from the model (a = model, b = tar):\n%s", strings.Join(d, "\n"))
	}
	wantWarnings := []string{
		"/dev/sock: socket skipped: tar cannot hold sockets",
		"/usr/sock2: socket skipped: tar cannot hold sockets",
	}
	if strings.Join(warnings, "\n") != strings.Join(wantWarnings, "\n") {
		t.Errorf("warnings %q, want %q", warnings, wantWarnings)
	}
	if last.Skipped != 2 || last.Entries != len(everyTypeSpecs())-2 {
		t.Errorf("final progress %+v, want 2 skipped and %d written", last, len(everyTypeSpecs())-2)
	}
}

func TestToTarHeaders(t *testing.T) {
	img, src := buildModel(t, 4096, everyTypeSpecs()...)
	var buf bytes.Buffer
	if err := ToTar(context.Background(), img, src, &buf, Options{}); err != nil {
		t.Fatal(err)
	}
	type want struct {
		name     string
		typ      byte
		mode     int64
		uid, gid int
		size     int64
		link     string
		major    int64
		minor    int64
		mtime    time.Time
		xattrs   map[string]string
	}
	ts := func(sec, nsec int64) time.Time { return time.Unix(sec, nsec) }
	capV := "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
	// Walk order: depth-first, children by name; sockets left out.
	wants := []want{
		{name: "./", typ: tar.TypeDir, mode: 0o755, mtime: ts(1_700_000_000, 1)},
		{name: "bin/", typ: tar.TypeDir, mode: 0o2755, uid: 2, gid: 3, mtime: ts(1_600_000_000, 999_999_999), xattrs: map[string]string{"user.dir": "d"}},
		{name: "bin/abs", typ: tar.TypeSymlink, mode: 0o777, uid: 7, gid: 8, link: "/etc/passwd", mtime: ts(2, 3), xattrs: map[string]string{"trusted.sym": "s"}},
		{name: "bin/empty", typ: tar.TypeReg, mode: 0o600, mtime: ts(1, 0)},
		{name: "bin/sparse", typ: tar.TypeReg, mode: 0o640, uid: 1000, gid: 1000, size: 4*4096 + 100 + 3*4096, mtime: ts(1_400_000_000, 123)},
		{name: "bin/su", typ: tar.TypeReg, mode: 0o4755, size: 7, mtime: ts(1_500_000_000, 5), xattrs: map[string]string{"security.capability": capV}},
		{name: "bin/up", typ: tar.TypeSymlink, mode: 0o777, link: "../../../../x", mtime: ts(4, 0)},
		{name: "dev/", typ: tar.TypeDir, mode: 0o755, mtime: ts(10, 0)},
		{name: "dev/big", typ: tar.TypeChar, mode: 0o600, major: 4095, minor: 1<<20 - 1, mtime: ts(13, 0)},
		{name: "dev/fifo", typ: tar.TypeFifo, mode: 0o620, mtime: ts(14, 14)},
		{name: "dev/null", typ: tar.TypeChar, mode: 0o666, major: 1, minor: 3, mtime: ts(11, 0), xattrs: map[string]string{"trusted.dev": "n"}},
		{name: "dev/sda1", typ: tar.TypeBlock, mode: 0o660, gid: 6, major: 8, minor: 1, mtime: ts(12, 0)},
		{name: "tmp/", typ: tar.TypeDir, mode: 0o1777, mtime: ts(20, 0)},
		{name: "tmp/closed/", typ: tar.TypeDir, mode: 0, mtime: ts(21, 0)},
		{name: "tmp/closed/f", typ: tar.TypeReg, mode: 0, size: 19, mtime: ts(22, 0)},
		{name: "tmp/su-link", typ: tar.TypeLink, mode: 0o4755, link: "bin/su", mtime: ts(1_500_000_000, 5), xattrs: map[string]string{"security.capability": capV}},
		{name: "tmp/zz-abs-link", typ: tar.TypeLink, mode: 0o777, uid: 7, gid: 8, link: "bin/abs", mtime: ts(2, 3), xattrs: map[string]string{"trusted.sym": "s"}},
		{name: "usr/", typ: tar.TypeDir, mode: 0o755, mtime: ts(30, 0)},
		{name: "usr/sparse2", typ: tar.TypeLink, mode: 0o640, uid: 1000, gid: 1000, link: "bin/sparse", mtime: ts(1_400_000_000, 123)},
	}
	tr := tar.NewReader(&buf)
	for i, w := range wants {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("entry %d (%s): %v", i, w.name, err)
		}
		var xattrs map[string]string
		for k, v := range h.PAXRecords {
			if name, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
				if xattrs == nil {
					xattrs = map[string]string{}
				}
				xattrs[name] = v
			}
		}
		got := want{name: h.Name, typ: h.Typeflag, mode: h.Mode, uid: h.Uid, gid: h.Gid, size: h.Size, link: h.Linkname,
			major: h.Devmajor, minor: h.Devminor, mtime: h.ModTime, xattrs: xattrs}
		if got.name != w.name || got.typ != w.typ || got.mode != w.mode || got.uid != w.uid || got.gid != w.gid ||
			got.size != w.size || got.link != w.link || got.major != w.major || got.minor != w.minor ||
			!got.mtime.Equal(w.mtime) || !equalMaps(got.xattrs, w.xattrs) {
			t.Errorf("entry %d:\n got %+v\nwant %+v", i, got, w)
		}
		if h.Format != tar.FormatPAX && (w.mtime.Nanosecond() != 0 || w.xattrs != nil) {
			t.Errorf("entry %d (%s): format %v; nanoseconds and xattrs need PAX", i, w.name, h.Format)
		}
		if h.Uname != "" || h.Gname != "" {
			t.Errorf("entry %d (%s): user/group names %q/%q, want numeric ids only", i, w.name, h.Uname, h.Gname)
		}
	}
	if h, err := tr.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("extra entry %+v (err %v)", h, err)
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

// TestToTarExtractsWithGNUTar hands the stream to an independent consumer: GNU tar, run as root,
// must extract exactly the model (less its sockets).
func TestToTarExtractsWithGNUTar(t *testing.T) {
	requireRoot(t)
	tarBin, err := exec.LookPath("tar")
	if err != nil {
		t.Skip("GNU tar not installed")
	}
	img, src := buildModel(t, 4096, everyTypeSpecs()...)
	var buf bytes.Buffer
	if err := ToTar(context.Background(), img, src, &buf, Options{}); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	cmd := exec.Command(tarBin, "--xattrs", "--xattrs-include=*", "--numeric-owner", "--same-owner", "-xpf", "-", "-C", out)
	cmd.Stdin = &buf
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tar -x: %v: %s", err, msg)
	}
	got, err := fstree.Snapshot(out, fstree.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if d := fstree.Diff(withoutSockets(expectTree(t, img, src)), got); d != nil {
		t.Fatalf("GNU tar extracted a different tree (a = model, b = disk):\n%s", strings.Join(d, "\n"))
	}
}

func TestToTarWritesNothingForAnInvalidImage(t *testing.T) {
	img, src := buildModel(t, 4096, spec{path: "/", mode: rafs.SIFDIR | 0o755},
		spec{path: "/a", mode: rafs.SIFREG | 0o644, data: "ok"}, spec{path: "/b", mode: rafs.SIFREG | 0o644, data: "x"})
	img.Root.Child("b").Name = "../b"
	var buf bytes.Buffer
	err := ToTar(context.Background(), img, src, &buf, Options{})
	if !errors.Is(err, rafs.ErrCorrupt) || buf.Len() != 0 {
		t.Fatalf("ToTar error %v after writing %d bytes; want ErrCorrupt before any byte", err, buf.Len())
	}
}
