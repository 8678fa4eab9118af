package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// entries lists dir, so that a test sees any temporary file left behind.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func TestWriteFile(t *testing.T) {
	tests := []struct {
		name string
		old  string // "" for no file before
		data string
		perm os.FileMode
	}{
		{"a new file", "", "new", 0o644},
		{"an existing file is replaced", "old content, longer than the new", "new", 0o644},
		{"an empty file", "old", "", 0o600},
		{"permissions as given, not filtered by the umask", "", "x", 0o666},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "f")
			if tt.old != "" {
				if err := os.WriteFile(p, []byte(tt.old), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if err := WriteFile(p, []byte(tt.data), tt.perm); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(p)
			if err != nil || string(got) != tt.data {
				t.Fatalf("content %q, %v; want %q", got, err, tt.data)
			}
			fi, _ := os.Stat(p)
			if fi.Mode().Perm() != tt.perm {
				t.Errorf("mode %v, want %v", fi.Mode().Perm(), tt.perm)
			}
			if names := entries(t, dir); len(names) != 1 {
				t.Errorf("directory holds %v, want only f", names)
			}
		})
	}
}

func TestNothingVisibleBeforeCommit(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	os.WriteFile(p, []byte("old"), 0o600)
	f, err := Create(p, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write([]byte("new")); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(p); string(got) != "old" {
		t.Fatalf("before Commit, f holds %q, want the old content", got)
	}
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Errorf("Close after Commit: %v", err)
	}
	if got, _ := os.ReadFile(p); string(got) != "new" {
		t.Errorf("after Commit and Close, f holds %q, want the new content", got)
	}
	if err := f.Commit(); err == nil {
		t.Error("a second Commit succeeded")
	}
}

// TestFailuresLeaveNothing: whatever fails, the destination keeps its old content and no temporary
// file is left.
func TestFailuresLeaveNothing(t *testing.T) {
	tests := []struct {
		name  string
		write func(t *testing.T, p string) error
	}{
		{"a write fails", func(t *testing.T, p string) error {
			f := mustCreate(t, p)
			defer f.Close()
			f.Write([]byte("part"))
			f.f.Close() // the file goes away under the writer
			_, err := f.Write([]byte("rest"))
			return err
		}},
		{"the writer gives up before Commit", func(t *testing.T, p string) error {
			f := mustCreate(t, p)
			defer f.Close()
			f.Write([]byte("part"))
			return errors.New("the source of the bytes failed")
		}},
		{"Commit fails", func(t *testing.T, p string) error {
			f := mustCreate(t, p)
			defer f.Close()
			f.Write([]byte("whole"))
			f.f.Close() // so the sync fails
			return f.Commit()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "f")
			os.WriteFile(p, []byte("old"), 0o600)
			if err := tt.write(t, p); err == nil {
				t.Fatal("the write succeeded")
			}
			if names := entries(t, dir); len(names) != 1 || names[0] != "f" {
				t.Errorf("directory holds %v, want only f", names)
			}
			if got, _ := os.ReadFile(p); string(got) != "old" {
				t.Errorf("f holds %q, want the old content", got)
			}
		})
	}
}

func TestFailedRenameLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := os.MkdirAll(filepath.Join(p, "inside"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(p, []byte("whole"), 0o644); err == nil {
		t.Fatal("a file replaced a non-empty directory")
	}
	if names := entries(t, dir); len(names) != 1 || names[0] != "f" {
		t.Errorf("directory holds %v, want only f", names)
	}
	if names := entries(t, p); len(names) != 1 || names[0] != "inside" {
		t.Errorf("f holds %v, want only inside", names)
	}
}

func mustCreate(t *testing.T, p string) *File {
	t.Helper()
	f, err := Create(p, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestCreateInAMissingDirectory(t *testing.T) {
	dir := t.TempDir()
	err := WriteFile(filepath.Join(dir, "missing", "f"), []byte("x"), 0o644)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "missing", "f")) {
		t.Fatalf("error %v, want one naming the file", err)
	}
	if names := entries(t, dir); len(names) != 0 {
		t.Errorf("directory holds %v, want nothing", names)
	}
}
