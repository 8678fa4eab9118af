package mountpoint

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestForbiddenTrees(t *testing.T) {
	link := filepath.Join(t.TempDir(), "to-proc-sys")
	if err := os.Symlink("/proc/sys", link); err != nil {
		t.Fatal(err)
	}
	for _, mp := range []string{"/proc", "/proc/sys", "/sys", "/sys/fs/cgroup", "/dev", "/dev/shm", "/dev/not-there/x", link, "/proc/../proc/sys"} {
		for _, force := range []bool{false, true} {
			if _, err := Check(mp, force); !errors.Is(err, ErrForbidden) {
				t.Errorf("Check(%s, force=%v) = %v, want ErrForbidden", mp, force, err)
			}
		}
	}
}

func TestAlreadyMounted(t *testing.T) {
	dir := t.TempDir()
	mountinfo = filepath.Join(dir, "mountinfo")
	defer func() { mountinfo = "/proc/self/mountinfo" }()
	target := filepath.Join(dir, "with space")
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	resolved, _ := filepath.EvalSymlinks(target)
	esc := ""
	for _, c := range []byte(resolved) {
		if c == ' ' {
			esc += `\040`
		} else {
			esc += string(c)
		}
	}
	line := "36 35 0:31 / " + esc + " rw,relatime shared:1 - fuse.dfnydus dfnydus rw\n"
	if err := os.WriteFile(mountinfo, []byte("22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"+line), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Check(target, false); !errors.Is(err, ErrAlreadyMounted) {
		t.Errorf("Check over a mount point: %v, want ErrAlreadyMounted", err)
	}
	link := filepath.Join(dir, "link")
	os.Symlink(target, link)
	if _, err := Check(link, false); !errors.Is(err, ErrAlreadyMounted) {
		t.Errorf("Check through a symlink to a mount point: %v, want ErrAlreadyMounted", err)
	}
	if got, err := Check(target, true); err != nil || got != resolved {
		t.Errorf("Check with force: %q, %v", got, err)
	}
	// A subdirectory of a mount point and a path that does not exist yet are fine.
	sub := filepath.Join(target, "sub")
	os.Mkdir(sub, 0o755)
	for _, p := range []string{sub, filepath.Join(target, "new", "dir")} {
		if _, err := Check(p, false); err != nil {
			t.Errorf("Check(%s): %v", p, err)
		}
	}
}

func TestRealMountTable(t *testing.T) {
	if _, err := Check("/", false); !errors.Is(err, ErrAlreadyMounted) {
		t.Errorf("Check(/) = %v: / is always a mount point", err)
	}
	if _, err := Check(t.TempDir(), false); err != nil {
		t.Errorf("Check(a fresh temp dir) = %v", err)
	}
}
