package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// A bad --fs-driver, or a bad $DFNYDUS_FS_DRIVER (what an operator sets for the snapshotter),
// fails the start naming both and the values it takes, before anything is served.
func TestNydusdFSDriverChecked(t *testing.T) {
	dir := t.TempDir()
	base := []string{"fuse", "--mountpoint", filepath.Join(dir, "mnt"), "--apisock", filepath.Join(dir, "api.sock")}
	for _, tc := range []struct {
		name string
		env  string
		args []string
	}{
		{name: "flag", args: []string{"--fs-driver", "fscache"}},
		{name: "env", env: "ext4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(fsDriverEnv, tc.env)
			var stdout, stderr bytes.Buffer
			code := runNydusd(context.Background(), append(append([]string{}, base...), tc.args...), &stdout, &stderr)
			if code == 0 || !strings.Contains(stderr.String(), "--fs-driver (or $DFNYDUS_FS_DRIVER)") ||
				!strings.Contains(stderr.String(), "want auto, erofs or fuse") {
				t.Errorf("exit %d, stderr %q: want a failure naming --fs-driver and the values it takes", code, stderr.String())
			}
		})
	}
}
