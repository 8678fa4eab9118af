package registry

import (
	"time"

	"go.uber.org/zap"
)

// Defaults for zero Options fields.
const (
	DefaultRetries         = 5
	DefaultUploadChunkSize = 16 << 20
	DefaultRetryBaseDelay  = 200 * time.Millisecond
	DefaultRetryMaxDelay   = 10 * time.Second
	DefaultUserAgent       = "dfnydus"
	// maxRetryAfter caps how long a Retry-After header can make us wait.
	maxRetryAfter = 2 * time.Minute
)

// Options configure a Client. The zero value is usable: HTTPS with system roots, credentials from
// the default docker config, 5 retries.
type Options struct {
	// PlainHTTP talks http:// to every registry. Without it, loopback registries (localhost,
	// 127.0.0.0/8, ::1) are tried over HTTPS first and then plain HTTP; all others use HTTPS only.
	PlainHTTP bool
	// Insecure skips TLS certificate verification.
	Insecure bool
	// CAFile is a PEM bundle of extra CA certificates to trust besides the system roots.
	CAFile string
	// DockerConfig is the path of a docker config.json (or the directory holding it). Default:
	// $DOCKER_CONFIG/config.json, else ~/.docker/config.json; a missing default file means anonymous.
	DockerConfig string
	// Username and Password, when Username is set, are used instead of the docker config: for
	// CredentialHost only when that is set, else for every registry.
	Username, Password string
	// CredentialHost is the registry host (host[:port]) Username and Password belong to; other
	// hosts are then reached anonymously.
	CredentialHost string
	// Retries is how many times a failed request is retried (transient network errors, 5xx, 429).
	// 0 means DefaultRetries; a negative value disables retries.
	Retries int
	// RetryBaseDelay and RetryMaxDelay shape the exponential backoff (with jitter) between retries;
	// 0 means the defaults.
	RetryBaseDelay, RetryMaxDelay time.Duration
	// UploadChunkSize is the size of each PATCH of a chunked blob upload; 0 means 16 MiB.
	UploadChunkSize int64
	// Logger receives debug logs of requests and warnings about retries; nil means none.
	Logger *zap.Logger
	// UserAgent is sent with every request; "" means DefaultUserAgent.
	UserAgent string
}

func (o Options) withDefaults() Options {
	switch {
	case o.Retries == 0:
		o.Retries = DefaultRetries
	case o.Retries < 0:
		o.Retries = 0
	}
	if o.RetryBaseDelay <= 0 {
		o.RetryBaseDelay = DefaultRetryBaseDelay
	}
	if o.RetryMaxDelay <= 0 {
		o.RetryMaxDelay = DefaultRetryMaxDelay
	}
	if o.RetryMaxDelay < o.RetryBaseDelay {
		o.RetryMaxDelay = o.RetryBaseDelay
	}
	if o.UploadChunkSize <= 0 {
		o.UploadChunkSize = DefaultUploadChunkSize
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.UserAgent == "" {
		o.UserAgent = DefaultUserAgent
	}
	return o
}
