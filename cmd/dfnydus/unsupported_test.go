package main

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dfnydus/dfnydus/rafs"
)

// withBlobFeature returns a copy of the bootstrap boot whose first blob carries feature too:
// in a v6 bootstrap at byte 84 of its 256-byte blob table entry (the table's offset is the u64
// at byte 8 of the extended superblock at 1152; rafs/src/metadata/layout/v6.rs RafsV6Blob), in
// a v5 one at byte 4 of its 64-byte extended blob table entry (the table's offset is the u64 at
// byte 72 of the superblock; layout/v5.rs RafsV5ExtBlobEntry).
func withBlobFeature(t *testing.T, boot []byte, version int, feature uint32) []byte {
	t.Helper()
	data := append([]byte(nil), boot...)
	le := binary.LittleEndian
	var off uint64
	if version == 6 {
		off = le.Uint64(data[1152+8:]) + 84
	} else {
		off = le.Uint64(data[72:]) + 4
	}
	le.PutUint32(data[off:], le.Uint32(data[off:])|feature)
	return data
}

// An image with a blob whose chunks the data path cannot read is refused by check, unpack and
// build --chunk-dict before anything is read or written, with one line naming the blob and the
// feature; inspect, which reads no chunk, lists it and marks the blob with the same words. Mounts
// refuse it the same way (peer/daemon, peer/nydusapi).
func TestUnsupportedBlobFeaturesRefused(t *testing.T) {
	src := writeFiles(t, map[string]string{"etc/app.conf": strings.Repeat("setting = value\n", 100)})
	features := []struct {
		name string
		bit  uint32
	}{
		{"zran", rafs.BlobFeatureZran},
		{"batch", rafs.BlobFeatureBatch},
		{"encrypted", rafs.BlobFeatureEncrypted},
		{"tarfs", rafs.BlobFeatureTarfs},
		{"external", rafs.BlobFeatureExternal},
		{"unknown features", 0x4000},
	}
	for _, version := range []int{5, 6} {
		dir := t.TempDir()
		boot, blobs := filepath.Join(dir, "image.boot"), filepath.Join(dir, "blobs")
		if _, err := runCLI(t, "build", "--fs-version", map[int]string{5: "5", 6: "6"}[version], "--bootstrap", boot, "--blob-dir", blobs, src); err != nil {
			t.Fatal(err)
		}
		built, err := os.ReadFile(boot)
		if err != nil {
			t.Fatal(err)
		}
		ids, err := os.ReadDir(blobs)
		if err != nil || len(ids) != 1 {
			t.Fatalf("blob dir holds %v (%v), want one blob", ids, err)
		}
		id := ids[0].Name()
		// The unpatched image passes every command, so a refusal below is the feature's.
		if _, err := runCLI(t, "check", "--bootstrap", boot, "--blob-dir", blobs); err != nil {
			t.Fatalf("v%d: the unpatched image fails check: %v", version, err)
		}
		for _, f := range features {
			patched := filepath.Join(t.TempDir(), "patched.boot")
			if err := os.WriteFile(patched, withBlobFeature(t, built, version, f.bit), 0o644); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(t.TempDir(), "out")
			for _, args := range [][]string{
				{"inspect", "--bootstrap", patched},
				{"check", "--bootstrap", patched, "--blob-dir", blobs},
				{"unpack", "--bootstrap", patched, "--blob-dir", blobs, "--output", out},
				{"build", "--fs-version", "6", "--chunk-dict", patched, "--bootstrap", filepath.Join(out, "new.boot"), "--blob-dir", out, src},
			} {
				t.Run(strings.Join([]string{map[int]string{5: "v5", 6: "v6"}[version], f.name, args[0]}, "/"), func(t *testing.T) {
					stdout, err := runCLI(t, args...)
					want := "blob " + id + " uses " + f.name + " ("
					if args[0] == "inspect" {
						if err != nil || !strings.Contains(stdout, "  unreadable: "+want) || !strings.Contains(stdout, "etc/app.conf") {
							t.Fatalf("inspect: %v, printed:\n%s\nwant the listing with the blob marked %q", err, stdout, "unreadable: "+want)
						}
						return
					}
					if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
						t.Fatalf("error %v, want one line containing %q", err, want)
					}
					if stdout != "" {
						t.Errorf("printed %q before refusing", stdout)
					}
					if _, err := os.Stat(out); !os.IsNotExist(err) {
						t.Errorf("wrote %s before refusing", out)
					}
				})
			}
		}
	}
}
