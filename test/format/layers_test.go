package format_test

import (
	"archive/tar"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dfnydus/dfnydus/test/internal/testenv"
)

// ociLayers returns the layer blob paths of tag in an OCI layout, lowest first.
func ociLayers(t *testing.T, layout, tag string) []string {
	t.Helper()
	var index struct {
		Manifests []struct {
			Digest      string            `json:"digest"`
			Annotations map[string]string `json:"annotations"`
		} `json:"manifests"`
	}
	readJSON(t, filepath.Join(layout, "index.json"), &index)
	for _, m := range index.Manifests {
		if m.Annotations["org.opencontainers.image.ref.name"] != tag {
			continue
		}
		var man struct {
			Layers []struct {
				Digest string `json:"digest"`
			} `json:"layers"`
		}
		readJSON(t, blobPath(layout, m.Digest), &man)
		var out []string
		for _, l := range man.Layers {
			out = append(out, blobPath(layout, l.Digest))
		}
		return out
	}
	t.Fatalf("tag %s not in %s", tag, layout)
	return nil
}

func blobPath(layout, digest string) string {
	return filepath.Join(layout, "blobs", strings.Replace(digest, ":", "/", 1))
}

func readJSON(t *testing.T, p string, v any) {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", p, err)
	}
}

// sh runs a shell script, failing the test on error.
func sh(t *testing.T, script string) {
	t.Helper()
	testenv.MustExec(t, "bash", "-euo", "pipefail", "-c", script)
}

// writeLayer writes a tar layer by hand (umoci raw add-layer compresses it), for whiteout forms umoci never generates itself.
func writeLayer(t *testing.T, p string, entries []tar.Header, bodies map[string]string) {
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
	for _, c := range []interface{ Close() error }{tw, f} {
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// A multi-layer image made with umoci (deletions, replacements, hard links, xattrs) plus a hand-made
// layer with an opaque directory and explicit whiteouts: the merged nydus image unpacks to exactly what
// `umoci unpack` gives for the same layers, for both fs-versions.
func TestMultiLayerWhiteoutsMatchUmoci(t *testing.T) {
	testenv.RequireRoot(t)
	umoci := testenv.RequireTool(t, "umoci")
	dir := testenv.TempDir(t)
	layout, bundle := filepath.Join(dir, "layout"), filepath.Join(dir, "bundle")
	sh(t, `
umoci=`+umoci+` L=`+layout+` B=`+bundle+`
$umoci init --layout $L
$umoci new --image $L:img
$umoci unpack --image $L:img $B
R=$B/rootfs
# layer 1: a small tree
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
# layer 2: delete a file and a directory, replace a dir by a file, modify a file, new hard link
rm $R/etc/app/conf.d/b.conf; rm -rf $R/var/cache/app
rm -rf $R/opt/keep && echo now-a-file > $R/opt/keep
echo changed >> $R/etc/app/a.conf; ln $R/usr/lib/app/big.bin $R/usr/lib/app/big-link
$umoci repack --image $L:img $B
`)
	// layer 3, by hand: /etc/app becomes opaque (its lower contents vanish, only new.conf stays),
	// /srv/www/link is whited out, and a file whose whiteout comes in the same layer as its sibling.
	writeLayer(t, filepath.Join(dir, "l3.tar"), []tar.Header{
		{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "etc/app/", Typeflag: tar.TypeDir, Mode: 0o750, Uid: 7, Gid: 8},
		{Name: "etc/app/.wh..wh..opq", Typeflag: tar.TypeReg, Mode: 0o644},
		{Name: "etc/app/new.conf", Typeflag: tar.TypeReg, Mode: 0o600, PAXRecords: map[string]string{"SCHILY.xattr.user.note": "opaque"}},
		{Name: "srv/www/.wh.link", Typeflag: tar.TypeReg, Mode: 0o644},
		{Name: "usr/lib/app/extra", Typeflag: tar.TypeReg, Mode: 0o644},
	}, map[string]string{"etc/app/new.conf": "new\n", "usr/lib/app/extra": "x"})
	sh(t, umoci+` raw add-layer --image `+layout+`:img `+filepath.Join(dir, "l3.tar")+`
`+umoci+` unpack --image `+layout+`:img `+filepath.Join(dir, "oracle"))

	layers := ociLayers(t, layout, "img")
	if len(layers) != 3 {
		t.Fatalf("umoci made %d layers, want 3", len(layers))
	}
	want := snapshot(t, filepath.Join(dir, "oracle", "rootfs"))
	for _, must := range []string{"/etc/app/new.conf", "/opt/keep", "/usr/lib/app/big-link", "/srv/null"} {
		if _, ok := want[must]; !ok {
			t.Fatalf("oracle lacks %s: the scenario did not build as intended", must)
		}
	}
	for _, gone := range []string{"/etc/app/a.conf", "/var/cache/app", "/srv/www/link", "/etc/app/conf.d"} {
		if _, ok := want[gone]; ok {
			t.Fatalf("oracle still has %s: the scenario did not build as intended", gone)
		}
	}
	for _, fsv := range []string{"5", "6"} {
		t.Run("v"+fsv, func(t *testing.T) {
			d := filepath.Join(dir, "v"+fsv)
			img := build(t, d, []string{"--fs-version", fsv}, layers...)
			if len(img.summary.NewBlobs) != 3 {
				t.Errorf("layer blobs %v: want one entry per layer", img.summary.NewBlobs)
			}
			testenv.MustRun(t, "check", "--bootstrap", img.boot, "--blob-dir", img.blobs)
			out := filepath.Join(d, "out")
			testenv.MustRun(t, "unpack", "--bootstrap", img.boot, "--blob-dir", img.blobs, "--output", out)
			assertSameTree(t, want, snapshot(t, out))
		})
	}
}
