package format_test

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dfnydus/dfnydus/test/internal/testenv"
)

// Damaged bootstraps make every command fail with a message, never a crash.
func TestCorruptBootstrapsFailCleanly(t *testing.T) {
	v6, err := os.ReadFile(v6Boot)
	if err != nil {
		t.Fatal(err)
	}
	v5, err := os.ReadFile(v5SHA256)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(b []byte, off int) []byte {
		c := bytes.Clone(b)
		c[off] ^= 0xff
		return c
	}
	cases := []struct {
		name  string
		data  []byte
		blobs string
	}{
		{"empty", nil, v6BlobDir},
		{"garbage", bytes.Repeat([]byte{0x5a}, 8192), v6BlobDir},
		{"v6 truncated in superblock", v6[:1100], v6BlobDir},
		{"v6 truncated in inodes", v6[:len(v6)/2], v6BlobDir},
		{"v6 bad magic", flip(v6, 1024), v6BlobDir},
		{"v5 truncated", v5[:9000], v5BlobDir},
		{"v5 inode digest flipped", flipDigest(t, v5), v5BlobDir},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "boot")
			if err := os.WriteFile(p, tc.data, 0o644); err != nil {
				t.Fatal(err)
			}
			for _, args := range [][]string{
				{"check", "--bootstrap", p, "--blob-dir", tc.blobs},
				{"unpack", "--bootstrap", p, "--blob-dir", tc.blobs, "--output", filepath.Join(t.TempDir(), "out")},
			} {
				r := testenv.Run(t, args...)
				if r.Err == nil {
					t.Errorf("dfnydus %s succeeded on a damaged bootstrap", args[0])
				}
				if strings.Contains(r.Stderr, "panic") || strings.Contains(r.Stderr, "goroutine ") {
					t.Errorf("dfnydus %s crashed:\n%s", args[0], r.Stderr)
				}
				if !strings.Contains(r.Stderr, "dfnydus:") {
					t.Errorf("dfnydus %s printed no error message: %q", args[0], r.Stderr)
				}
			}
		})
	}
}

// flipDigest damages the first inode's stored digest in a v5 bootstrap: the Merkle check must name it.
func flipDigest(t *testing.T, v5 []byte) []byte {
	t.Helper()
	c := bytes.Clone(v5)
	// The inode table starts right after the 8 KiB superblock; the root inode follows the tables. The
	// last inode in the file is a leaf: damage the digest of the inode found by searching from the end
	// would need the layout, so flip a byte inside the root inode's digest, whose offset the table gives.
	off := int(uint32(c[8192])|uint32(c[8193])<<8|uint32(c[8194])<<16|uint32(c[8195])<<24) << 3
	if off <= 0 || off+32 > len(c) {
		t.Fatalf("root inode offset %d out of range", off)
	}
	c[off+5] ^= 0xff
	return c
}

// Tars with ../ names, absolute names and absurd sizes: names stay inside the image, sizes that the
// stream cannot back are errors.
func TestHostileTarsBuild(t *testing.T) {
	mk := func(hdrs []tar.Header, body string, truncate bool) string {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, h := range hdrs {
			h := h
			if err := tw.WriteHeader(&h); err != nil {
				t.Fatal(err)
			}
			if h.Typeflag == tar.TypeReg && h.Size > 0 && !truncate {
				_, _ = tw.Write([]byte(body))
			}
		}
		if !truncate {
			tw.Close()
		}
		p := filepath.Join(t.TempDir(), "layer.tar")
		data := buf.Bytes()
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	t.Run("dot-dot and absolute names stay inside", func(t *testing.T) {
		p := mk([]tar.Header{
			{Name: "../../../etc/evil", Typeflag: tar.TypeReg, Mode: 0o644, Size: 4},
			{Name: "/abs/file", Typeflag: tar.TypeReg, Mode: 0o644, Size: 4},
		}, "evil", false)
		dir := t.TempDir()
		img := build(t, dir, nil, p)
		out := testenv.MustRun(t, "inspect", "--bootstrap", img.boot)
		for _, want := range []string{"/etc/evil", "/abs/file"} {
			if !strings.Contains(out, want) {
				t.Errorf("inspect lacks %s:\n%s", want, out)
			}
		}
	})
	t.Run("size the stream does not hold", func(t *testing.T) {
		p := mk([]tar.Header{{Name: "huge", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1 << 40}}, "", true)
		dir := t.TempDir()
		r := testenv.Run(t, "build", "--bootstrap", filepath.Join(dir, "b"), "--blob-dir", filepath.Join(dir, "blobs"), p)
		if r.Err == nil || !strings.Contains(r.Stderr, "huge") {
			t.Errorf("build of a truncated 1 TiB entry: err=%v stderr=%q; want an error naming the entry", r.Err, r.Stderr)
		}
		if _, err := os.Stat(filepath.Join(dir, "b")); !os.IsNotExist(err) {
			t.Error("a failed build left a bootstrap behind")
		}
		left, _ := os.ReadDir(filepath.Join(dir, "blobs"))
		if len(left) != 0 {
			t.Errorf("a failed build left %d files in the blob dir", len(left))
		}
	})
}
