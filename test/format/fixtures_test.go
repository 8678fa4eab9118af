// Package format_test checks the image tool end to end: the dfnydus binary against real nydus images
// made by upstream's nydus-image, real trees, umoci, erofs-utils and the kernel's EROFS driver.
package format_test

import (
	"bufio"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/dfnydus/dfnydus/rafs/inspect"
	"github.com/dfnydus/dfnydus/test/internal/testenv"
)

var (
	v5Dir      = filepath.Join(testenv.Fixtures(), "v5-repeatable")
	v6Dir      = filepath.Join(testenv.Fixtures(), "v6-zstd-blake3")
	v5SHA256   = filepath.Join(v5Dir, "sha256-nocompress-repeatable")
	v5Blake3   = filepath.Join(v5Dir, "blake3-lz4_block-non_repeatable")
	v6Boot     = filepath.Join(v6Dir, "rafs-v6-2.2.boot")
	v5BlobDir  = filepath.Join(v5Dir, "blobs")
	v6BlobDir  = v6Dir
	resultFile = v5SHA256 + ".result"
)

// A blob with an inlined bootstrap: --bootstrap takes the blob itself.
var (
	v6InlineDir  = filepath.Join(testenv.Fixtures(), "v6-inlined-bootstrap")
	v6InlineBlob = filepath.Join(v6InlineDir, "2fa78cad554b75ac91a4a125ed148d0ddeb25efa4aaa8bd80e5dc292690a4dca")
)

// Every upstream image passes check.
func TestFixturesCheck(t *testing.T) {
	for _, tc := range []struct{ name, boot, blobs, want string }{
		{"v5 sha256", v5SHA256, v5BlobDir, "OK: RAFS v5"},
		{"v5 blake3", v5Blake3, v5BlobDir, "OK: RAFS v5"},
		{"v6 zstd blake3", v6Boot, v6BlobDir, "OK: RAFS v6"},
		{"v6 blob with inlined bootstrap", v6InlineBlob, v6InlineDir, "OK: RAFS v6, 4 entries, 1 blobs, 3 chunks"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := testenv.MustRun(t, "check", "--bootstrap", tc.boot, "--blob-dir", tc.blobs)
			if !strings.HasPrefix(out, tc.want) {
				t.Fatalf("check printed %q, want prefix %q", out, tc.want)
			}
		})
	}
}

// treeNode is the `tree -J` JSON of the .result file.
type treeNode struct {
	Type     string     `json:"type"`
	Name     string     `json:"name"`
	Target   string     `json:"target"`
	Contents []treeNode `json:"contents"`
}

// flattenTree maps path -> "type[->target]" for the expected tree.
func flattenTree(n treeNode, prefix string, out map[string]string) {
	p := prefix + "/" + n.Name
	if n.Name == "" {
		p = "/"
	}
	desc := n.Type
	if n.Type == "link" {
		desc += "->" + n.Target
	}
	out[p] = desc
	for _, c := range n.Contents {
		flattenTree(c, strings.TrimSuffix(p, "/"), out)
	}
}

// readResult parses the fixture's .result file: a tree -J JSON document followed by md5sum lines.
func readResult(t *testing.T) (map[string]string, map[string]string) {
	t.Helper()
	data, err := os.ReadFile(resultFile)
	if err != nil {
		t.Fatal(err)
	}
	end := strings.Index(string(data), "\n]\n")
	if end < 0 {
		t.Fatal("no JSON document in the .result file")
	}
	var doc []json.RawMessage
	if err := json.Unmarshal(data[:end+3], &doc); err != nil {
		t.Fatal(err)
	}
	var root treeNode
	if err := json.Unmarshal(doc[0], &root); err != nil {
		t.Fatal(err)
	}
	tree := map[string]string{}
	flattenTree(root, "", tree)
	sums := map[string]string{}
	line := regexp.MustCompile(`^([0-9a-f]{32})  (/.*)$`)
	sc := bufio.NewScanner(strings.NewReader(string(data[end+3:])))
	for sc.Scan() {
		if m := line.FindStringSubmatch(sc.Text()); m != nil {
			sums[m[2]] = m[1]
		}
	}
	if len(sums) == 0 {
		t.Fatal("no md5 lines in the .result file")
	}
	return tree, sums
}

// inspect of the v5 image lists exactly the tree upstream recorded, for both digesters.
func TestFixtureV5InspectMatchesResult(t *testing.T) {
	want, _ := readResult(t)
	for _, boot := range []string{v5SHA256, v5Blake3} {
		t.Run(filepath.Base(boot), func(t *testing.T) {
			var entries []inspect.Entry
			if err := json.Unmarshal([]byte(testenv.MustRun(t, "inspect", "--bootstrap", boot, "--json")), &entries); err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for _, e := range entries {
				desc := map[string]string{"dir": "directory", "file": "file", "symlink": "link"}[e.Type]
				if desc == "link" {
					desc += "->" + e.Target
				}
				got[e.Path] = desc
				if e.Type != "dir" && e.Type != "symlink" && e.Digest == "" {
					t.Errorf("%s: no v5 digest in inspect output", e.Path)
				}
			}
			assertSameMap(t, "entry", want, got)
		})
	}
}

// unpack of the v5 image reproduces every file upstream checksummed.
func TestFixtureV5UnpackMatchesMD5(t *testing.T) {
	_, sums := readResult(t)
	out := filepath.Join(t.TempDir(), "out")
	testenv.MustRun(t, "unpack", "--bootstrap", v5SHA256, "--blob-dir", v5BlobDir, "--output", out)
	got := map[string]string{}
	for p := range sums {
		data, err := os.ReadFile(filepath.Join(out, p))
		if err != nil {
			t.Fatal(err)
		}
		h := md5.Sum(data)
		got[p] = hex.EncodeToString(h[:])
	}
	assertSameMap(t, "md5", sums, got)
	// Hard links stay hard links.
	a, _ := os.Stat(filepath.Join(out, "hardlink-test/foo"))
	b, _ := os.Stat(filepath.Join(out, "hardlink-test/test.sh"))
	if a == nil || b == nil || !os.SameFile(a, b) {
		t.Errorf("hardlink-test/foo and hardlink-test/test.sh are not one inode after unpack")
	}
}

// unpack of the v6 image yields its two files, each chunk verified against its blake3 digest on
// the way (a tampered blob must fail the unpack, proving the verification is there).
func TestFixtureV6Unpack(t *testing.T) {
	var entries []inspect.Entry
	if err := json.Unmarshal([]byte(testenv.MustRun(t, "inspect", "--bootstrap", v6Boot, "--json")), &entries); err != nil {
		t.Fatal(err)
	}
	sizes := map[string]int64{}
	for _, e := range entries {
		if e.Type == "file" {
			sizes[e.Path] = int64(e.Size)
		}
	}
	if len(sizes) != 2 || sizes["/lib.rs"] == 0 || sizes["/sync_io.rs"] == 0 {
		t.Fatalf("v6 fixture files: %v, want /lib.rs and /sync_io.rs", sizes)
	}
	out := filepath.Join(t.TempDir(), "out")
	testenv.MustRun(t, "unpack", "--bootstrap", v6Boot, "--blob-dir", v6BlobDir, "--output", out)
	for p, size := range sizes {
		fi, err := os.Stat(filepath.Join(out, p))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() != size {
			t.Errorf("%s: %d bytes, want %d", p, fi.Size(), size)
		}
		data, _ := os.ReadFile(filepath.Join(out, p))
		if !strings.Contains(string(data), "Copyright") {
			t.Errorf("%s does not look like Rust source", p)
		}
	}

	// The same blob with one byte of chunk data flipped: unpack and check must refuse.
	bad := t.TempDir()
	blobName := ""
	ents, _ := os.ReadDir(v6BlobDir)
	for _, e := range ents {
		if len(e.Name()) == 64 {
			blobName = e.Name()
		}
	}
	data, err := os.ReadFile(filepath.Join(v6BlobDir, blobName))
	if err != nil {
		t.Fatal(err)
	}
	data[100] ^= 0xff
	if err := os.WriteFile(filepath.Join(bad, blobName), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if r := testenv.Run(t, "unpack", "--bootstrap", v6Boot, "--blob-dir", bad, "--output", filepath.Join(bad, "out")); r.Err == nil {
		t.Error("unpack from a tampered blob succeeded")
	}
	r := testenv.Run(t, "check", "--bootstrap", v6Boot, "--blob-dir", bad)
	if r.Err == nil || !strings.Contains(r.Stderr, blobName) {
		t.Errorf("check of a tampered blob: err=%v stderr=%q; want a failure naming the blob", r.Err, r.Stderr)
	}
}

func assertSameMap(t *testing.T, what string, want, got map[string]string) {
	t.Helper()
	var diffs []string
	for k, w := range want {
		if g, ok := got[k]; !ok {
			diffs = append(diffs, "missing "+what+" "+k)
		} else if g != w {
			diffs = append(diffs, k+": got "+g+", want "+w)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			diffs = append(diffs, "unexpected "+what+" "+k)
		}
	}
	sort.Strings(diffs)
	for _, d := range diffs {
		t.Error(d)
	}
}
