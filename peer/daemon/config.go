package daemon

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap/zapcore"
	"gopkg.in/yaml.v3"

	"github.com/dfnydus/dfnydus/peer"
)

// Config is the daemon's configuration: one YAML file (docs/config.md documents every key, and
// docs/dfnydus.yaml is a commented example). Keys missing from the file keep DefaultConfig's values.
type Config struct {
	// CacheDir holds the blob store (CacheDir/store) and the mounts' API sockets (CacheDir/run).
	CacheDir string `yaml:"cacheDir"`
	// ControlSocket is where Serve answers the control API (gRPC, mode 0600).
	ControlSocket string      `yaml:"controlSocket"`
	Store         StoreConfig `yaml:"store"`
	MemoryCache   ByteSize    `yaml:"memoryCache"`
	// ReadWindow is how many stored bytes past a missing chunk one on-demand fetch brings in with it
	// (the missing chunks that follow it in the blob).
	ReadWindow ByteSize `yaml:"readWindow"`
	// FSDriver says how the kernel sees a mounted image: fuse (our FUSE file system), erofs (the
	// kernel's EROFS over the blobs' views, RAFS v6 only; a mount that cannot fails) or auto
	// (erofs where the kernel and the image allow, else fuse, saying why in one log line). A
	// mount request may ask for another. docs/kernel.md.
	FSDriver  string          `yaml:"fsDriver"`
	Metrics   MetricsConfig   `yaml:"metrics"`
	Prefetch  PrefetchConfig  `yaml:"prefetch"`
	Source    SourceConfig    `yaml:"source"`
	Registry  RegistryOptions `yaml:"registry"`
	Log       LogConfig       `yaml:"log"`
	Scheduler SchedulerConfig `yaml:"scheduler"`
	Upload    UploadConfig    `yaml:"upload"`
}

// StoreConfig configures the chunk store.
type StoreConfig struct {
	// Budget bounds the chunk data kept (0: unlimited); least recently used chunks go first.
	Budget ByteSize `yaml:"budget"`
	// VerifyReads re-verifies every cached chunk on every read (default: once per chunk per process).
	VerifyReads bool `yaml:"verifyReads"`
}

// MetricsConfig configures the Prometheus endpoint.
type MetricsConfig struct {
	// Addr, when set, serves /metrics on this TCP address (e.g. 127.0.0.1:9100).
	Addr string `yaml:"addr"`
}

// PrefetchConfig is the default background prefetch of new mounts (a mount request may override it).
type PrefetchConfig struct {
	// Mode is off, files (the image's prefetch list) or all.
	Mode string `yaml:"mode"`
	// Rate limits prefetch to this many compressed bytes per second per mount (0: unlimited).
	Rate ByteSize `yaml:"rate"`
}

// SourceConfig configures back-to-source reads.
type SourceConfig struct {
	// Retries is the number of tries of one back-to-source read, the first included, as
	// `dfnydus mount --source-retries` always meant (0 and 1: no retry).
	Retries int `yaml:"retries"`
}

// RegistryOptions say how to reach registries. In the config they are the defaults of every
// request; a request's options add to them (booleans are or-ed, non-empty strings win).
type RegistryOptions struct {
	// PlainHTTP talks http:// to every registry (loopback registries fall back to it anyway).
	PlainHTTP bool `yaml:"plainHTTP"`
	// Insecure skips TLS certificate verification.
	Insecure bool `yaml:"insecure"`
	// CAFile is a PEM bundle of extra CA certificates.
	CAFile string `yaml:"caFile"`
	// DockerConfig is a docker config.json with credentials (default $DOCKER_CONFIG or ~/.docker/config.json).
	DockerConfig string `yaml:"dockerConfig"`
	// Username and Password, when Username is set, replace the docker config. Requests only: not a
	// config key.
	Username string `yaml:"-"`
	Password string `yaml:"-"`
}

// merge returns o with req's settings added.
func (o RegistryOptions) merge(req *RegistryOptions) RegistryOptions {
	if req == nil {
		return o
	}
	o.PlainHTTP = o.PlainHTTP || req.PlainHTTP
	o.Insecure = o.Insecure || req.Insecure
	if req.CAFile != "" {
		o.CAFile = req.CAFile
	}
	if req.DockerConfig != "" {
		o.DockerConfig = req.DockerConfig
	}
	if req.Username != "" {
		o.Username, o.Password = req.Username, req.Password
	}
	return o
}

// LogConfig configures logging.
type LogConfig struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
}

// SchedulerConfig configures P2P through Dragonfly schedulers. With no Addrs there is no P2P:
// every read goes back to source.
type SchedulerConfig struct {
	// Addrs are the schedulers' gRPC addresses (host:port).
	Addrs []string `yaml:"addrs"`
	// Seed announces this peer as a super seed (host type 1): the scheduler sends it preheat and
	// back-to-source work.
	Seed bool `yaml:"seed"`
	// AdvertiseIP is the address other peers reach this one at; "" means the IP of the interface
	// holding the default route, else 127.0.0.1 (see DefaultAdvertiseIP).
	AdvertiseIP string `yaml:"advertiseIP"`
	// Hostname announced to the scheduler; "" means os.Hostname.
	Hostname string `yaml:"hostname"`
	// UploadPort serves DfdaemonUpload gRPC to peers and schedulers.
	UploadPort int `yaml:"uploadPort"`
	// PiecePort serves piece bytes over Vortex (TCP).
	PiecePort int `yaml:"piecePort"`
	// PieceLength forces the piece length of blob tasks: 4 MiB (the scheduler's minimum) to 64 MiB
	// (the longest piece Rust peers cut).
	// 0 picks the Rust dfdaemon's length for each blob (content length / 500 rounded up to a power
	// of two, within [4 MiB, 64 MiB]) and leaves it out of the task id, as Rust peers and the
	// scheduler's preheat do: keep 0 to share tasks with them.
	PieceLength ByteSize `yaml:"pieceLength"`
	// AnnounceInterval is how often the host is announced again.
	AnnounceInterval time.Duration `yaml:"announceInterval"`
	// ScheduleTimeout is how long the first reads of a new task wait for the scheduler's first
	// answer (parents, or back to source) before they go to the source. Peers that register at the
	// same moment get their answers after the scheduler's retries (~3 s with v2.5.1's defaults);
	// reading from the source meanwhile made a 64-peer start cost the registry 1.32x one peer's
	// bytes instead of 1.00x.
	ScheduleTimeout time.Duration `yaml:"scheduleTimeout"`
	// TLS, when CAFile is set, makes the scheduler connection TLS, verified against CAFile, and
	// presents CertFile/KeyFile as the client certificate when set (the Rust dfdaemon's
	// scheduler.caCert/cert/key). Without it the connection is plaintext.
	TLS TLSConfig `yaml:"tls"`
}

// TLSConfig names PEM files.
type TLSConfig struct {
	CAFile   string `yaml:"caFile"`
	CertFile string `yaml:"certFile"`
	KeyFile  string `yaml:"keyFile"`
}

// Set reports whether any file is named.
func (t TLSConfig) Set() bool { return t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" }

// UploadConfig bounds what other hosts can make this peer do on its upload port (DfdaemonUpload
// gRPC) and piece port (Vortex). docs/p2p.md "Security" says what each limit defends.
type UploadConfig struct {
	// MaxConnections caps the connections open at once on each of the two ports; connections over
	// it are closed as soon as they are accepted.
	MaxConnections int `yaml:"maxConnections"`
	// MaxConcurrentPieces caps the pieces being sent at once, across connections; further
	// requests wait (at most IOTimeout).
	MaxConcurrentPieces int `yaml:"maxConcurrentPieces"`
	// RateLimit caps the piece bytes sent per second, all connections together (0: unlimited).
	RateLimit ByteSize `yaml:"rateLimit"`
	// IdleTimeout closes a connection that sends no request for this long.
	IdleTimeout time.Duration `yaml:"idleTimeout"`
	// IOTimeout bounds each read of a request and each write of a response chunk: a peer that
	// stops reading is cut off and its piece slot freed.
	IOTimeout time.Duration `yaml:"ioTimeout"`
	// AllowedCallers are CIDRs (or IPs) allowed to call DownloadTask and DeleteTask besides the
	// resolved addresses of scheduler.addrs.
	AllowedCallers []string `yaml:"allowedCallers"`
	// TLS serves the upload port over TLS with CertFile/KeyFile; with CAFile, client
	// certificates are required and verified against it (mutual TLS), and a caller with a
	// verified certificate may call DownloadTask.
	TLS TLSConfig `yaml:"tls"`
	// MaxSeedTasks caps the tasks a seed holds because a scheduler asked (DownloadTask); new ones
	// over it are refused (Unavailable).
	MaxSeedTasks int `yaml:"maxSeedTasks"`
	// MaxSeedBytes caps the content bytes of those tasks together (0: unlimited).
	MaxSeedBytes ByteSize `yaml:"maxSeedBytes"`
	// SeedTaskIdle releases such a task once nobody has read or fetched it for this long.
	SeedTaskIdle time.Duration `yaml:"seedTaskIdle"`
}

// Defaults.
const (
	DefaultCacheDir         = "/var/lib/dfnydus"
	DefaultFSDriver         = FSDriverFUSE
	DefaultControlSocket    = "/run/dfnydus/dfnydus.sock"
	DefaultSourceRetries    = 5
	DefaultUploadPort       = 4000 // dragonfly-client's upload gRPC default
	DefaultPiecePort        = 4005 // dragonfly-client's Vortex TCP default
	DefaultPieceLength      = 0    // per blob, as the Rust dfdaemon picks it
	DefaultAnnounceInterval = 5 * time.Minute
	DefaultScheduleTimeout  = 10 * time.Second
	// Upload limits (docs/p2p.md "Security" compares them with the Rust dfdaemon's).
	DefaultUploadMaxConnections      = 1024
	DefaultUploadMaxConcurrentPieces = 64
	DefaultUploadRateLimit           = 0 // unlimited; the Rust dfdaemon's 50 GB/s is in effect unlimited too
	DefaultUploadIdleTimeout         = 60 * time.Second
	DefaultUploadIOTimeout           = 30 * time.Second
	DefaultMaxSeedTasks              = 1024
	DefaultMaxSeedBytes              = 100 << 30
	DefaultSeedTaskIdle              = 24 * time.Hour
	// MinPieceLength is the scheduler's smallest piece length (notes/dragonfly.md).
	MinPieceLength = 4 << 20
	// MaxPieceLength is the longest piece the Rust dfdaemon cuts.
	MaxPieceLength = 64 << 20
	// maxSocketPath is what fits in sockaddr_un.sun_path with its terminating NUL.
	maxSocketPath = 107
)

// DefaultConfig returns the configuration used for keys a file leaves out.
func DefaultConfig() Config {
	return Config{
		CacheDir:      DefaultCacheDir,
		ControlSocket: DefaultControlSocket,
		MemoryCache:   peer.DefaultMemoryCache,
		ReadWindow:    peer.DefaultReadWindow,
		FSDriver:      DefaultFSDriver,
		Prefetch:      PrefetchConfig{Mode: string(peer.PrefetchAll)},
		Source:        SourceConfig{Retries: DefaultSourceRetries},
		Log:           LogConfig{Level: "info"},
		Scheduler: SchedulerConfig{
			UploadPort:       DefaultUploadPort,
			PiecePort:        DefaultPiecePort,
			PieceLength:      DefaultPieceLength,
			AnnounceInterval: DefaultAnnounceInterval,
			ScheduleTimeout:  DefaultScheduleTimeout,
		},
		Upload: UploadConfig{
			MaxConnections:      DefaultUploadMaxConnections,
			MaxConcurrentPieces: DefaultUploadMaxConcurrentPieces,
			RateLimit:           DefaultUploadRateLimit,
			IdleTimeout:         DefaultUploadIdleTimeout,
			IOTimeout:           DefaultUploadIOTimeout,
			MaxSeedTasks:        DefaultMaxSeedTasks,
			MaxSeedBytes:        DefaultMaxSeedBytes,
			SeedTaskIdle:        DefaultSeedTaskIdle,
		},
	}
}

// LoadConfig reads the YAML file at path over DefaultConfig and validates the result. A key the
// daemon does not know is an error naming it (and its line).
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	cfg, err := ParseConfig(data)
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// ParseConfig is LoadConfig of a file's contents.
func ParseConfig(data []byte) (Config, error) {
	cfg := DefaultConfig()
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return Config{}, err
	}
	if len(doc.Content) == 0 { // an empty file (or only comments): the defaults
		return cfg, cfg.Validate()
	}
	if err := checkKeys(doc.Content[0], reflect.TypeOf(cfg), ""); err != nil {
		return Config{}, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, err
	}
	if len(cfg.Scheduler.Addrs) == 0 {
		cfg.Scheduler.Addrs = nil // "addrs: []" is the default
	}
	if len(cfg.Upload.AllowedCallers) == 0 {
		cfg.Upload.AllowedCallers = nil
	}
	return cfg, cfg.Validate()
}

// checkKeys reports the first mapping key of n that t (a struct type) has no field for, and the
// first value that does not decode into its field's type, with the key's dotted path and line: a
// clearer message than the decoder's.
func checkKeys(n *yaml.Node, t reflect.Type, prefix string) error {
	if n.Kind != yaml.MappingNode {
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			return nil
		}
		key := strings.TrimSuffix(prefix, ".")
		if key == "" {
			key = "the file"
		}
		return fmt.Errorf("line %d: %s: want a mapping of keys, have a %s", n.Line, key, kindName(n.Kind))
	}
	fields := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		fields[name] = f.Type
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		ft, ok := fields[k.Value]
		if !ok {
			return fmt.Errorf("line %d: unknown key %q", k.Line, prefix+k.Value)
		}
		if ft.Kind() == reflect.Struct {
			if err := checkKeys(v, ft, prefix+k.Value+"."); err != nil {
				return err
			}
			continue
		}
		if err := v.Decode(reflect.New(ft).Interface()); err != nil {
			msg := linePrefix.ReplaceAllString(strings.TrimPrefix(err.Error(), "yaml: unmarshal errors:\n  "), "")
			return fmt.Errorf("line %d: %s: %s", v.Line, prefix+k.Value, msg)
		}
	}
	return nil
}

// linePrefix is the "line N: " the decoder puts before its messages.
var linePrefix = regexp.MustCompile(`^line \d+: `)

// Validate checks every value and names the first bad key.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if c.CacheDir == "" || !filepath.IsAbs(c.CacheDir) {
		bad("cacheDir", "want an absolute path, have %q", c.CacheDir)
	}
	if c.ControlSocket == "" || !filepath.IsAbs(c.ControlSocket) {
		bad("controlSocket", "want an absolute path, have %q", c.ControlSocket)
	} else if len(c.ControlSocket) > maxSocketPath {
		bad("controlSocket", "%d bytes long, a unix socket path holds at most %d", len(c.ControlSocket), maxSocketPath)
	}
	if c.Store.Budget < 0 {
		bad("store.budget", "negative (%d)", c.Store.Budget)
	}
	if c.ReadWindow < 0 || c.ReadWindow > 64<<20 {
		bad("readWindow", "want 0 to 64MiB, have %d", c.ReadWindow)
	}
	if err := checkFSDriver(c.FSDriver); err != nil {
		bad("fsDriver", "%v", err)
	}
	if c.MemoryCache < 0 {
		bad("memoryCache", "negative (%d)", c.MemoryCache)
	}
	if c.Metrics.Addr != "" {
		if _, _, err := net.SplitHostPort(c.Metrics.Addr); err != nil {
			bad("metrics.addr", "want host:port: %v", err)
		}
	}
	if _, err := peer.ParsePrefetchMode(c.Prefetch.Mode); err != nil {
		bad("prefetch.mode", "%v", err)
	}
	if c.Prefetch.Rate < 0 {
		bad("prefetch.rate", "negative (%d)", c.Prefetch.Rate)
	}
	if c.Source.Retries < 0 {
		bad("source.retries", "negative (%d)", c.Source.Retries)
	}
	var lvl zapcore.Level
	if err := lvl.UnmarshalText([]byte(c.Log.Level)); err != nil {
		bad("log.level", "want debug, info, warn or error, have %q", c.Log.Level)
	}
	s := c.Scheduler
	for i, a := range s.Addrs {
		if _, port, err := net.SplitHostPort(a); err != nil || port == "" {
			bad(fmt.Sprintf("scheduler.addrs[%d]", i), "want host:port, have %q", a)
		}
	}
	if s.AdvertiseIP != "" && net.ParseIP(s.AdvertiseIP) == nil {
		bad("scheduler.advertiseIP", "not an IP address: %q", s.AdvertiseIP)
	}
	// The scheduler accepts ports 1024..65534 (d7y.io/api common.v2.Host port, download_port).
	for _, p := range []struct {
		key  string
		port int
	}{{"scheduler.uploadPort", s.UploadPort}, {"scheduler.piecePort", s.PiecePort}} {
		if p.port < 1024 || p.port > 65534 {
			bad(p.key, "want a port in 1024..65534, have %d", p.port)
		}
	}
	if s.UploadPort == s.PiecePort {
		bad("scheduler.piecePort", "same as scheduler.uploadPort (%d)", s.PiecePort)
	}
	if s.PieceLength != 0 && (s.PieceLength < MinPieceLength || s.PieceLength > MaxPieceLength) {
		bad("scheduler.pieceLength", "want %d (the scheduler's minimum) to %d (the longest piece Rust peers cut), have %d", MinPieceLength, MaxPieceLength, s.PieceLength)
	}
	if s.ScheduleTimeout <= 0 {
		bad("scheduler.scheduleTimeout", "want a positive duration, have %s", s.ScheduleTimeout)
	}
	if s.AnnounceInterval <= 0 {
		bad("scheduler.announceInterval", "want a positive duration, have %s", s.AnnounceInterval)
	}
	if s.TLS.Set() && s.TLS.CAFile == "" {
		bad("scheduler.tls.caFile", "required when scheduler.tls is set")
	}
	if (s.TLS.CertFile == "") != (s.TLS.KeyFile == "") {
		bad("scheduler.tls", "certFile and keyFile go together")
	}
	c.Upload.validate(bad)
	return errors.Join(errs...)
}

// File system drivers (Config.FSDriver, MountRequest.FSDriver).
const (
	FSDriverAuto  = "auto"
	FSDriverEROFS = "erofs"
	FSDriverFUSE  = "fuse"
)

func checkFSDriver(s string) error {
	switch s {
	case FSDriverAuto, FSDriverEROFS, FSDriverFUSE:
		return nil
	}
	return fmt.Errorf("want auto, erofs or fuse, have %q", s)
}

// validate checks the upload limits.
func (u UploadConfig) validate(bad func(key, format string, args ...any)) {
	for _, v := range []struct {
		key string
		n   int
	}{{"upload.maxConnections", u.MaxConnections}, {"upload.maxConcurrentPieces", u.MaxConcurrentPieces}, {"upload.maxSeedTasks", u.MaxSeedTasks}} {
		if v.n < 1 {
			bad(v.key, "want at least 1, have %d", v.n)
		}
	}
	for _, v := range []struct {
		key string
		d   time.Duration
	}{{"upload.idleTimeout", u.IdleTimeout}, {"upload.ioTimeout", u.IOTimeout}, {"upload.seedTaskIdle", u.SeedTaskIdle}} {
		if v.d <= 0 {
			bad(v.key, "want a positive duration, have %s", v.d)
		}
	}
	if u.RateLimit < 0 {
		bad("upload.rateLimit", "negative (%d)", u.RateLimit)
	}
	if u.MaxSeedBytes < 0 {
		bad("upload.maxSeedBytes", "negative (%d)", u.MaxSeedBytes)
	}
	for i, c := range u.AllowedCallers {
		if _, err := netip.ParsePrefix(c); err != nil {
			if _, err := netip.ParseAddr(c); err != nil {
				bad(fmt.Sprintf("upload.allowedCallers[%d]", i), "want a CIDR or an IP address, have %q", c)
			}
		}
	}
	if u.TLS.Set() && (u.TLS.CertFile == "" || u.TLS.KeyFile == "") {
		bad("upload.tls", "certFile and keyFile are required when upload.tls is set")
	}
}

// P2P reports whether schedulers are configured.
func (c Config) P2P() bool { return len(c.Scheduler.Addrs) > 0 }

// ByteSize is a number of bytes; YAML takes an integer or a string with a binary unit
// ("512MiB", "4 GiB", "1024KiB", "100B").
type ByteSize int64

var byteUnits = []struct {
	suffix string
	mult   int64
}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"B", 1}}

// ParseByteSize parses an integer with an optional binary unit.
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range byteUnits {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: want an integer with an optional unit B, KiB, MiB, GiB or TiB", s)
	}
	if n != 0 && (n*mult/mult != n) {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	return ByteSize(n * mult), nil
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a size, have a %s", n.Line, kindName(n.Kind))
	}
	v, err := ParseByteSize(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*b = v
	return nil
}

func kindName(k yaml.Kind) string {
	switch k {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	}
	return "value"
}

// DefaultAdvertiseIP is the IPv4 address of the interface holding the default route (from
// /proc/net/route), else 127.0.0.1.
func DefaultAdvertiseIP() net.IP {
	data, err := os.ReadFile("/proc/net/route")
	if err == nil {
		if ip := defaultRouteIP(string(data), interfaceIPv4); ip != nil {
			return ip
		}
	}
	return net.IPv4(127, 0, 0, 1)
}

// defaultRouteIP finds the default route's interface in a /proc/net/route table ("Iface
// Destination Gateway Flags ... Mask ...", hex fields) and returns lookup's address for it.
func defaultRouteIP(table string, lookup func(iface string) net.IP) net.IP {
	lines := strings.Split(table, "\n")
	for _, l := range lines[min(1, len(lines)):] {
		f := strings.Fields(l)
		if len(f) < 8 || f[1] != "00000000" || f[7] != "00000000" {
			continue
		}
		flags, err := strconv.ParseUint(f[3], 16, 32)
		if err != nil || flags&1 == 0 { // RTF_UP
			continue
		}
		if ip := lookup(f[0]); ip != nil {
			return ip
		}
	}
	return nil
}

// interfaceIPv4 is the first global IPv4 address of the named interface.
func interfaceIPv4(name string) net.IP {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return nil
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && n.IP.IsGlobalUnicast() {
			return n.IP.To4()
		}
	}
	return nil
}

// resolved fills the defaults that depend on the machine: the advertised IP and the hostname.
func (c Config) resolved() Config {
	if c.Scheduler.AdvertiseIP == "" {
		c.Scheduler.AdvertiseIP = DefaultAdvertiseIP().String()
	}
	if c.Scheduler.Hostname == "" {
		if h, err := os.Hostname(); err == nil {
			c.Scheduler.Hostname = h
		}
	}
	return c
}
