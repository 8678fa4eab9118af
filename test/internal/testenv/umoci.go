package testenv

import (
	"archive/tar"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// WhiteoutImage builds, with umoci, an OCI image layout under dir whose tag "img" has three layers
// that exercise overlay semantics: a small tree with xattrs, owners, a setuid file, a hard link, a
// symlink, a fifo and a device (layer 1); deletions, a directory replaced by a file, a modified file
// and a new hard link (layer 2, made by umoci repack); and a hand-written layer with an opaque
// directory and an explicit whiteout (layer 3, umoci raw add-layer). It returns the layout path.
func WhiteoutImage(t testing.TB, dir string) string {
	t.Helper()
	RequireRoot(t)
	umoci := RequireTool(t, "umoci")
	layout, bundle := filepath.Join(dir, "layout"), filepath.Join(dir, "bundle")
	MustExec(t, "bash", "-euo", "pipefail", "-c", `
umoci=`+umoci+` L=`+layout+` B=`+bundle+`
$umoci init --layout $L
$umoci new --image $L:img
$umoci unpack --image $L:img $B
R=$B/rootfs
mkdir -p $R/etc/app/conf.d $R/usr/lib/app $R/var/cache/app $R/opt/keep $R/srv/www
echo one > $R/etc/app/a.conf; echo two > $R/etc/app/conf.d/b.conf; echo cache > $R/var/cache/app/blob
head -c 3000000 /dev/urandom > $R/usr/lib/app/big.bin
echo keep > $R/opt/keep/file; ln -s ../etc/app/a.conf $R/srv/www/link
echo site > $R/srv/www/index.html; ln $R/srv/www/index.html $R/srv/www/hardlink.html
mkfifo $R/srv/fifo; mknod $R/srv/null c 1 3
setfattr -n user.kind -v layer1 $R/etc/app/a.conf
chmod 4755 $R/usr/lib/app/big.bin; chown 1234:5678 $R/opt/keep/file
touch -d '2021-02-03 04:05:06.123456789' $R/opt/keep/file
$umoci repack --image $L:img $B
# umoci repack diffs against the manifest the bundle came from: unpack again to stack a new layer
rm -rf $B && $umoci unpack --image $L:img $B
rm $R/etc/app/conf.d/b.conf; rm -rf $R/var/cache/app
rm -rf $R/opt/keep && echo now-a-file > $R/opt/keep
echo changed >> $R/etc/app/a.conf; ln $R/usr/lib/app/big.bin $R/usr/lib/app/big-link
$umoci repack --image $L:img $B
rm -rf $B
`)
	l3 := filepath.Join(dir, "l3.tar")
	WriteTar(t, l3, []tar.Header{
		{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "etc/app/", Typeflag: tar.TypeDir, Mode: 0o750, Uid: 7, Gid: 8},
		{Name: "etc/app/.wh..wh..opq", Typeflag: tar.TypeReg, Mode: 0o644},
		{Name: "etc/app/new.conf", Typeflag: tar.TypeReg, Mode: 0o600, PAXRecords: map[string]string{"SCHILY.xattr.user.note": "opaque"}},
		{Name: "srv/www/.wh.link", Typeflag: tar.TypeReg, Mode: 0o644},
		{Name: "usr/lib/app/extra", Typeflag: tar.TypeReg, Mode: 0o644},
	}, map[string]string{"etc/app/new.conf": "new\n", "usr/lib/app/extra": "x"})
	MustExec(t, umoci, "raw", "add-layer", "--image", layout+":img", l3)
	return layout
}

// WhiteoutImageExpect lists paths WhiteoutImage's final tree must and must not have, to catch a
// scenario that silently stopped building as intended.
var WhiteoutImageExpect = struct{ Present, Absent []string }{
	Present: []string{"/etc/app/new.conf", "/opt/keep", "/usr/lib/app/big-link", "/srv/null"},
	Absent:  []string{"/etc/app/a.conf", "/var/cache/app", "/srv/www/link", "/etc/app/conf.d"},
}

// WriteTar writes a plain tar by hand with fixed times, for layers umoci never generates itself.
func WriteTar(t testing.TB, p string, entries []tar.Header, bodies map[string]string) {
	t.Helper()
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(f)
	for _, h := range entries {
		h := h
		h.ModTime = time.Unix(1700000000, 0)
		h.Format = tar.FormatPAX
		body := bodies[h.Name]
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(body))
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if body != "" {
			if _, err := tw.Write([]byte(body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// OCILayers returns the layer blob paths of tag in an OCI layout, lowest first.
func OCILayers(t testing.TB, layout, tag string) []string {
	t.Helper()
	var index struct {
		Manifests []struct {
			Digest      string            `json:"digest"`
			Annotations map[string]string `json:"annotations"`
		} `json:"manifests"`
	}
	ReadJSON(t, filepath.Join(layout, "index.json"), &index)
	for _, m := range index.Manifests {
		if m.Annotations["org.opencontainers.image.ref.name"] != tag {
			continue
		}
		var man struct {
			Layers []struct {
				Digest string `json:"digest"`
			} `json:"layers"`
		}
		ReadJSON(t, BlobPath(layout, m.Digest), &man)
		var out []string
		for _, l := range man.Layers {
			out = append(out, BlobPath(layout, l.Digest))
		}
		return out
	}
	t.Fatalf("tag %s not in %s", tag, layout)
	return nil
}

// BlobPath is where an OCI layout keeps the blob with the given digest.
func BlobPath(layout, digest string) string {
	return filepath.Join(layout, "blobs", strings.Replace(digest, ":", "/", 1))
}

// ReadJSON decodes a JSON file, failing the test on error.
func ReadJSON(t testing.TB, p string, v any) {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", p, err)
	}
}
