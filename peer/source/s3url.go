package source

import (
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/minio/minio-go/v7/pkg/s3utils"
)

// ParseS3URL reads an S3 location:
//
//	s3://BUCKET[/PREFIX][?endpoint=URL&region=REGION&insecure=true]
//
// A PREFIX without a trailing slash gets one (s3://b/blobs holds blobs/<id>). endpoint is
// "http(s)://host[:port]" or "host[:port]" (https), default AWS. The region defaults to
// $AWS_REGION, then $AWS_DEFAULT_REGION. Credentials come from $AWS_ACCESS_KEY_ID,
// $AWS_SECRET_ACCESS_KEY and $AWS_SESSION_TOKEN; none means anonymous requests.
func ParseS3URL(s string) (S3Config, error) {
	return parseS3URL(s, os.Getenv)
}

func parseS3URL(s string, getenv func(string) string) (S3Config, error) {
	u, err := url.Parse(s)
	if err != nil {
		return S3Config{}, fmt.Errorf("s3 url: %w", err)
	}
	if u.Scheme != "s3" {
		return S3Config{}, fmt.Errorf("s3 url %q: scheme must be s3://", s)
	}
	if u.User != nil {
		return S3Config{}, fmt.Errorf("s3 url %q: credentials do not belong in the URL (use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)", u.Redacted())
	}
	if u.Opaque != "" || u.Fragment != "" {
		return S3Config{}, fmt.Errorf("s3 url %q: want s3://bucket/prefix", s)
	}
	cfg := S3Config{
		Bucket:       u.Host,
		Prefix:       strings.TrimPrefix(u.Path, "/"),
		Region:       getenv("AWS_REGION"),
		AccessKey:    getenv("AWS_ACCESS_KEY_ID"),
		SecretKey:    getenv("AWS_SECRET_ACCESS_KEY"),
		SessionToken: getenv("AWS_SESSION_TOKEN"),
	}
	if cfg.Region == "" {
		cfg.Region = getenv("AWS_DEFAULT_REGION")
	}
	if err := s3utils.CheckValidBucketNameStrict(cfg.Bucket); err != nil {
		return S3Config{}, fmt.Errorf("s3 url %q: bucket %q: %w", s, cfg.Bucket, err)
	}
	if cfg.Prefix != "" && !strings.HasSuffix(cfg.Prefix, "/") {
		cfg.Prefix += "/"
	}
	if strings.Contains(cfg.Prefix, "//") {
		return S3Config{}, fmt.Errorf("s3 url %q: empty path component in prefix %q", s, cfg.Prefix)
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return S3Config{}, fmt.Errorf("s3 url %q: query: %w", s, err)
	}
	for k, vs := range q {
		if len(vs) != 1 {
			return S3Config{}, fmt.Errorf("s3 url %q: %s given %d times", s, k, len(vs))
		}
		v := vs[0]
		switch k {
		case "endpoint":
			if v == "" {
				return S3Config{}, fmt.Errorf("s3 url %q: empty endpoint", s)
			}
			if strings.Contains(v, "://") {
				eu, err := url.Parse(v)
				if err != nil || (eu.Scheme != "http" && eu.Scheme != "https") || eu.Host == "" ||
					(eu.Path != "" && eu.Path != "/") || eu.RawQuery != "" || eu.User != nil {
					return S3Config{}, fmt.Errorf("s3 url %q: endpoint %q: want http(s)://host[:port]", s, v)
				}
				cfg.PlainHTTP = eu.Scheme == "http"
				v = eu.Host
			} else if strings.ContainsAny(v, "/?#@") {
				return S3Config{}, fmt.Errorf("s3 url %q: endpoint %q: want host[:port] or http(s)://host[:port]", s, v)
			}
			cfg.Endpoint = v
		case "region":
			cfg.Region = v
		case "insecure":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return S3Config{}, fmt.Errorf("s3 url %q: insecure=%q: want true or false", s, v)
			}
			cfg.Insecure = b
		default:
			return S3Config{}, fmt.Errorf("s3 url %q: unknown parameter %q (known: endpoint, region, insecure)", s, k)
		}
	}
	return cfg, nil
}
