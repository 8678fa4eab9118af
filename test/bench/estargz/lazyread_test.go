package main

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
)

const bigFileSize = 8 << 20

// TestEstargzLazyRead converts a small tree with an 8 MiB incompressible file to eStargz, pushes
// it to a real registry, mounts it with the stargz store through a counting proxy, and checks
// that
//   - the store's diff directory appears at <mnt>/<base64(ref)>/<TOC digest>/diff (READY line),
//   - resolving the layer does not download the blob,
//   - a small file and the 8 MiB file read back equal to the source,
//   - the store's own STATS agree with what the registry served,
//   - SIGTERM unmounts and the process exits cleanly.
//
// It prints the bytes and requests the registry served for each step (go test -v).
func TestEstargzLazyRead(t *testing.T) {
	requireLazyEnv(t)
	work := t.TempDir()
	src := filepath.Join(work, "src")
	files := writeSourceTree(t, src)
	layerTar := filepath.Join(work, "layer.tar")
	writeTar(t, src, layerTar)

	regAddr := startRegistry(t)
	proxy := startCountingProxy(t, regAddr)

	// Push straight to the registry: the proxy counts only what the mounted store fetches.
	out := runCLI(t, "convert", "--src-tar", layerTar, "--registry", regAddr, "--repo", "bench/lazy", "--tag", "v1")
	conv := parseConvertOutput(t, out)
	if want := regAddr + "/bench/lazy:v1"; conv.ref != want {
		t.Fatalf("convert printed REF %q, want %q", conv.ref, want)
	}

	ref, err := parseRef(proxy.host + "/bench/lazy:v1")
	if err != nil {
		t.Fatal(err)
	}
	mnt, root := filepath.Join(work, "mnt"), filepath.Join(work, "root")
	start := time.Now()
	m := startCLI(t, "mount", "--ref", ref.String(), "--mountpoint", mnt, "--root", root, "--no-prefetch")
	t.Cleanup(func() {
		if err := m.stop(30 * time.Second); err != nil {
			t.Errorf("estargz-bench mount: %v; stderr:\n%s", err, m.stderr)
		}
		if isMounted(t, mnt) {
			t.Errorf("%s still mounted after the mount process exited", mnt)
			_ = syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
	})
	diff := m.line(t, "READY", 2*time.Minute)
	if want := filepath.Join(layerDir(mnt, ref, conv.toc), "diff"); diff != want {
		t.Fatalf("READY %s, want %s", diff, want)
	}
	atReady, readyTook := proxy.counts(), time.Since(start)
	if atReady.bytes >= conv.blobSize {
		t.Errorf("resolving the layer fetched %d bytes, the whole blob is %d: not lazy", atReady.bytes, conv.blobSize)
	}

	entries, err := os.ReadDir(diff)
	if err != nil {
		t.Fatalf("read diff root: %v", err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := []string{"bin", "data"}; !slices.Equal(names, want) {
		t.Errorf("diff root has %q, want %q", names, want)
	}

	// The small file first: its region of the blob is then not yet fetched by the big file's read.
	smallBefore, start := proxy.counts(), time.Now()
	checkFile(t, filepath.Join(diff, "bin/hello.txt"), files["bin/hello.txt"])
	afterSmall, smallTook := proxy.counts(), time.Since(start)
	start = time.Now()
	checkFile(t, filepath.Join(diff, "data/big.bin"), files["data/big.bin"])
	afterBig, bigTook := proxy.counts(), time.Since(start)
	if target, err := os.Readlink(filepath.Join(diff, "bin/link")); err != nil || target != "hello.txt" {
		t.Errorf("bin/link -> %q (%v), want hello.txt", target, err)
	}

	if err := m.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	storeBytes := statsBytes(t, m.line(t, "STATS", 30*time.Second))
	total := proxy.counts()
	if storeBytes <= 0 || storeBytes > total.bytes {
		t.Errorf("store counted %d bytes received, proxy sent %d", storeBytes, total.bytes)
	}

	t.Logf("image: blob %d bytes (%.2f MB), TOC %s", conv.blobSize, float64(conv.blobSize)/1e6, conv.toc)
	t.Logf("start + resolve layer (manifest, config, footer, TOC): %s in %s", atReady, readyTook.Round(time.Millisecond))
	t.Logf("read small file:  %s in %s", afterSmall.sub(smallBefore), smallTook.Round(time.Microsecond))
	t.Logf("read 8 MiB file:  %s in %s", afterBig.sub(afterSmall), bigTook.Round(time.Millisecond))
	t.Logf("total served:     %s; store counted %d bytes received", total, storeBytes)

	if err := m.stop(30 * time.Second); err != nil {
		t.Fatalf("estargz-bench mount exited with %v; stderr:\n%s", err, m.stderr)
	}
	if isMounted(t, mnt) {
		t.Fatalf("%s still mounted after SIGTERM", mnt)
	}
}

// writeSourceTree writes bin/hello.txt, a symlink and data/big.bin (8 MiB of seeded random bytes)
// under dir (the small file comes first in the tar, far from the TOC at the blob's end, so reading
// it is a fetch of its own), and returns the regular files' SHA-256 by relative path.
func writeSourceTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	big := make([]byte, bigFileSize)
	rng := rand.NewChaCha8([32]byte{'e', 's', 'g', 'z'})
	_, _ = rng.Read(big)
	files := map[string][]byte{
		"data/big.bin":  big,
		"bin/hello.txt": []byte("hello from the eStargz baseline\n"),
	}
	sums := map[string]string{}
	for name, b := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		sums[name] = hex.EncodeToString(sum[:])
	}
	if err := os.Symlink("hello.txt", filepath.Join(dir, "bin/link")); err != nil {
		t.Fatal(err)
	}
	return sums
}

// checkFile streams path and compares its SHA-256 with want.
func checkFile(t *testing.T, path, want string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		t.Fatalf("%s: sha256 %s, want %s (source)", path, got, want)
	}
}

type convertResult struct {
	ref      string
	toc      digest.Digest
	blob     digest.Digest
	blobSize int64
}

// parseConvertOutput parses convert's REF, TOC and LAYER lines.
func parseConvertOutput(t *testing.T, out string) convertResult {
	t.Helper()
	var r convertResult
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		key, rest, _ := strings.Cut(l, " ")
		var err error
		switch key {
		case "REF":
			r.ref = rest
		case "TOC":
			r.toc, err = digest.Parse(rest)
		case "LAYER":
			d, size, _ := strings.Cut(rest, " ")
			if r.blob, err = digest.Parse(d); err == nil {
				r.blobSize, err = strconv.ParseInt(size, 10, 64)
			}
		default:
			t.Fatalf("convert printed unexpected line %q", l)
		}
		if err != nil {
			t.Fatalf("convert line %q: %v", l, err)
		}
	}
	if r.ref == "" || r.toc == "" || r.blob == "" {
		t.Fatalf("convert output incomplete:\n%s", out)
	}
	return r
}

func statsBytes(t *testing.T, line string) int64 {
	t.Helper()
	v, err := field(line, "bytes")
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		t.Fatalf("STATS %q: %v", line, err)
	}
	return n
}
