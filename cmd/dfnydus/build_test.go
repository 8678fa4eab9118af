package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Outputs a build could not write are refused before anything is built, naming the flag; a
// missing parent directory is not an error (the build makes it).
func TestBuildChecksOutputsFirst(t *testing.T) {
	src := writeFiles(t, map[string]string{"etc/app.conf": strings.Repeat("setting = value\n", 100)})
	aFile := filepath.Join(t.TempDir(), "a-file")
	if err := os.WriteFile(aFile, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args func(out, blobs string) []string
		want string // in the error; "" for a build that succeeds
	}{
		{"bootstrap is a directory", func(out, blobs string) []string {
			return []string{"--bootstrap", out, "--blob-dir", blobs}
		}, "--bootstrap " + "OUT is a directory"},
		{"bootstrap under a file", func(out, blobs string) []string {
			return []string{"--bootstrap", filepath.Join(aFile, "image.boot"), "--blob-dir", blobs}
		}, aFile + " is not a directory"},
		{"output-json is a directory", func(out, blobs string) []string {
			return []string{"--bootstrap", filepath.Join(out, "image.boot"), "--blob-dir", blobs, "--output-json", out}
		}, "--output-json OUT is a directory"},
		{"blob-dir is a file", func(out, blobs string) []string {
			return []string{"--bootstrap", filepath.Join(out, "image.boot"), "--blob-dir", aFile}
		}, "--blob-dir " + aFile + " is not a directory"},
		{"neither bootstrap nor inline", func(out, blobs string) []string {
			return []string{"--blob-dir", blobs}
		}, "give --bootstrap FILE, or --blob-inline-meta"},
		{"both bootstrap and inline", func(out, blobs string) []string {
			return []string{"--bootstrap", filepath.Join(out, "image.boot"), "--blob-inline-meta", "--blob-dir", blobs}
		}, "exclude each other"},
		{"inline into a v5 blob", func(out, blobs string) []string {
			return []string{"--blob-inline-meta", "--fs-version", "5", "--blob-dir", blobs}
		}, "--blob-inline-meta needs --fs-version 6"},
		{"bootstrap in directories yet to make", func(out, blobs string) []string {
			return []string{"--bootstrap", filepath.Join(out, "new", "dir", "image.boot"), "--blob-dir", filepath.Join(out, "new", "blobs")}
		}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, blobs := t.TempDir(), t.TempDir()
			_, err := runCLI(t, append(append([]string{"build"}, tc.args(out, blobs)...), src)...)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			want := strings.ReplaceAll(tc.want, "OUT", out)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("error %v, want one containing %q", err, want)
			}
			if left, _ := os.ReadDir(blobs); len(left) != 0 {
				t.Errorf("the build ran before it was refused: %d files in the blob dir", len(left))
			}
		})
	}
}

// A build with --blob-inline-meta writes no bootstrap file: its last blob, given as --bootstrap,
// is the whole image for inspect and check.
func TestBuildBlobInlineMeta(t *testing.T) {
	src := writeFiles(t, map[string]string{"etc/app.conf": strings.Repeat("setting = value\n", 100), "bin/tool": "binary"})
	blobs := t.TempDir()
	summary := filepath.Join(t.TempDir(), "summary.json")
	if _, err := runCLI(t, "build", "--blob-inline-meta", "--blob-dir", blobs, "--output-json", summary, src); err != nil {
		t.Fatal(err)
	}
	files, err := os.ReadDir(blobs)
	if err != nil || len(files) != 1 {
		t.Fatalf("blob dir holds %v (%v), want one blob", files, err)
	}
	blob := filepath.Join(blobs, files[0].Name())
	if data, err := os.ReadFile(summary); err != nil || !strings.Contains(string(data), `"bootstrap": "`+blob+`"`) {
		t.Errorf("summary %s (%v) does not name the blob as the bootstrap", data, err)
	}
	out, err := runCLI(t, "inspect", "--bootstrap", blob)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "blob 0: "+files[0].Name()) || !strings.Contains(out, "/etc/app.conf") {
		t.Errorf("inspect printed\n%s\nwant the blob by its id and /etc/app.conf", out)
	}
	if out, err := runCLI(t, "check", "--bootstrap", blob, "--blob-dir", blobs); err != nil || !strings.HasPrefix(out, "OK: RAFS v6") {
		t.Errorf("check: %q, %v", out, err)
	}
}
