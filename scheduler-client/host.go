package schedclient

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	commonv2 "d7y.io/api/v2/pkg/apis/common/v2"
	"github.com/prometheus/procfs"
	"github.com/prometheus/procfs/sysfs"
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

// hostSampler builds the announced common.v2.Host; it keeps the previous counters so that
// percentages and bandwidths cover the time since the last announce.
type hostSampler struct {
	host       Host
	procs, sys string // /proc and /sys, replaced in tests

	mu     sync.Mutex
	lastAt time.Time
	last   procStats
}

func newHostSampler(h Host) *hostSampler {
	return &hostSampler{host: h, procs: procfs.DefaultMountPoint, sys: sysfs.DefaultMountPoint}
}

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
	ifname := interfaceOf(h.IP)
	ps := readProc(s.procs, h.Port, ifname)

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
		KernelVersion:   ps.kernel,
	}

	// CPU.
	logical, physical := ps.logicalCPUs, ps.physicalCPUs
	if logical == 0 {
		logical, physical = runtime.NumCPU(), runtime.NumCPU()
	}
	percent := busyPercent(s.last.cpu, ps.cpu) // since boot on the first sample
	var procPercent float64
	if !first && elapsed > 0 && ps.procCPU >= s.last.procCPU {
		// Like gopsutil's process percent: 100 is one CPU busy for the whole interval.
		procPercent = (ps.procCPU - s.last.procCPU) / elapsed * 100
	}
	c := ps.cpu
	out.Cpu = &commonv2.CPU{
		LogicalCount:   uint32(logical),
		PhysicalCount:  uint32(physical),
		Percent:        percent,
		ProcessPercent: procPercent,
		Times: &commonv2.CPUTimes{
			User: c.User, System: c.System, Idle: c.Idle, Nice: c.Nice, Iowait: c.Iowait, Irq: c.IRQ,
			Softirq: c.SoftIRQ, Steal: c.Steal, Guest: c.Guest, GuestNice: c.GuestNice,
		},
	}

	// Memory.
	total, avail := ps.memTotal, ps.memAvailable
	used := total - min(avail, total)
	memory := &commonv2.Memory{Total: total, Available: avail, Used: used, Free: ps.memFree}
	if total > 0 {
		memory.UsedPercent = pct(used, total)
		memory.ProcessUsedPercent = min(pct(ps.rss, total), 100)
	}
	out.Memory = memory

	// Network: connections, and the rates of the interface holding IP.
	maxBW := h.MaxBandwidth
	if speed := interfaceSpeed(s.sys, ifname); speed > 0 {
		maxBW = speed
	}
	var rxBW, txBW uint64
	if !first && elapsed > 0 && ps.rx >= s.last.rx && ps.tx >= s.last.tx {
		rxBW = uint64(float64(ps.rx-s.last.rx) * 8 / elapsed)
		txBW = uint64(float64(ps.tx-s.last.tx) * 8 / elapsed)
	}
	loc, idc := h.Location, h.IDC
	out.Network = &commonv2.Network{
		TcpConnectionCount:       uint32(ps.established),
		UploadTcpConnectionCount: uint32(ps.onPort),
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
	if !first && elapsed > 0 && ps.read >= s.last.read && ps.write >= s.last.write {
		disk.ReadBandwidth = uint64(float64(ps.read-s.last.read) / elapsed)
		disk.WriteBandwidth = uint64(float64(ps.write-s.last.write) / elapsed)
	}
	out.Disk = disk

	goVersion, buildPlatform, commit := runtime.Version(), runtime.GOOS+"/"+runtime.GOARCH, h.GitCommit
	out.Build = &commonv2.Build{GitVersion: h.Version, GitCommit: &commit, GoVersion: &goVersion, Platform: &buildPlatform}

	s.lastAt, s.last = now, ps
	return out
}

func pct(part, whole uint64) float64 { return float64(part) / float64(whole) * 100 }

// procStats is what an announce reads from /proc; a field whose file is unreadable stays zero.
type procStats struct {
	kernel                    string
	logicalCPUs, physicalCPUs int
	cpu                       procfs.CPUStat // the aggregate "cpu" line of /proc/stat, in seconds
	procCPU                   float64        // user+system seconds of this process
	rss                       uint64         // bytes resident of this process
	memTotal, memAvailable    uint64         // bytes
	memFree                   uint64
	established, onPort       int    // ESTABLISHED TCP sockets (v4 and v6), and those on the upload port
	rx, tx                    uint64 // bytes through the interface holding the host's IP
	read, write               uint64 // bytes this process read from and wrote to storage
}

// readProc reads the statistics of an announce from the proc file system mounted at procs.
func readProc(procs string, port int, ifname string) procStats {
	var ps procStats
	fs, err := procfs.NewFS(procs)
	if err != nil {
		return ps
	}
	if v, err := fs.SysctlStrings("kernel.osrelease"); err == nil && len(v) > 0 {
		ps.kernel = v[0]
	}
	if cpus, err := fs.CPUInfo(); err == nil {
		ps.logicalCPUs = len(cpus)
		cores := map[[2]string]struct{}{}
		for _, c := range cpus {
			if c.CoreID != "" {
				cores[[2]string{c.PhysicalID, c.CoreID}] = struct{}{}
			}
		}
		// Without core ids (arm, VMs that hide the topology) every processor counts as a core.
		if ps.physicalCPUs = len(cores); ps.physicalCPUs == 0 {
			ps.physicalCPUs = ps.logicalCPUs
		}
	}
	if st, err := fs.Stat(); err == nil {
		ps.cpu = st.CPUTotal
	}
	if mem, err := fs.Meminfo(); err == nil {
		ps.memTotal, ps.memAvailable, ps.memFree = deref(mem.MemTotalBytes), deref(mem.MemAvailableBytes), deref(mem.MemFreeBytes)
	}
	if self, err := fs.Self(); err == nil {
		if st, err := self.Stat(); err == nil {
			ps.procCPU = st.CPUTime()
			ps.rss = uint64(max(st.ResidentMemory(), 0))
		}
		if io, err := self.IO(); err == nil {
			ps.read, ps.write = io.ReadBytes, io.WriteBytes
		}
	}
	for _, read := range []func() (procfs.NetTCP, error){fs.NetTCP, fs.NetTCP6} {
		socks, err := read()
		if err != nil {
			continue
		}
		for _, sk := range socks {
			if sk.St != tcpEstablished {
				continue
			}
			ps.established++
			if sk.LocalPort == uint64(port) {
				ps.onPort++
			}
		}
	}
	if ifname != "" {
		if dev, err := fs.NetDev(); err == nil {
			ps.rx, ps.tx = dev[ifname].RxBytes, dev[ifname].TxBytes
		}
	}
	return ps
}

// tcpEstablished is TCP_ESTABLISHED, the "st" of a connected socket in /proc/net/tcp.
const tcpEstablished = 1

func deref(p *uint64) uint64 {
	if p == nil {
		return 0
	}
	return *p
}

// busyPercent is the share of non-idle time between prev and cur (since boot when prev is zero).
func busyPercent(prev, cur procfs.CPUStat) float64 {
	// guest and guest_nice are already counted in user and nice (proc(5)).
	total := func(c procfs.CPUStat) float64 {
		return c.User + c.Nice + c.System + c.Idle + c.Iowait + c.IRQ + c.SoftIRQ + c.Steal
	}
	t, pt := total(cur), total(prev)
	idle, pidle := cur.Idle+cur.Iowait, prev.Idle+prev.Iowait
	if t <= pt || idle < pidle {
		return 0
	}
	dt, di := t-pt, idle-pidle
	return (dt - min(di, dt)) / dt * 100
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
func interfaceSpeed(sys, ifname string) uint64 {
	if ifname == "" {
		return 0
	}
	fs, err := sysfs.NewFS(sys)
	if err != nil {
		return 0
	}
	ifc, err := fs.NetClassByIface(ifname)
	if err != nil || ifc.Speed == nil || *ifc.Speed <= 0 {
		return 0
	}
	return uint64(*ifc.Speed) * 1_000_000
}
