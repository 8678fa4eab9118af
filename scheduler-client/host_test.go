package schedclient

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseProcFiles(t *testing.T) {
	t.Run("stat cpu line", func(t *testing.T) {
		got := parseProcStat("cpu  100 2 30 400 5 6 7 8 9 10\ncpu0 1 1 1 1 1 1 1 1 1 1\nintr 1\n")
		want := cpuTimes{100, 2, 30, 400, 5, 6, 7, 8, 9, 10}
		if got != want {
			t.Errorf("got %+v, want %+v", got, want)
		}
	})
	for _, tc := range []struct {
		name string
		data string
		want uint64
	}{
		{"plain command", "42 (dfnydus) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 12 0 100 0 0", 300},
		{"command with spaces and parens", "42 (a (b) c) R 1 42 42 0 -1 0 0 0 0 0 7 3 0 0 20 0 1 0 1 0 0", 10},
		{"truncated", "42 (x) S 1", 0},
	} {
		t.Run("self/stat "+tc.name, func(t *testing.T) {
			if got := parseProcSelfStat(tc.data); got != tc.want {
				t.Errorf("utime+stime = %d, want %d", got, tc.want)
			}
		})
	}
	t.Run("cpuinfo", func(t *testing.T) {
		var b strings.Builder
		for i, core := range []string{"0", "1", "0", "1"} { // 2 cores with 2 threads each
			b.WriteString("processor\t: " + string(rune('0'+i)) + "\nphysical id\t: 0\ncore id\t\t: " + core + "\n\n")
		}
		if l, p := parseCPUInfo(b.String()); l != 4 || p != 2 {
			t.Errorf("logical %d physical %d, want 4 and 2", l, p)
		}
		if l, p := parseCPUInfo("processor : 0\n\nprocessor : 1\n"); l != 2 || p != 2 {
			t.Errorf("without core ids: logical %d physical %d, want 2 and 2", l, p)
		}
	})
	t.Run("meminfo", func(t *testing.T) {
		m := parseMeminfo("MemTotal:       16384 kB\nMemFree:  1024 kB\nMemAvailable: 8192 kB\nHugePages_Total: 0\n")
		if m["MemTotal"] != 16384*1024 || m["MemAvailable"] != 8192*1024 || m["HugePages_Total"] != 0 {
			t.Errorf("got %v", m)
		}
	})
	t.Run("net/tcp", func(t *testing.T) {
		data := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:0FA0 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 0100007F:0FA0 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 2 1
   2: 0100007F:D431 0100007F:0FA0 01 00000000:00000000 00:00000000 00000000     0        0 3 1
   3: 0100007F:1F90 0100007F:D432 06 00000000:00000000 00:00000000 00000000     0        0 4 1
`
		// 0x0FA0 = 4000: one established connection accepted on the upload port.
		if est, on := countTCP(data, 4000); est != 2 || on != 1 {
			t.Errorf("established %d, on port %d; want 2 and 1", est, on)
		}
	})
	t.Run("net/dev", func(t *testing.T) {
		data := "Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes\n" +
			"    lo: 100 1 0 0 0 0 0 0 200 2 0 0 0 0 0 0\n  eth0: 3000 10 0 0 0 0 0 0 4000 20 0 0 0 0 0 0\n"
		if rx, tx := parseNetDev(data, "eth0"); rx != 3000 || tx != 4000 {
			t.Errorf("eth0 rx %d tx %d, want 3000 4000", rx, tx)
		}
		if rx, tx := parseNetDev(data, "missing"); rx != 0 || tx != 0 {
			t.Errorf("missing interface: rx %d tx %d", rx, tx)
		}
	})
	t.Run("io", func(t *testing.T) {
		if r, w := parseProcIO("rchar: 1\nwchar: 2\nread_bytes: 4096\nwrite_bytes: 8192\ncancelled_write_bytes: 0\n"); r != 4096 || w != 8192 {
			t.Errorf("read %d write %d", r, w)
		}
	})
	t.Run("os-release", func(t *testing.T) {
		for _, tc := range []struct{ data, id, family, version string }{
			{"ID=debian\nVERSION_ID=\"12\"\n", "debian", "debian", "12"},
			{"ID=ubuntu\nID_LIKE=debian\nVERSION_ID=\"24.04\"\n", "ubuntu", "debian", "24.04"},
			{"ID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\nVERSION_ID=\"9.3\"\n", "rocky", "rhel", "9.3"},
		} {
			id, family, version := parseOSRelease(tc.data)
			if id != tc.id || family != tc.family || version != tc.version {
				t.Errorf("%q: got %s %s %s, want %s %s %s", tc.data, id, family, version, tc.id, tc.family, tc.version)
			}
		}
	})
}

func TestCPUBusyPercent(t *testing.T) {
	for _, tc := range []struct {
		name       string
		prev, next cpuTimes
		want       float64
	}{
		{"since boot", cpuTimes{}, cpuTimes{user: 25, idle: 75}, 25},
		{"interval", cpuTimes{user: 10, idle: 10}, cpuTimes{user: 40, system: 10, idle: 40, iowait: 10}, 50},
		{"iowait counts as idle", cpuTimes{}, cpuTimes{iowait: 50, user: 50}, 50},
		{"no time passed", cpuTimes{user: 5}, cpuTimes{user: 5}, 0},
		{"counter went back", cpuTimes{user: 50}, cpuTimes{user: 5}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.next.busyPercent(tc.prev); math.Abs(got-tc.want) > 1e-9 {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestHostDefaultsAndChecks(t *testing.T) {
	for _, tc := range []struct {
		name    string
		host    Host
		wantID  string
		wantErr string
	}{
		{"normal", Host{Hostname: "n1", IP: "10.0.0.1", Port: 4000}, "10.0.0.1-n1", ""},
		{"seed id has the suffix", Host{Type: HostTypeSuperSeed, Hostname: "s1", IP: "10.0.0.2", Port: 4000}, "10.0.0.2-s1-seed", ""},
		{"explicit id kept", Host{ID: "mine", Hostname: "n1", IP: "10.0.0.1", Port: 4000}, "mine", ""},
		{"bad ip", Host{Hostname: "n1", IP: "node-1", Port: 4000}, "", "not an IP"},
		{"port below 1024", Host{Hostname: "n1", IP: "10.0.0.1", Port: 80}, "", "port 80"},
		{"download port 65535", Host{Hostname: "n1", IP: "10.0.0.1", Port: 4000, DownloadPort: 65535}, "", "download port 65535"},
		{"unknown type", Host{Type: 4, Hostname: "n1", IP: "10.0.0.1", Port: 4000}, "", "type 4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := tc.host.withDefaults()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if h.ID != tc.wantID || h.DownloadPort != h.Port || h.DataDir != "/" || h.Version == "" {
				t.Errorf("got %+v, want id %s and defaults", h, tc.wantID)
			}
		})
	}
}

// TestSampleIsValid: what we announce passes the scheduler's request validator, both from this
// machine's /proc and from a /proc where nothing is readable.
func TestSampleIsValid(t *testing.T) {
	h, err := Host{Hostname: "unit", IP: "127.0.0.1", Port: 4000, Location: "l", IDC: "i"}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	empty := t.TempDir()
	for _, procs := range []string{"/proc", empty} {
		t.Run(filepath.Base(procs), func(t *testing.T) {
			s := newHostSampler(h)
			s.procs = procs
			for i := 0; i < 2; i++ { // the second sample has intervals to divide by
				got := s.sample()
				if err := got.ValidateAll(); err != nil {
					t.Fatalf("sample %d invalid: %v", i, err)
				}
				if got.GetCpu().GetTimes() == nil || got.GetMemory() == nil || got.GetNetwork() == nil || got.GetDisk() == nil || got.GetBuild() == nil {
					t.Fatalf("sample %d lacks a section: %v", i, got)
				}
			}
			if procs == "/proc" {
				got := s.sample()
				if got.GetCpu().GetLogicalCount() == 0 || got.GetMemory().GetTotal() == 0 || got.GetKernelVersion() == "" {
					t.Errorf("no statistics read from /proc: %v", got)
				}
			}
		})
	}
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc here")
	}
}
