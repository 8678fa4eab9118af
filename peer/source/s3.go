package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/minio/minio-go/v7"

	"github.com/dfnydus/dfnydus/registry"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/s3utils"
)

// S3Config says where blobs live in S3 (or any S3-compatible store).
type S3Config struct {
	// Endpoint is "host[:port]" or a URL "http(s)://host[:port]" (http:// implies PlainHTTP);
	// "" means AWS (s3.amazonaws.com).
	Endpoint string
	// Region is the bucket's region; "" lets the client look it up.
	Region string
	Bucket string
	// Prefix is put before the blob id to make the object key, verbatim ("blobs/" -> blobs/<id>).
	Prefix string
	// AccessKey and SecretKey sign requests (SigV4); both empty means anonymous requests.
	// SessionToken goes with temporary credentials.
	AccessKey, SecretKey, SessionToken string
	// PlainHTTP talks http:// instead of https://.
	PlainHTTP bool
	// Insecure skips TLS certificate verification.
	Insecure bool
}

// String describes the configuration for logs, without credentials.
func (c S3Config) String() string {
	scheme := "https"
	if c.PlainHTTP {
		scheme = "http"
	}
	return fmt.Sprintf("s3://%s/%s (endpoint %s://%s, region %q)", c.Bucket, c.Prefix, scheme, c.Endpoint, c.Region)
}

// S3 reads blobs from objects Prefix+id of a bucket with ranged GETs.
type S3 struct {
	cfg  S3Config
	core minio.Core
	tr   *http.Transport
}

// NewS3 returns a Source over cfg's bucket. No request is sent until the first read. The client
// does not retry by itself: wrap the Source in Retrying.
func NewS3(cfg S3Config) (Source, error) {
	endpoint := cfg.Endpoint
	if endpoint == "" {
		endpoint = "s3.amazonaws.com"
	}
	if strings.Contains(endpoint, "://") {
		u, err := url.Parse(endpoint)
		if err != nil {
			return nil, fmt.Errorf("s3 endpoint %q: %w", cfg.Endpoint, err)
		}
		switch {
		case u.Scheme == "http":
			cfg.PlainHTTP = true
		case u.Scheme != "https":
			return nil, fmt.Errorf("s3 endpoint %q: scheme must be http or https", cfg.Endpoint)
		}
		if u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
			return nil, fmt.Errorf("s3 endpoint %q: want scheme://host[:port] only", cfg.Endpoint)
		}
		endpoint = u.Host
	}
	cfg.Endpoint = endpoint
	if err := s3utils.CheckValidBucketNameStrict(cfg.Bucket); err != nil {
		return nil, fmt.Errorf("s3 bucket %q: %w", cfg.Bucket, err)
	}
	tr, err := minio.DefaultTransport(!cfg.PlainHTTP)
	if err != nil {
		return nil, fmt.Errorf("s3 transport: %w", err)
	}
	if cfg.Insecure && tr.TLSClientConfig != nil {
		tr.TLSClientConfig.InsecureSkipVerify = true //nolint:gosec // asked for
	}
	client, err := minio.New(endpoint, &minio.Options{
		Creds:      credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, cfg.SessionToken),
		Secure:     !cfg.PlainHTTP,
		Transport:  tr,
		Region:     cfg.Region,
		MaxRetries: 1, // no retries of its own: Retrying owns the policy
	})
	if err != nil {
		return nil, fmt.Errorf("s3 client for %s: %w", cfg, err)
	}
	return &S3{cfg: cfg, core: minio.Core{Client: client}, tr: tr}, nil
}

func (s *S3) String() string { return "s3" }

// Close releases idle connections.
func (s *S3) Close() error {
	s.tr.CloseIdleConnections()
	return nil
}

func (s *S3) ReadRange(ctx context.Context, blobID string, off, n int64) (io.ReadCloser, error) {
	if err := checkRead(ctx, blobID, off, n); err != nil {
		return nil, fmt.Errorf("s3 %s: %w", s.cfg.Bucket, err)
	}
	if n == 0 {
		return emptyReader(), nil
	}
	key := s.cfg.Prefix + blobID
	what := func() string { return rangeString("s3 "+s.cfg.Bucket+"/"+s.cfg.Prefix, blobID, off, n) }
	var opts minio.GetObjectOptions
	if err := opts.SetRange(off, off+n-1); err != nil {
		return nil, fmt.Errorf("%s: %w", what(), err)
	}
	body, info, hdr, err := s.core.GetObject(ctx, s.cfg.Bucket, key, opts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what(), s3Error(err))
	}
	if err := checkS3Range(hdr.Get("Content-Range"), info.Size, off, n); err != nil {
		body.Close()
		return nil, fmt.Errorf("%s: %w", what(), err)
	}
	return newRangeReader(ctx, body, n, what, nil), nil
}

// checkS3Range checks that a ranged GET's response holds bytes [off, off+n): Content-Range
// "bytes A-B/TOTAL" with A == off, and Content-Length size == n. A server that ignored the range
// (no Content-Range) is accepted only when the object starts at off == 0 and is long enough.
func checkS3Range(contentRange string, size, off, n int64) error {
	if contentRange == "" {
		if off == 0 && size >= n {
			return nil
		}
		if size >= 0 && off+n > size {
			return fmt.Errorf("%w: the object is %d bytes", ErrRange, size)
		}
		return fmt.Errorf("server ignored the Range header (sent %d bytes)", size)
	}
	start, total, ok := registry.ParseContentRange(contentRange)
	if !ok || start != off {
		return fmt.Errorf("asked for bytes from %d, got Content-Range %q", off, contentRange)
	}
	if size == n {
		return nil
	}
	if total >= 0 && off+n > total {
		return fmt.Errorf("%w: the object is %d bytes", ErrRange, total)
	}
	return fmt.Errorf("asked for %d bytes, server sends %d (Content-Range %q)", n, size, contentRange)
}

// s3Error maps an S3 error response onto the package's sentinels and says which one it was.
func s3Error(err error) error {
	var er minio.ErrorResponse
	if !errors.As(err, &er) {
		return err
	}
	var sentinel error
	switch {
	case er.StatusCode == http.StatusNotFound || er.Code == minio.NoSuchKey || er.Code == minio.NoSuchBucket:
		sentinel = ErrNotFound
	case er.StatusCode == http.StatusUnauthorized || er.StatusCode == http.StatusForbidden ||
		er.Code == minio.AccessDenied || er.Code == minio.InvalidAccessKeyID || er.Code == minio.SignatureDoesNotMatch:
		sentinel = ErrUnauthorized
	case er.StatusCode == http.StatusRequestedRangeNotSatisfiable || er.Code == minio.InvalidRange:
		sentinel = ErrRange
	}
	desc := fmt.Sprintf("S3 %d", er.StatusCode)
	if er.Code != "" {
		desc += " " + er.Code
	}
	if sentinel == nil {
		return fmt.Errorf("%s: %w", desc, err)
	}
	return fmt.Errorf("%w: %s: %w", sentinel, desc, err)
}
