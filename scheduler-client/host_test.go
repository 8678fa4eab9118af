package schedclient

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/procfs"
)

// fakeProc is a /proc and a /sys holding what TestSampleFromProc announces; bump advances its
// counters as 10 seconds of work would.
type fakeProc struct {
	t          *testing.T
	procs, sys string
	ifname     string
}

func newFakeProc(t *testing.T, ifname string) *fakeProc {
	f := &fakeProc{t: t, procs: t.TempDir(), sys: t.TempDir(), ifname: ifname}
	var cpuinfo strings.Builder
	for i, core := range []string{"0", "1", "0", "1"} { // 2 cores with 2 threads each
		fmt.Fprintf(&cpuinfo, "processor\t: %d\nvendor_id\t: GenuineIntel\nphysical id\t: 0\ncore id\t\t: %s\n\n", i, core)
	}
	f.write("cpuinfo", cpuinfo.String())
	f.write("stat", "cpu  100 2 30 400 5 6 7 8 9 10\ncpu0 100 2 30 400 5 6 7 8 9 10\nintr 1\nctxt 1\nbtime 1\nprocesses 1\nprocs_running 1\nprocs_blocked 0\n")
	f.write("meminfo", "MemTotal:       16384 kB\nMemFree:         1024 kB\nMemAvailable:    8192 kB\nHugePages_Total:       0\n")
	f.write("sys/kernel/osrelease", "6.1.0-test\n")
	f.write("net/tcp", `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:0FA0 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100007F:0FA0 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 100 0 0 10 0
   2: 0100007F:D431 0100007F:0FA0 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 100 0 0 10 0
   3: 0100007F:1F90 0100007F:D432 06 00000000:00000000 00:00000000 00000000     0        0 4 1 0000000000000000 100 0 0 10 0
`)
	f.write("net/tcp6", `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:0FA0 00000000000000000000000001000000:D433 01 00000000:00000000 00:00000000 00000000     0        0 5 1 0000000000000000 100 0 0 10 0
`)
	if err := os.Symlink("42", filepath.Join(f.procs, "self")); err != nil {
		t.Fatal(err)
	}
	f.write(filepath.Join("/sys/class/net", ifname, "speed"), "1000\n")
	f.counters(300, 100, 200, 4096, 8192)
	return f
}

func (f *fakeProc) write(name, data string) {
	f.t.Helper()
	p := filepath.Join(f.procs, name)
	if rest, ok := strings.CutPrefix(name, "/sys/"); ok {
		p = filepath.Join(f.sys, rest)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

// counters writes this process's CPU ticks (utime+stime) and storage bytes, and the interface's bytes.
func (f *fakeProc) counters(ticks, rx, tx, read, write uint64) {
	// proc(5) stat fields 3 to 44; utime and stime are 14 and 15, rss (25 pages) is 24.
	f.write("42/stat", fmt.Sprintf("42 (dfn ydus) S 1 42 42 0 -1 4194560 100 0 0 0 %d %d 0 0 20 0 12 0 100 123456 25 0 1 1 0 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0\n", ticks-50, 50))
	f.write("42/io", fmt.Sprintf("rchar: 1\nwchar: 2\nsyscr: 3\nsyscw: 4\nread_bytes: %d\nwrite_bytes: %d\ncancelled_write_bytes: 0\n", read, write))
	f.write("net/dev", "Inter-|   Receive                                                |  Transmit\n"+
		" face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n"+
		fmt.Sprintf("%6s: %d 1 0 0 0 0 0 0 %d 2 0 0 0 0 0 0\n", f.ifname, rx, tx)+
		"other0: 99999 1 0 0 0 0 0 0 99999 2 0 0 0 0 0 0\n")
}

// TestSampleFromProc: what an announce says, field by field, for a known /proc and /sys.
func TestSampleFromProc(t *testing.T) {
	ifname := interfaceOf("127.0.0.1")
	if ifname == "" {
		t.Skip("no interface holds 127.0.0.1 here")
	}
	h, err := Host{Hostname: "unit", IP: "127.0.0.1", Port: 4000}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	f := newFakeProc(t, ifname)
	s := newHostSampler(h)
	s.procs, s.sys = f.procs, f.sys
	first := s.sample()

	// The previous announce was 10 seconds ago; since then this process used 1 s of CPU, the
	// interface moved 1000 bytes in and 2000 out, and 40 KiB were read and 80 KiB written.
	s.lastAt = s.lastAt.Add(-10 * time.Second)
	f.counters(400, 1100, 2200, 4096+40960, 8192+81920)
	second := s.sample()

	if got := first.GetKernelVersion(); got != "6.1.0-test" {
		t.Errorf("kernel version: got %q, want osrelease's 6.1.0-test", got)
	}
	const mib = 1 << 20
	pageSize := float64(os.Getpagesize())
	approx := func(got, want float64) bool { return math.Abs(got-want) <= math.Abs(want)*0.01 }
	for _, tt := range []struct {
		name      string
		got, want float64
	}{
		{"logical CPUs are processors", float64(first.GetCpu().GetLogicalCount()), 4},
		{"physical CPUs are distinct (physical id, core id)", float64(first.GetCpu().GetPhysicalCount()), 2},
		{"CPU percent on the first sample is busy time since boot", first.GetCpu().GetPercent(), 153.0 / 558 * 100},
		{"CPU percent since the last sample: nothing moved", second.GetCpu().GetPercent(), 0},
		{"CPU user time in seconds", first.GetCpu().GetTimes().GetUser(), 1},
		{"CPU system time in seconds", first.GetCpu().GetTimes().GetSystem(), 0.3},
		{"CPU idle time in seconds", first.GetCpu().GetTimes().GetIdle(), 4},
		{"CPU guest_nice time in seconds", first.GetCpu().GetTimes().GetGuestNice(), 0.1},
		{"process CPU percent is unknown on the first sample", first.GetCpu().GetProcessPercent(), 0},
		{"process CPU percent: 1 s in 10 s", second.GetCpu().GetProcessPercent(), 10},
		{"memory total", float64(first.GetMemory().GetTotal()), 16 * mib},
		{"memory available", float64(first.GetMemory().GetAvailable()), 8 * mib},
		{"memory used is total - available", float64(first.GetMemory().GetUsed()), 8 * mib},
		{"memory free", float64(first.GetMemory().GetFree()), 1 * mib},
		{"memory used percent", first.GetMemory().GetUsedPercent(), 50},
		{"process memory percent is its RSS of the total", first.GetMemory().GetProcessUsedPercent(), 25 * pageSize / (16 * mib) * 100},
		{"established TCP connections, v4 and v6", float64(first.GetNetwork().GetTcpConnectionCount()), 3},
		{"established TCP connections on the upload port", float64(first.GetNetwork().GetUploadTcpConnectionCount()), 2},
		{"link speed in bits per second", float64(first.GetNetwork().GetMaxRxBandwidth()), 1e9},
		{"rx bandwidth is unknown on the first sample", float64(first.GetNetwork().GetRxBandwidth()), 0},
		{"rx bandwidth in bits per second", float64(second.GetNetwork().GetRxBandwidth()), 800},
		{"tx bandwidth in bits per second", float64(second.GetNetwork().GetTxBandwidth()), 1600},
		{"disk read bandwidth in bytes per second", float64(second.GetDisk().GetReadBandwidth()), 4096},
		{"disk write bandwidth in bytes per second", float64(second.GetDisk().GetWriteBandwidth()), 8192},
	} {
		if !approx(tt.got, tt.want) {
			t.Errorf("%s: got %v, want %v", tt.name, tt.got, tt.want)
		}
	}
}

func TestCPUBusyPercent(t *testing.T) {
	for _, tc := range []struct {
		name       string
		prev, next procfs.CPUStat
		want       float64
	}{
		{"since boot", procfs.CPUStat{}, procfs.CPUStat{User: 25, Idle: 75}, 25},
		{"interval", procfs.CPUStat{User: 10, Idle: 10}, procfs.CPUStat{User: 40, System: 10, Idle: 40, Iowait: 10}, 50},
		{"iowait counts as idle", procfs.CPUStat{}, procfs.CPUStat{Iowait: 50, User: 50}, 50},
		{"guest time is already in user time", procfs.CPUStat{}, procfs.CPUStat{User: 50, Guest: 50, Idle: 50}, 50},
		{"no time passed", procfs.CPUStat{User: 5}, procfs.CPUStat{User: 5}, 0},
		{"counter went back", procfs.CPUStat{User: 50}, procfs.CPUStat{User: 5}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := busyPercent(tc.prev, tc.next); math.Abs(got-tc.want) > 1e-9 {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestParseOSRelease(t *testing.T) {
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
			s.procs, s.sys = procs, procs
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
