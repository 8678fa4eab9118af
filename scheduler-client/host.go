package schedclient

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	commonv2 "d7y.io/api/v2/pkg/apis/common/v2"
	"golang.org/x/sys/unix"
)

// Host types (common.v2.Host.type; dragonfly pkg/types HostType).
const (
	HostTypeNormal     = 0
	HostTypeSuperSeed  = 1 // the only seed type the v2.5.1 scheduler triggers and preheats
	HostTypeStrongSeed = 2
	HostTypeWeakSeed   = 3
)

// Host is what this peer announces about itself. The scheduler hands IP, Port and DownloadPort to
// other peers as a parent's address, and health-checks seed hosts (Type != 0) over grpc.health.v1 on
// IP:Port. Statistics (cpu, memory, network, disk, build, os) are read from /proc and /sys at every
// announce.
type Host struct {
	// ID defaults to HostID(IP, Hostname, Type != HostTypeNormal).
	ID string
	// Type is HostTypeNormal or a seed type.
	Type int
	// Hostname defaults to os.Hostname().
	Hostname string
	// IP is the address other peers and the scheduler reach this peer on (required).
	IP string
	// Port is the gRPC upload port (DfdaemonUpload and grpc.health.v1), 1024..65534 (required).
	Port int
	// DownloadPort is the Vortex TCP port serving piece bytes; default Port.
	DownloadPort int
	// ProxyPort is the HTTP proxy port, 0 when there is none.
	ProxyPort int
	// Name is an instance name (upstream: "${POD_NAMESPACE}-${POD_NAME}"); optional.
	Name string
	// DisableShared asks the scheduler never to pick this host as a parent.
	DisableShared bool
	// Location and IDC are topology labels the scheduler's evaluator compares; optional.
	Location, IDC string
	// DataDir is the directory whose file system is reported as the disk; default "/".
	DataDir string
	// MaxBandwidth is the link capacity in bits per second, used when the interface holding IP
	// has no readable speed (veth, loopback); 0 leaves it unknown.
	MaxBandwidth uint64
	// Version and GitCommit are reported as the build; Version defaults to "dfnydus".
	Version, GitCommit string
}

// withDefaults fills the defaults and checks the fields the scheduler validates.
func (h Host) withDefaults() (Host, error) {
	if h.Hostname == "" {
		name, err := os.Hostname()
		if err != nil {
			return h, fmt.Errorf("host name: %w", err)
		}
		h.Hostname = name
	}
	if net.ParseIP(h.IP) == nil {
		return h, fmt.Errorf("host ip %q is not an IP address", h.IP)
	}
	if h.DownloadPort == 0 {
		h.DownloadPort = h.Port
	}
	// common.v2.Host: port and download_port in [1024, 65535).
	for _, p := range []struct {
		name string
		v    int
	}{{"port", h.Port}, {"download port", h.DownloadPort}} {
		if p.v < 1024 || p.v >= 65535 {
			return h, fmt.Errorf("host %s %d is outside 1024..65534", p.name, p.v)
		}
	}
	if h.Type < HostTypeNormal || h.Type > HostTypeWeakSeed {
		return h, fmt.Errorf("host type %d is not 0..3", h.Type)
	}
	if h.ID == "" {
		h.ID = HostID(h.IP, h.Hostname, h.Type != HostTypeNormal)
	}
	if h.DataDir == "" {
		h.DataDir = "/"
	}
	if h.Version == "" {
		h.Version = "dfnydus"
	}
	return h, nil
}

// userHZ is the unit of /proc/stat and /proc/PID/stat times (sysconf(_SC_CLK_TCK), 100 on Linux).
const userHZ = 100

// hostSampler builds the announced common.v2.Host; it keeps the previous counters so that
// percentages and bandwidths cover the time since the last announce.
type hostSampler struct {
	host  Host
	procs string // /proc, replaced in tests

	mu       sync.Mutex
	lastAt   time.Time
	lastCPU  cpuTimes
	lastProc uint64 // utime+stime ticks of this process
	lastRx   uint64
	lastTx   uint64
	lastRead uint64
	lastWrit uint64
}

func newHostSampler(h Host) *hostSampler { return &hostSampler{host: h, procs: "/proc"} }

// sample reads the current statistics. Unreadable sources leave their fields zero: the scheduler
// only needs every message present (an AnnounceHost without cpu makes a v2.5.1 scheduler with
// Redis dereference nil, service_v2.go AnnounceHost).
func (s *hostSampler) sample() *commonv2.Host {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.host
	now := time.Now()
	elapsed := now.Sub(s.lastAt).Seconds()
	first := s.lastAt.IsZero()

	platform, family, version := readOSRelease()
	out := &commonv2.Host{
		Id:              h.ID,
		Type:            uint32(h.Type),
		Hostname:        h.Hostname,
		Ip:              h.IP,
		Port:            int32(h.Port),
		DownloadPort:    int32(h.DownloadPort),
		ProxyPort:       int32(h.ProxyPort),
		Name:            h.Name,
		DisableShared:   h.DisableShared,
		Os:              runtime.GOOS,
		Platform:        platform,
		PlatformFamily:  family,
		PlatformVersion: version,
		KernelVersion:   strings.TrimSpace(s.read("sys/kernel/osrelease")),
	}

	// CPU.
	logical, physical := parseCPUInfo(s.read("cpuinfo"))
	if logical == 0 {
		logical, physical = runtime.NumCPU(), runtime.NumCPU()
	}
	cpu := parseProcStat(s.read("stat"))
	percent := cpu.busyPercent(s.lastCPU) // since boot on the first sample
	procTicks := parseProcSelfStat(s.read("self/stat"))
	var procPercent float64
	if !first && elapsed > 0 && procTicks >= s.lastProc {
		// Like gopsutil's process percent: 100 is one CPU busy for the whole interval.
		procPercent = float64(procTicks-s.lastProc) / userHZ / elapsed * 100
	}
	out.Cpu = &commonv2.CPU{
		LogicalCount:   uint32(logical),
		PhysicalCount:  uint32(physical),
		Percent:        percent,
		ProcessPercent: procPercent,
		Times:          cpu.proto(),
	}

	// Memory.
	mem := parseMeminfo(s.read("meminfo"))
	total, avail := mem["MemTotal"], mem["MemAvailable"]
	used := total - min(avail, total)
	memory := &commonv2.Memory{Total: total, Available: avail, Used: used, Free: mem["MemFree"]}
	if total > 0 {
		memory.UsedPercent = pct(used, total)
		rss := parseStatmRSS(s.read("self/statm")) * uint64(os.Getpagesize())
		memory.ProcessUsedPercent = min(pct(rss, total), 100)
	}
	out.Memory = memory

	// Network: connections, and the rates of the interface holding IP.
	established, upload := countTCP(s.read("net/tcp"), h.Port)
	e6, u6 := countTCP(s.read("net/tcp6"), h.Port)
	ifname := interfaceOf(h.IP)
	rx, tx := parseNetDev(s.read("net/dev"), ifname)
	maxBW := h.MaxBandwidth
	if speed := interfaceSpeed(ifname); speed > 0 {
		maxBW = speed
	}
	var rxBW, txBW uint64
	if !first && elapsed > 0 && rx >= s.lastRx && tx >= s.lastTx {
		rxBW = uint64(float64(rx-s.lastRx) * 8 / elapsed)
		txBW = uint64(float64(tx-s.lastTx) * 8 / elapsed)
	}
	loc, idc := h.Location, h.IDC
	out.Network = &commonv2.Network{
		TcpConnectionCount:       uint32(established + e6),
		UploadTcpConnectionCount: uint32(upload + u6),
		Location:                 &loc,
		Idc:                      &idc,
		MaxRxBandwidth:           maxBW,
		RxBandwidth:              &rxBW,
		MaxTxBandwidth:           maxBW,
		TxBandwidth:              &txBW,
	}

	// Disk: the data directory's file system, and this process's I/O rates.
	disk := &commonv2.Disk{}
	var st unix.Statfs_t
	if err := unix.Statfs(h.DataDir, &st); err == nil {
		bs := uint64(st.Bsize)
		disk.Total = st.Blocks * bs
		disk.Free = st.Bavail * bs
		disk.Used = (st.Blocks - st.Bfree) * bs
		if disk.Used+disk.Free > 0 {
			disk.UsedPercent = pct(disk.Used, disk.Used+disk.Free)
		}
		disk.InodesTotal = st.Files
		disk.InodesFree = st.Ffree
		disk.InodesUsed = st.Files - min(st.Ffree, st.Files)
		if st.Files > 0 {
			disk.InodesUsedPercent = pct(disk.InodesUsed, st.Files)
		}
	}
	rd, wr := parseProcIO(s.read("self/io"))
	if !first && elapsed > 0 && rd >= s.lastRead && wr >= s.lastWrit {
		disk.ReadBandwidth = uint64(float64(rd-s.lastRead) / elapsed)
		disk.WriteBandwidth = uint64(float64(wr-s.lastWrit) / elapsed)
	}
	out.Disk = disk

	goVersion, buildPlatform, commit := runtime.Version(), runtime.GOOS+"/"+runtime.GOARCH, h.GitCommit
	out.Build = &commonv2.Build{GitVersion: h.Version, GitCommit: &commit, GoVersion: &goVersion, Platform: &buildPlatform}

	s.lastAt, s.lastCPU, s.lastProc = now, cpu, procTicks
	s.lastRx, s.lastTx, s.lastRead, s.lastWrit = rx, tx, rd, wr
	return out
}

func (s *hostSampler) read(name string) string {
	b, err := os.ReadFile(filepath.Join(s.procs, name))
	if err != nil {
		return ""
	}
	return string(b)
}

func pct(part, whole uint64) float64 { return float64(part) / float64(whole) * 100 }

// cpuTimes are the aggregate "cpu" line of /proc/stat, in ticks.
type cpuTimes struct {
	user, nice, system, idle, iowait, irq, softirq, steal, guest, guestNice uint64
}

func (c cpuTimes) total() uint64 {
	// guest and guest_nice are already counted in user and nice (proc(5)).
	return c.user + c.nice + c.system + c.idle + c.iowait + c.irq + c.softirq + c.steal
}

// busyPercent is the share of non-idle time between prev and c (since boot when prev is zero).
func (c cpuTimes) busyPercent(prev cpuTimes) float64 {
	t, pt := c.total(), prev.total()
	idle, pidle := c.idle+c.iowait, prev.idle+prev.iowait
	if t <= pt || idle < pidle {
		return 0
	}
	dt, di := t-pt, idle-pidle
	return pct(dt-min(di, dt), dt)
}

func (c cpuTimes) proto() *commonv2.CPUTimes {
	sec := func(ticks uint64) float64 { return float64(ticks) / userHZ }
	return &commonv2.CPUTimes{
		User: sec(c.user), System: sec(c.system), Idle: sec(c.idle), Nice: sec(c.nice),
		Iowait: sec(c.iowait), Irq: sec(c.irq), Softirq: sec(c.softirq), Steal: sec(c.steal),
		Guest: sec(c.guest), GuestNice: sec(c.guestNice),
	}
}

// parseProcStat reads the aggregate "cpu" line of /proc/stat.
func parseProcStat(data string) cpuTimes {
	for _, line := range strings.Split(data, "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || f[0] != "cpu" {
			continue
		}
		var v [10]uint64
		for i := 1; i < len(f) && i <= len(v); i++ {
			v[i-1], _ = strconv.ParseUint(f[i], 10, 64)
		}
		return cpuTimes{v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9]}
	}
	return cpuTimes{}
}

// parseProcSelfStat returns utime+stime (ticks) from /proc/PID/stat. The command name (field 2)
// may hold spaces and parentheses, so fields are counted after its last ')'.
func parseProcSelfStat(data string) uint64 {
	i := strings.LastIndexByte(data, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(data[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseUint(f[11], 10, 64)
	s, _ := strconv.ParseUint(f[12], 10, 64)
	return u + s
}

// parseStatmRSS returns the resident pages from /proc/PID/statm.
func parseStatmRSS(data string) uint64 {
	f := strings.Fields(data)
	if len(f) < 2 {
		return 0
	}
	v, _ := strconv.ParseUint(f[1], 10, 64)
	return v
}

// parseCPUInfo counts logical processors and distinct (physical id, core id) pairs.
func parseCPUInfo(data string) (logical, physical int) {
	cores := map[string]struct{}{}
	var phys, core string
	flush := func() {
		if core != "" {
			cores[phys+"/"+core] = struct{}{}
		}
		phys, core = "", ""
	}
	for _, line := range strings.Split(data, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			if strings.TrimSpace(line) == "" {
				flush()
			}
			continue
		}
		switch strings.TrimSpace(k) {
		case "processor":
			logical++
		case "physical id":
			phys = strings.TrimSpace(v)
		case "core id":
			core = strings.TrimSpace(v)
		}
	}
	flush()
	physical = len(cores)
	if physical == 0 {
		physical = logical
	}
	return logical, physical
}

// parseMeminfo returns /proc/meminfo values in bytes.
func parseMeminfo(data string) map[string]uint64 {
	m := map[string]uint64{}
	for _, line := range strings.Split(data, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			continue
		}
		if len(f) > 1 && f[1] == "kB" {
			n *= 1024
		}
		m[k] = n
	}
	return m
}

// countTCP counts ESTABLISHED sockets in /proc/net/tcp{,6}, and those whose local port is port.
func countTCP(data string, port int) (established, onPort int) {
	for i, line := range strings.Split(data, "\n") {
		f := strings.Fields(line)
		if i == 0 || len(f) < 4 || f[3] != "01" { // header; st 01 = TCP_ESTABLISHED
			continue
		}
		established++
		if _, hexPort, ok := strings.Cut(f[1], ":"); ok {
			if p, err := strconv.ParseUint(hexPort, 16, 16); err == nil && int(p) == port {
				onPort++
			}
		}
	}
	return established, onPort
}

// parseNetDev returns the received and transmitted bytes of interface ifname from /proc/net/dev.
func parseNetDev(data, ifname string) (rx, tx uint64) {
	if ifname == "" {
		return 0, 0
	}
	for _, line := range strings.Split(data, "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(name) != ifname {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 9 {
			return 0, 0
		}
		rx, _ = strconv.ParseUint(f[0], 10, 64)
		tx, _ = strconv.ParseUint(f[8], 10, 64)
		return rx, tx
	}
	return 0, 0
}

// parseProcIO returns read_bytes and write_bytes from /proc/PID/io.
func parseProcIO(data string) (read, write uint64) {
	for _, line := range strings.Split(data, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "read_bytes":
			read = n
		case "write_bytes":
			write = n
		}
	}
	return read, write
}

// parseOSRelease returns ID, ID_LIKE (or ID) and VERSION_ID of an os-release file.
func parseOSRelease(data string) (id, family, version string) {
	sc := bufio.NewScanner(strings.NewReader(data))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		v = strings.Trim(v, `"'`)
		switch k {
		case "ID":
			id = v
		case "ID_LIKE":
			family = strings.Fields(v + " ")[0]
		case "VERSION_ID":
			version = v
		}
	}
	if family == "" {
		family = id
	}
	return id, family, version
}

func readOSRelease() (id, family, version string) {
	for _, p := range []string{"/etc/os-release", "/usr/lib/os-release"} {
		if b, err := os.ReadFile(p); err == nil {
			return parseOSRelease(string(b))
		}
	}
	return runtime.GOOS, runtime.GOOS, ""
}

// interfaceOf names the interface that holds ip in this network namespace ("" if none).
func interfaceOf(ip string) string {
	want := net.ParseIP(ip)
	ifs, err := net.Interfaces()
	if err != nil || want == nil {
		return ""
	}
	for _, ifc := range ifs {
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.Equal(want) {
				return ifc.Name
			}
		}
	}
	return ""
}

// interfaceSpeed is the link speed of ifname in bits per second from /sys/class/net (0 when the
// driver does not report one, like veth and loopback).
func interfaceSpeed(ifname string) uint64 {
	if ifname == "" {
		return 0
	}
	b, err := os.ReadFile(filepath.Join("/sys/class/net", ifname, "speed"))
	if err != nil {
		return 0
	}
	mbps, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || mbps <= 0 {
		return 0
	}
	return uint64(mbps) * 1_000_000
}
