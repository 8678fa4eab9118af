package coldstart_test

import (
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/dfnydus/dfnydus/test/internal/testenv"
)

// Extra incompressible data in the cold-start image that the workload never reads.
const (
	dataFiles    = 25
	dataFileSize = 10 << 20
	dataDir      = "opt/coldstart-data"
)

// layoutInfo describes an OCI layout built for a benchmark.
type layoutInfo struct {
	dir        string // the OCI layout; tag "img"
	layers     int
	compressed int64 // sum of the layer blobs (gzip)
	files      int64 // bytes of the tar streams the layers were made from
}

// coldstartLayout builds (once, cached next to the debootstrap tree) an OCI layout "img" of two
// gzip layers: a Debian minbase rootfs and 250 MiB of random data under /opt/coldstart-data that
// the workload never reads.
func coldstartLayout(b *testing.B) layoutInfo {
	b.Helper()
	root := testenv.Rootfs(b)
	layout := filepath.Join(filepath.Dir(root), "coldstart-layout")
	if _, err := os.Stat(filepath.Join(layout, "index.json")); err != nil {
		buildColdstartLayout(b, root, layout)
	}
	return describeLayout(b, layout)
}

func buildColdstartLayout(b *testing.B, root, layout string) {
	b.Helper()
	tmp := layout + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		b.Fatal(err)
	}
	work := testenv.TempDir(b)
	data := filepath.Join(work, "data")
	if err := os.MkdirAll(filepath.Join(data, dataDir), 0o755); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < dataFiles; i++ {
		writeRandomFile(b, filepath.Join(data, dataDir, fmt.Sprintf("blob-%02d.bin", i)), dataFileSize)
	}
	testenv.MustExec(b, "umoci", "init", "--layout", tmp)
	testenv.MustExec(b, "umoci", "new", "--image", tmp+":img")
	var raw int64
	for i, src := range []string{root, data} {
		tarball := filepath.Join(work, fmt.Sprintf("l%d.tar", i))
		testenv.MustExec(b, "tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-C", src, "-cf", tarball, ".")
		fi, err := os.Stat(tarball)
		if err != nil {
			b.Fatal(err)
		}
		raw += fi.Size()
		testenv.MustExec(b, "umoci", "raw", "add-layer", "--image", tmp+":img", tarball)
		os.Remove(tarball)
	}
	if err := os.WriteFile(filepath.Join(tmp, "uncompressed-bytes"), []byte(strconv.FormatInt(raw, 10)), 0o644); err != nil {
		b.Fatal(err)
	}
	if err := os.Rename(tmp, layout); err != nil {
		b.Fatal(err)
	}
}

func describeLayout(b *testing.B, layout string) layoutInfo {
	b.Helper()
	info := layoutInfo{dir: layout}
	for _, l := range testenv.OCILayers(b, layout, "img") {
		fi, err := os.Stat(l)
		if err != nil {
			b.Fatal(err)
		}
		info.layers++
		info.compressed += fi.Size()
	}
	if data, err := os.ReadFile(filepath.Join(layout, "uncompressed-bytes")); err == nil {
		info.files, _ = strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	}
	return info
}

func writeRandomFile(b *testing.B, p string, size int64) {
	b.Helper()
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.CopyN(f, rand.Reader, size); err != nil {
		f.Close()
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
}

// pushAndConvert copies tag "img" of the layout to the registry as REPO:v1 (skopeo) and converts
// it to REPO-nydus:v1 (dfnydus convert); both run through exec (in the registry's node or on the
// host). It returns the OCI and the nydus references.
func pushAndConvert(b *testing.B, exec execFunc, layout, host, repo string) (ociRef, nydusRef string) {
	b.Helper()
	ociRef, nydusRef = host+"/"+repo+":v1", host+"/"+repo+"-nydus:v1"
	mustRun(b, exec, "skopeo", "copy", "--quiet", "--dest-tls-verify=false", "oci:"+layout+":img", "docker://"+ociRef)
	mustRun(b, exec, testenv.Binary(b), "convert", "--log-level", "warn", "--plain-http",
		"--work-dir", filepath.Join(testenv.TempDir(b), "work"), ociRef, nydusRef)
	return ociRef, nydusRef
}
