package testenv

import (
	"os"
	"strings"
	"testing"

	"github.com/dfnydus/dfnydus/internal/mountpoint"
)

// FSType is the file system type mounted at mp ("" when nothing is; the last mount there when
// several are stacked), from /proc/self/mountinfo.
func FSType(t testing.TB, mp string) string {
	t.Helper()
	typ := ""
	for _, line := range mountinfo(t) {
		// mount ID, parent, major:minor, root, mount point, options, optional fields, "-", type, ...
		before, after, ok := strings.Cut(line, " - ")
		fields, tail := strings.Fields(before), strings.Fields(after)
		if ok && len(fields) > 4 && len(tail) > 0 && mountpoint.Unescape(fields[4]) == mp {
			typ = tail[0]
		}
	}
	return typ
}

// MountsUnder lists the mount points below dir.
func MountsUnder(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	for _, line := range mountinfo(t) {
		if fields := strings.Fields(line); len(fields) > 4 {
			if p := mountpoint.Unescape(fields[4]); strings.HasPrefix(p, dir+"/") {
				out = append(out, p)
			}
		}
	}
	return out
}

func mountinfo(t testing.TB) []string {
	t.Helper()
	raw, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(string(raw), "\n")
}
