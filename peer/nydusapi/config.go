package nydusapi

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// ErrUnsupported marks a configuration or request dfnydus does not serve (a backend type, a cache
// type, the fscache driver, FUSE fd takeover).
var ErrUnsupported = errors.New("not supported by dfnydus")

// ErrBadConfig marks a configuration that cannot be used as given.
var ErrBadConfig = errors.New("bad nydusd configuration")

// Config is the v1 nydusd configuration (RAFS "fusedev" form) the snapshotter writes to
// ROOT/config/ID/config.json and sends in shared-mode mount requests. Field names follow
// nydus-snapshotter v0.16.1 config/daemonconfig/{fuse.go,daemonconfig.go} and nydus's
// api/src/config.rs (RafsConfig v1); fields dfnydus has no use for are accepted and ignored.
type Config struct {
	Device         *DeviceConfig `json:"device"`
	Mode           string        `json:"mode"`
	DigestValidate bool          `json:"digest_validate"`
	IOStatsFiles   bool          `json:"iostats_files,omitempty"`
	EnableXattr    bool          `json:"enable_xattr,omitempty"`
	AccessPattern  bool          `json:"access_pattern,omitempty"`
	AmplifyIO      *int          `json:"amplify_io,omitempty"`
	FSPrefetch     FSPrefetch    `json:"fs_prefetch"`
	IDMapping      *[3]uint32    `json:"id_mapping,omitempty"`
}

// DeviceConfig is the storage half of the configuration: where blobs come from and where they are cached.
type DeviceConfig struct {
	ID      string `json:"id,omitempty"`
	Backend struct {
		Type   string        `json:"type"`
		Config BackendConfig `json:"config"`
	} `json:"backend"`
	Cache struct {
		Type       string `json:"type"`
		Compressed bool   `json:"compressed,omitempty"`
		Config     struct {
			WorkDir           string `json:"work_dir"`
			DisableIndexedMap bool   `json:"disable_indexed_map"`
		} `json:"config"`
	} `json:"cache"`
}

// BackendConfig holds the registry and localfs backend fields (oss and s3 ones are not read).
type BackendConfig struct {
	// localfs
	Dir      string `json:"dir,omitempty"`
	BlobFile string `json:"blob_file,omitempty"`
	// registry
	Host          string   `json:"host,omitempty"`
	Repo          string   `json:"repo,omitempty"`
	Scheme        string   `json:"scheme,omitempty"`
	Auth          string   `json:"auth,omitempty"` // base64 of "user:password"
	RegistryToken string   `json:"registry_token,omitempty"`
	SkipVerify    bool     `json:"skip_verify,omitempty"`
	CACertFiles   []string `json:"ca_cert_files,omitempty"`
	Proxy         struct {
		URL      string `json:"url,omitempty"`
		Fallback bool   `json:"fallback"`
	} `json:"proxy"`
	Timeout        int `json:"timeout,omitempty"`         // seconds
	ConnectTimeout int `json:"connect_timeout,omitempty"` // seconds
	RetryLimit     int `json:"retry_limit,omitempty"`
}

// FSPrefetch is the file-system level prefetch section.
type FSPrefetch struct {
	Enable       bool `json:"enable"`
	PrefetchAll  bool `json:"prefetch_all"`
	ThreadsCount int  `json:"threads_count,omitempty"`
	MergingSize  int  `json:"merging_size,omitempty"`
	// BandwidthRate limits prefetch, bytes per second (nydus's bandwidth_rate); 0 means unlimited.
	BandwidthRate int `json:"bandwidth_rate,omitempty"`
}

// Backend types (nydus storage/src/backend: registry, localfs, oss, s3, http-proxy).
const (
	BackendRegistry = "registry"
	BackendLocalfs  = "localfs"
)

// Prefetch modes a MountConfig can ask for (the values of peer.PrefetchMode).
const (
	PrefetchOff   = "off"
	PrefetchFiles = "files"
	PrefetchAll   = "all"
)

// MountConfig is a validated configuration: everything a Mounter needs besides the bootstrap.
type MountConfig struct {
	// DeviceID is the configuration's device.id ("/SNAPSHOT_ID" when the snapshotter wrote it).
	DeviceID string
	Backend  Backend
	// CacheDir is the cache work_dir ("" when the configuration has none).
	CacheDir string
	// DigestValidate re-verifies cached chunks on every read (fetched chunks are always verified).
	DigestValidate bool
	// Prefetch is PrefetchOff, PrefetchFiles (the image's prefetch list) or PrefetchAll.
	Prefetch string
	// PrefetchRate limits background prefetch in bytes per second (0: unlimited).
	PrefetchRate int64
	// Ignored lists the settings that were given but have no effect here, for a log line.
	Ignored []string
}

// Backend says where blob bytes come from.
type Backend struct {
	Type string // BackendRegistry or BackendLocalfs
	// Registry: host[:port], repository, plain HTTP (scheme "http"), TLS verification skipped,
	// credentials (Username == "" means anonymous or the docker config).
	Host, Repo         string
	PlainHTTP          bool
	SkipVerify         bool
	Username, Password string
	// Timeout bounds one back-to-source request (0: none).
	Timeout time.Duration
	// Retries is how many more attempts a failed back-to-source read gets.
	Retries int
	// Dir is the localfs blob directory (blobs named by their id).
	Dir string
}

// ParseConfig decodes a v1 configuration and validates it.
func ParseConfig(data []byte) (*MountConfig, error) {
	var c Config
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("%w: decode JSON: %w", ErrBadConfig, err)
	}
	return c.Validate()
}

// Validate turns the configuration into a MountConfig, or says what is wrong or unsupported.
func (c *Config) Validate() (*MountConfig, error) {
	// nydus-snapshotter's LoadFuseConfig rejects a configuration without a device the same way.
	if c.Device == nil {
		return nil, fmt.Errorf("%w: no \"device\" section", ErrBadConfig)
	}
	d := c.Device
	mc := &MountConfig{DeviceID: d.ID, CacheDir: d.Cache.Config.WorkDir, DigestValidate: c.DigestValidate, Prefetch: PrefetchOff}
	bc := d.Backend.Config
	switch d.Backend.Type {
	case BackendRegistry:
		if bc.Host == "" || bc.Repo == "" {
			return nil, fmt.Errorf("%w: registry backend needs \"host\" and \"repo\" (got host %q, repo %q)", ErrBadConfig, bc.Host, bc.Repo)
		}
		b := Backend{Type: BackendRegistry, Host: bc.Host, Repo: bc.Repo, SkipVerify: bc.SkipVerify}
		switch strings.ToLower(bc.Scheme) {
		case "", "https":
		case "http":
			b.PlainHTTP = true
		default:
			return nil, fmt.Errorf("%w: registry scheme %q (want http or https)", ErrBadConfig, bc.Scheme)
		}
		if bc.Auth != "" {
			raw, err := base64.StdEncoding.DecodeString(bc.Auth)
			if err != nil {
				return nil, fmt.Errorf("%w: registry \"auth\" is not base64: %w", ErrBadConfig, err)
			}
			user, pass, ok := strings.Cut(string(raw), ":")
			if !ok || user == "" {
				return nil, fmt.Errorf("%w: registry \"auth\" does not decode to user:password", ErrBadConfig)
			}
			b.Username, b.Password = user, pass
		}
		if bc.RegistryToken != "" {
			mc.Ignored = append(mc.Ignored, "backend.config.registry_token (bearer tokens are obtained from the registry instead)")
		}
		if bc.Proxy.URL != "" {
			mc.Ignored = append(mc.Ignored, "backend.config.proxy (dfnydus is the proxy: chunks come from peers or the source)")
		}
		if len(bc.CACertFiles) > 0 {
			mc.Ignored = append(mc.Ignored, "backend.config.ca_cert_files")
		}
		b.Timeout = time.Duration(bc.Timeout) * time.Second
		b.Retries = max(bc.RetryLimit, 0)
		mc.Backend = b
	case BackendLocalfs:
		if bc.Dir == "" {
			if bc.BlobFile != "" {
				return nil, fmt.Errorf("%w: localfs \"blob_file\" (give \"dir\", a directory of blobs named by id)", ErrUnsupported)
			}
			return nil, fmt.Errorf("%w: localfs backend needs \"dir\"", ErrBadConfig)
		}
		mc.Backend = Backend{Type: BackendLocalfs, Dir: bc.Dir, Retries: max(bc.RetryLimit, 0)}
	case "":
		return nil, fmt.Errorf("%w: no backend type", ErrBadConfig)
	default:
		return nil, fmt.Errorf("%w: backend type %q (dfnydus reads blobs from \"registry\" or \"localfs\")", ErrUnsupported, d.Backend.Type)
	}
	switch d.Cache.Type {
	case "", "blobcache", "filecache":
	case "fscache":
		return nil, fmt.Errorf("%w: cache type \"fscache\" (dfnydus serves RAFS over FUSE; use fs_driver \"fusedev\")", ErrUnsupported)
	default:
		mc.Ignored = append(mc.Ignored, fmt.Sprintf("cache.type %q (dfnydus keeps verified chunks in its own store)", d.Cache.Type))
	}
	if c.Mode != "" && c.Mode != "direct" && c.Mode != "cached" {
		return nil, fmt.Errorf("%w: mode %q (want direct or cached)", ErrBadConfig, c.Mode)
	}
	if c.IDMapping != nil {
		return nil, fmt.Errorf("%w: id_mapping (user-namespace remapping)", ErrUnsupported)
	}
	if c.FSPrefetch.Enable {
		mc.Prefetch = PrefetchFiles
		if c.FSPrefetch.PrefetchAll {
			mc.Prefetch = PrefetchAll
		}
		mc.PrefetchRate = int64(max(c.FSPrefetch.BandwidthRate, 0))
	}
	return mc, nil
}
