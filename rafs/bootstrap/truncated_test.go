package bootstrap

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dfnydus/dfnydus/rafs"
)

// A bootstrap cut short (a download or copy that stopped) is named truncated, with the size found
// and the least size its superblock makes it, wherever the cut falls; cut before anything that
// names its format, it is no bootstrap, with a hint where the bytes allow one.
func TestLoadNamesTruncation(t *testing.T) {
	v6 := filepath.Join(fixtures, "v6-zstd-blake3", "rafs-v6-2.2.boot")            // 20480 bytes
	v5 := filepath.Join(fixtures, "v5-repeatable", "sha256-nocompress-repeatable") // 18648 bytes
	tests := []struct {
		fixture string
		cut     int    // bytes kept
		want    uint64 // least size named; 0: not a bootstrap
		reason  string // what the least size is, or the hint for "not a bootstrap"
	}{
		{v6, 0, 0, "the file is empty"},
		{v6, 512, 0, "its 512 bytes are all zero, as a RAFS v6 bootstrap cut before its superblock"},
		{v6, 1024, 0, "its 1024 bytes are all zero"},
		{v6, 1028, 4096, "one 4096-byte block"}, // the EROFS magic and nothing more
		{v6, 1100, 4096, "one 4096-byte block"},
		{v6, 1152, 16384, "the end of its root inode"}, // the EROFS superblock, not the RAFS one
		{v6, 1408, 20480, "the end of its chunk table"},
		{v6, 4096, 20480, "the end of its chunk table"},
		{v6, 8000, 20480, "the end of its chunk table"},
		{v6, 16384, 20480, "the end of its chunk table"},
		{v6, 20479, 20480, "the end of its chunk table"},
		{v5, 4, 0, ""}, // half the magic
		{v5, 8, 8192, "the end of its superblock"},
		{v5, 80, 8544, "the end of its extended blob table"},
		{v5, 8192, 8544, "the end of its extended blob table"},
		{v5, 9000, 18616, "the end of the inode record its inode table places last"}, // that record's header is cut
		{v5, 16384, 18616, "the end of the inode record its inode table places last"},
		{v5, 18480, 18616, "the end of the inode record its inode table places last"}, // just before it
	}
	for _, tc := range tests {
		full := mustRead(t, tc.fixture)
		version := map[string]int{v6: 6, v5: 5}[tc.fixture]
		t.Run(fmt.Sprintf("v%d/%d of %d bytes", version, tc.cut, len(full)), func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "image.boot")
			if err := os.WriteFile(p, full[:tc.cut], 0o644); err != nil {
				t.Fatal(err)
			}
			_, _, err := Load(p)
			if tc.want == 0 {
				if !errors.Is(err, ErrNotBootstrap) || !strings.Contains(err.Error(), tc.reason) {
					t.Fatalf("error %v, want %v with %q", err, ErrNotBootstrap, tc.reason)
				}
				return
			}
			var te *rafs.TruncatedError
			if !errors.As(err, &te) || !errors.Is(err, rafs.ErrCorrupt) {
				t.Fatalf("error %v, want a *rafs.TruncatedError (wrapping ErrCorrupt)", err)
			}
			if te.Version != version || te.Size != uint64(tc.cut) || te.Want != tc.want || te.Reason != tc.reason {
				t.Errorf("got v%d, %d bytes found, %d wanted (%s); want v%d, %d, %d (%s)",
					te.Version, te.Size, te.Want, te.Reason, version, tc.cut, tc.want, tc.reason)
			}
			msg := fmt.Sprintf("truncated RAFS v%d bootstrap: found %d bytes, expected at least %d", version, tc.cut, tc.want)
			if !strings.Contains(err.Error(), msg) {
				t.Errorf("message %q does not say %q", err, msg)
			}
		})
	}
}

// Damage that leaves the size whole is not called a cut when the superblock's layout is not
// nydus-image's: a table moved away from where nydus-image puts it is the decoder's to name. (A
// v6 chunk table moved further back is where a cut leaves it, and reads as one.)
func TestLoadDoesNotCallDamageTruncation(t *testing.T) {
	for _, tc := range []struct {
		name    string
		fixture string
		off     int // a little-endian u64 set to the file's size, pointing a table past the end
	}{
		{"v6 blob table offset", filepath.Join(fixtures, "v6-zstd-blake3", "rafs-v6-2.2.boot"), 1152 + 8},
		{"v5 inode table offset", filepath.Join(fixtures, "v5-repeatable", "sha256-nocompress-repeatable"), 32},
		{"v5 blob table offset", filepath.Join(fixtures, "v5-repeatable", "sha256-nocompress-repeatable"), 48},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := mustRead(t, tc.fixture)
			for i := range 8 {
				data[tc.off+i] = byte(uint64(len(data)+4096) >> (8 * i))
			}
			p := filepath.Join(t.TempDir(), "image.boot")
			if err := os.WriteFile(p, data, 0o644); err != nil {
				t.Fatal(err)
			}
			_, _, err := Load(p)
			var te *rafs.TruncatedError
			if !errors.Is(err, rafs.ErrCorrupt) || errors.As(err, &te) {
				t.Errorf("error %v, want a corruption that is not a truncation", err)
			}
		})
	}
}
