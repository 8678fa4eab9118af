package daemon

import (
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestDefaultConfig(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatalf("the defaults do not validate: %v", err)
	}
	want := []struct {
		key       string
		got, want any
	}{
		{"cacheDir", c.CacheDir, "/var/lib/dfnydus"},
		{"controlSocket", c.ControlSocket, "/run/dfnydus/dfnydus.sock"},
		{"store.budget", c.Store.Budget, ByteSize(0)},
		{"store.verifyReads", c.Store.VerifyReads, false},
		{"memoryCache", c.MemoryCache, ByteSize(16 << 20)},
		{"readWindow", c.ReadWindow, ByteSize(1 << 20)},
		{"metrics.addr", c.Metrics.Addr, ""},
		{"prefetch.mode", c.Prefetch.Mode, "all"},
		{"prefetch.rate", c.Prefetch.Rate, ByteSize(0)},
		{"source.retries", c.Source.Retries, 5},
		{"registry", c.Registry, RegistryOptions{}},
		{"log.level", c.Log.Level, "info"},
		{"scheduler.addrs", len(c.Scheduler.Addrs), 0},
		{"scheduler.seed", c.Scheduler.Seed, false},
		{"scheduler.advertiseIP", c.Scheduler.AdvertiseIP, ""},
		{"scheduler.hostname", c.Scheduler.Hostname, ""},
		{"scheduler.uploadPort", c.Scheduler.UploadPort, 4000},
		{"scheduler.piecePort", c.Scheduler.PiecePort, 4005},
		{"scheduler.pieceLength", c.Scheduler.PieceLength, ByteSize(0)},
		{"scheduler.announceInterval", c.Scheduler.AnnounceInterval, 5 * time.Minute},
		{"scheduler.scheduleTimeout", c.Scheduler.ScheduleTimeout, 10 * time.Second},
		{"scheduler.tls", c.Scheduler.TLS, TLSConfig{}},
		{"upload.maxConnections", c.Upload.MaxConnections, 1024},
		{"upload.maxConcurrentPieces", c.Upload.MaxConcurrentPieces, 64},
		{"upload.rateLimit", c.Upload.RateLimit, ByteSize(0)},
		{"upload.idleTimeout", c.Upload.IdleTimeout, time.Minute},
		{"upload.ioTimeout", c.Upload.IOTimeout, 30 * time.Second},
		{"upload.allowedCallers", len(c.Upload.AllowedCallers), 0},
		{"upload.tls", c.Upload.TLS, TLSConfig{}},
		{"upload.maxSeedTasks", c.Upload.MaxSeedTasks, 1024},
		{"upload.maxSeedBytes", c.Upload.MaxSeedBytes, ByteSize(100 << 30)},
		{"upload.seedTaskIdle", c.Upload.SeedTaskIdle, 24 * time.Hour},
	}
	for _, w := range want {
		if !reflect.DeepEqual(w.got, w.want) {
			t.Errorf("default %s = %v, want %v", w.key, w.got, w.want)
		}
	}
	if c.P2P() {
		t.Error("the default config has P2P on; no scheduler means none")
	}
}

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name  string
		yaml  string
		check func(t *testing.T, c Config)
	}{
		{"an empty file is the defaults", "", func(t *testing.T, c Config) {
			if !reflect.DeepEqual(c, DefaultConfig()) {
				t.Errorf("got %+v", c)
			}
		}},
		{"a file of comments is the defaults", "# nothing\n# here\n", func(t *testing.T, c Config) {
			if !reflect.DeepEqual(c, DefaultConfig()) {
				t.Errorf("got %+v", c)
			}
		}},
		{"keys left out keep their defaults", "store:\n  budget: 1GiB\n", func(t *testing.T, c Config) {
			want := DefaultConfig()
			want.Store.Budget = 1 << 30
			if !reflect.DeepEqual(c, want) {
				t.Errorf("got %+v", c)
			}
		}},
		{"an empty section keeps its defaults", "scheduler:\nprefetch:\n", func(t *testing.T, c Config) {
			if !reflect.DeepEqual(c, DefaultConfig()) {
				t.Errorf("got %+v", c)
			}
		}},
		{"every key", `
cacheDir: /srv/dfnydus
controlSocket: /run/x.sock
store: {budget: 10737418240, verifyReads: true}
memoryCache: 64MiB
readWindow: 512KiB
fsDriver: auto
metrics: {addr: "127.0.0.1:9100"}
prefetch: {mode: files, rate: 50MiB}
source: {retries: 0}
registry: {plainHTTP: true, insecure: true, caFile: /etc/ca.pem, dockerConfig: /root/.docker/config.json}
log: {level: debug}
scheduler:
  addrs: ["10.0.0.1:8002", "sched.example:8002"]
  seed: true
  advertiseIP: 10.0.0.9
  hostname: node-9
  uploadPort: 14000
  piecePort: 14005
  pieceLength: 16MiB
  announceInterval: 30s
  scheduleTimeout: 4s
  tls: {caFile: /etc/sched-ca.pem, certFile: /etc/peer.pem, keyFile: /etc/peer.key}
upload:
  maxConnections: 100
  maxConcurrentPieces: 8
  rateLimit: 100MiB
  idleTimeout: 10s
  ioTimeout: 5s
  allowedCallers: ["10.1.0.0/16", "10.2.0.1"]
  tls: {caFile: /etc/ca.pem, certFile: /etc/up.pem, keyFile: /etc/up.key}
  maxSeedTasks: 10
  maxSeedBytes: 1GiB
  seedTaskIdle: 1h
`, func(t *testing.T, c Config) {
			want := Config{CacheDir: "/srv/dfnydus", ControlSocket: "/run/x.sock",
				Store: StoreConfig{Budget: 10 << 30, VerifyReads: true}, MemoryCache: 64 << 20, ReadWindow: 512 << 10, FSDriver: "auto",
				Metrics: MetricsConfig{Addr: "127.0.0.1:9100"}, Prefetch: PrefetchConfig{Mode: "files", Rate: 50 << 20},
				Source:   SourceConfig{Retries: 0},
				Registry: RegistryOptions{PlainHTTP: true, Insecure: true, CAFile: "/etc/ca.pem", DockerConfig: "/root/.docker/config.json"},
				Log:      LogConfig{Level: "debug"},
				Scheduler: SchedulerConfig{Addrs: []string{"10.0.0.1:8002", "sched.example:8002"}, Seed: true, AdvertiseIP: "10.0.0.9",
					Hostname: "node-9", UploadPort: 14000, PiecePort: 14005, PieceLength: 16 << 20, AnnounceInterval: 30 * time.Second, ScheduleTimeout: 4 * time.Second,
					TLS: TLSConfig{CAFile: "/etc/sched-ca.pem", CertFile: "/etc/peer.pem", KeyFile: "/etc/peer.key"}},
				Upload: UploadConfig{MaxConnections: 100, MaxConcurrentPieces: 8, RateLimit: 100 << 20, IdleTimeout: 10 * time.Second,
					IOTimeout: 5 * time.Second, AllowedCallers: []string{"10.1.0.0/16", "10.2.0.1"},
					TLS:          TLSConfig{CAFile: "/etc/ca.pem", CertFile: "/etc/up.pem", KeyFile: "/etc/up.key"},
					MaxSeedTasks: 10, MaxSeedBytes: 1 << 30, SeedTaskIdle: time.Hour}}
			if !reflect.DeepEqual(c, want) {
				t.Errorf("got  %+v\nwant %+v", c, want)
			}
			if !c.P2P() {
				t.Error("scheduler addrs set but P2P() is false")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tt.yaml))
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       []string // substrings of the error
	}{
		{"unknown top-level key", "cacheDir: /x\ncachedir: /y\n", []string{`unknown key "cachedir"`, "line 2"}},
		{"unknown nested key", "store:\n  budgt: 1\n", []string{`unknown key "store.budgt"`, "line 2"}},
		{"unknown scheduler key", "scheduler:\n  addr: [a:1]\n", []string{`unknown key "scheduler.addr"`}},
		{"credentials are not config keys", "registry:\n  username: u\n", []string{`unknown key "registry.username"`}},
		{"relative cache dir", "cacheDir: var/lib\n", []string{"cacheDir", "absolute"}},
		{"relative control socket", "controlSocket: x.sock\n", []string{"controlSocket", "absolute"}},
		{"control socket too long", "controlSocket: /" + strings.Repeat("s", 120) + "\n", []string{"controlSocket", "at most"}},
		{"negative budget", "store: {budget: -1}\n", []string{"store.budget", "negative"}},
		{"negative memory cache", "memoryCache: -5\n", []string{"memoryCache", "negative"}},
		{"read window over 64 MiB", "readWindow: 128MiB\n", []string{"readWindow"}},
		{"size with an unknown unit", "memoryCache: 5MB\n", []string{"size", "5MB", "unit"}},
		{"metrics address without a port", "metrics: {addr: localhost}\n", []string{"metrics.addr", "host:port"}},
		{"bad prefetch mode", "prefetch: {mode: some}\n", []string{"prefetch.mode", "off, files or all"}},
		{"bad fs driver", "fsDriver: kernel\n", []string{"fsDriver", "auto, erofs or fuse"}},
		{"negative prefetch rate", "prefetch: {rate: -1}\n", []string{"prefetch.rate"}},
		{"negative retries", "source: {retries: -2}\n", []string{"source.retries"}},
		{"bad log level", "log: {level: loud}\n", []string{"log.level", "loud"}},
		{"scheduler address without a port", "scheduler: {addrs: [sched]}\n", []string{"scheduler.addrs[0]", "host:port"}},
		{"scheduler tls without a CA", "scheduler: {tls: {certFile: /a, keyFile: /b}}\n", []string{"scheduler.tls.caFile"}},
		{"scheduler tls cert without key", "scheduler: {tls: {caFile: /c, certFile: /a}}\n", []string{"scheduler.tls", "go together"}},
		{"no connections", "upload: {maxConnections: 0}\n", []string{"upload.maxConnections"}},
		{"no piece slots", "upload: {maxConcurrentPieces: -1}\n", []string{"upload.maxConcurrentPieces"}},
		{"negative rate limit", "upload: {rateLimit: -1}\n", []string{"upload.rateLimit", "negative"}},
		{"zero io timeout", "upload: {ioTimeout: 0s}\n", []string{"upload.ioTimeout"}},
		{"zero idle timeout", "upload: {idleTimeout: 0s}\n", []string{"upload.idleTimeout"}},
		{"bad allowed caller", "upload: {allowedCallers: [10.0.0.0/33]}\n", []string{"upload.allowedCallers[0]"}},
		{"upload tls without a key", "upload: {tls: {caFile: /c, certFile: /a}}\n", []string{"upload.tls"}},
		{"no seed tasks", "upload: {maxSeedTasks: 0}\n", []string{"upload.maxSeedTasks"}},
		{"negative seed bytes", "upload: {maxSeedBytes: -1}\n", []string{"upload.maxSeedBytes"}},
		{"zero seed idle", "upload: {seedTaskIdle: 0s}\n", []string{"upload.seedTaskIdle"}},
		{"unknown upload key", "upload: {maxConn: 1}\n", []string{`unknown key "upload.maxConn"`}},
		{"bad advertise IP", "scheduler: {advertiseIP: 10.0.0}\n", []string{"scheduler.advertiseIP"}},
		{"privileged upload port", "scheduler: {uploadPort: 80}\n", []string{"scheduler.uploadPort", "1024..65534"}},
		{"piece port out of range", "scheduler: {piecePort: 65535}\n", []string{"scheduler.piecePort", "1024..65534"}},
		{"same upload and piece port", "scheduler: {uploadPort: 5000, piecePort: 5000}\n", []string{"scheduler.piecePort", "same"}},
		{"piece length under the scheduler's minimum", "scheduler: {pieceLength: 1MiB}\n", []string{"scheduler.pieceLength", "4194304"}},
		{"piece length over the longest Rust peers cut", "scheduler: {pieceLength: 128MiB}\n", []string{"scheduler.pieceLength", "67108864"}},
		{"zero announce interval", "scheduler: {announceInterval: 0s}\n", []string{"scheduler.announceInterval"}},
		{"negative schedule timeout", "scheduler: {scheduleTimeout: -1s}\n", []string{"scheduler.scheduleTimeout"}},
		{"a duration in words", "scheduler: {announceInterval: 5 minutes}\n", []string{"announceInterval"}},
		{"not YAML", "cacheDir: [\n", []string{"yaml"}},
		{"a list where a section goes", "store: [1, 2]\n", []string{"store"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tt.yaml))
			if err == nil {
				t.Fatalf("accepted:\n%s", tt.yaml)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestLoadConfigNamesTheFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "dfnydus.yaml")
	if err := os.WriteFile(p, []byte("bogus: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := LoadConfig(p)
	if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), `"bogus"`) {
		t.Errorf("LoadConfig error %v: want the file and the key", err)
	}
	if _, err := LoadConfig(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Error("a missing file loaded")
	}
}

func TestExampleConfigIsValid(t *testing.T) {
	// docs/dfnydus.yaml documents every key with its default: it must load to the defaults.
	c, err := LoadConfig(filepath.Join("..", "..", "docs", "dfnydus.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, DefaultConfig()) {
		t.Errorf("docs/dfnydus.yaml loads to %+v, not the defaults %+v", c, DefaultConfig())
	}
}

func TestParseByteSize(t *testing.T) {
	tests := []struct {
		in   string
		want ByteSize
		ok   bool
	}{
		{"0", 0, true},
		{"4194304", 4 << 20, true},
		{"100B", 100, true},
		{"1KiB", 1 << 10, true},
		{"4 MiB", 4 << 20, true},
		{"10GiB", 10 << 30, true},
		{"2TiB", 2 << 40, true},
		{"-1", -1, true}, // Validate rejects it where sizes must not be negative
		{"1.5GiB", 0, false},
		{"10GB", 0, false},
		{"MiB", 0, false},
		{"9999999999TiB", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseByteSize(tt.in)
		if (err == nil) != tt.ok || (tt.ok && got != tt.want) {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestDefaultRouteIP(t *testing.T) {
	const header = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
	ips := map[string]net.IP{"eth0": net.IPv4(10, 1, 2, 3), "wlan0": net.IPv4(192, 168, 1, 5)}
	lookup := func(iface string) net.IP { return ips[iface] }
	tests := []struct {
		name, table string
		want        net.IP
	}{
		{"the default route's interface", header +
			"eth1\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n" +
			"eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n", net.IPv4(10, 1, 2, 3)},
		{"a route that is down is skipped", header +
			"eth0\t00000000\t0101A8C0\t0002\t0\t0\t100\t00000000\t0\t0\t0\n" +
			"wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n", net.IPv4(192, 168, 1, 5)},
		{"no default route", header + "eth1\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n", nil},
		{"an interface without an IPv4 address", header + "tun0\t00000000\t00000000\t0001\t0\t0\t0\t00000000\t0\t0\t0\n", nil},
		{"empty", "", nil},
	}
	for _, tt := range tests {
		if got := defaultRouteIP(tt.table, lookup); !got.Equal(tt.want) {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
	if ip := DefaultAdvertiseIP(); ip == nil || ip.To4() == nil {
		t.Errorf("DefaultAdvertiseIP() = %v, want an IPv4 address", ip)
	}
}
