package source

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"
)

func TestParseS3URL(t *testing.T) {
	env := map[string]string{
		"AWS_ACCESS_KEY_ID":     "AKID",
		"AWS_SECRET_ACCESS_KEY": "SECRET",
		"AWS_DEFAULT_REGION":    "eu-west-1",
	}
	for _, tc := range []struct {
		name string
		url  string
		env  map[string]string
		want S3Config
		bad  bool
	}{
		{
			name: "full", env: env,
			url: "s3://bucket/prefix?endpoint=http://127.0.0.1:9000&region=us-east-1",
			want: S3Config{Endpoint: "127.0.0.1:9000", Region: "us-east-1", Bucket: "bucket", Prefix: "prefix/",
				AccessKey: "AKID", SecretKey: "SECRET", PlainHTTP: true},
		},
		{
			name: "AWS defaults", env: env,
			url:  "s3://my-blobs",
			want: S3Config{Region: "eu-west-1", Bucket: "my-blobs", AccessKey: "AKID", SecretKey: "SECRET"},
		},
		{
			name: "anonymous, AWS_REGION before AWS_DEFAULT_REGION",
			env:  map[string]string{"AWS_REGION": "ap-south-1", "AWS_DEFAULT_REGION": "eu-west-1"},
			url:  "s3://b-1/a/b/",
			want: S3Config{Region: "ap-south-1", Bucket: "b-1", Prefix: "a/b/"},
		},
		{
			name: "https endpoint and insecure",
			url:  "s3://bucket/p?endpoint=https://s3.local:8443&insecure=true",
			want: S3Config{Endpoint: "s3.local:8443", Bucket: "bucket", Prefix: "p/", Insecure: true},
		},
		{
			name: "endpoint without scheme is https",
			url:  "s3://bucket?endpoint=minio.internal:9000",
			want: S3Config{Endpoint: "minio.internal:9000", Bucket: "bucket"},
		},
		{name: "wrong scheme", url: "http://bucket/p", bad: true},
		{name: "no bucket", url: "s3:///prefix", bad: true},
		{name: "invalid bucket", url: "s3://Bad_Bucket/p", bad: true},
		{name: "credentials in the URL", url: "s3://key:secret@bucket/p", bad: true},
		{name: "unknown parameter", url: "s3://bucket/p?endpont=http://x", bad: true},
		{name: "repeated parameter", url: "s3://bucket/p?region=a&region=b", bad: true},
		{name: "endpoint with a path", url: "s3://bucket/p?endpoint=http://host/path", bad: true},
		{name: "endpoint with another scheme", url: "s3://bucket/p?endpoint=ftp://host", bad: true},
		{name: "empty endpoint", url: "s3://bucket/p?endpoint=", bad: true},
		{name: "bad insecure", url: "s3://bucket/p?insecure=maybe", bad: true},
		{name: "empty path component", url: "s3://bucket/a//b", bad: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseS3URL(tc.url, func(k string) string { return tc.env[k] })
			if tc.bad {
				if err == nil {
					t.Fatalf("parsed %q as %+v, want an error", tc.url, got)
				}
				return
			}
			noErr(t, err)
			if got != tc.want {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestNewS3Endpoints(t *testing.T) {
	for _, tc := range []struct {
		endpoint string
		ok       bool
	}{
		{"127.0.0.1:9000", true},
		{"http://127.0.0.1:9000", true},
		{"https://s3.example.com", true},
		{"", true}, // AWS
		{"ftp://host", false},
		{"http://host/path", false},
		{"http://", false},
	} {
		t.Run(tc.endpoint, func(t *testing.T) {
			s, err := NewS3(S3Config{Endpoint: tc.endpoint, Bucket: "bucket"})
			if tc.ok != (err == nil) {
				t.Fatalf("NewS3(endpoint %q) err = %v, want ok=%v", tc.endpoint, err, tc.ok)
			}
			if s != nil {
				noErr(t, s.Close())
			}
		})
	}
	if _, err := NewS3(S3Config{Bucket: "x"}); err == nil {
		t.Error("a 1-character bucket name was accepted")
	}
}

func TestCheckS3Range(t *testing.T) {
	for _, tc := range []struct {
		name         string
		contentRange string
		size, off, n int64
		wantErr      error // nil: ok; errOther: some other error
	}{
		{"exact", "bytes 100-199/1000", 100, 100, 100, nil},
		{"cut at the object's end", "bytes 900-999/1000", 100, 900, 200, ErrRange},
		{"wrong start", "bytes 0-99/1000", 100, 100, 100, errOther},
		{"short for no reason", "bytes 100-149/1000", 50, 100, 100, errOther},
		{"unknown total", "bytes 100-149/*", 50, 100, 100, errOther},
		{"garbage", "bytes x-y/z", 100, 100, 100, errOther},
		{"range ignored, from 0", "", 1000, 0, 100, nil},
		{"range ignored, past the end", "", 1000, 900, 200, ErrRange},
		{"range ignored, midway", "", 1000, 100, 100, errOther},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkS3Range(tc.contentRange, tc.size, tc.off, tc.n)
			switch tc.wantErr {
			case nil:
				noErr(t, err)
			case errOther:
				if err == nil || errors.Is(err, ErrRange) {
					t.Fatalf("err = %v, want an error other than ErrRange", err)
				}
			default:
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
			}
		})
	}
}

var errOther = errors.New("another error")

func TestS3ErrorMapping(t *testing.T) {
	for _, tc := range []struct {
		resp      minio.ErrorResponse
		want      error // nil: none of the sentinels
		transient bool
	}{
		{minio.ErrorResponse{StatusCode: 404, Code: "NoSuchKey"}, ErrNotFound, false},
		{minio.ErrorResponse{StatusCode: 404, Code: "NoSuchBucket"}, ErrNotFound, false},
		{minio.ErrorResponse{StatusCode: 403, Code: "AccessDenied"}, ErrUnauthorized, false},
		{minio.ErrorResponse{StatusCode: 403, Code: "InvalidAccessKeyId"}, ErrUnauthorized, false},
		{minio.ErrorResponse{StatusCode: 403, Code: "SignatureDoesNotMatch"}, ErrUnauthorized, false},
		{minio.ErrorResponse{StatusCode: 416, Code: "InvalidRange"}, ErrRange, false},
		{minio.ErrorResponse{StatusCode: 500, Code: "InternalError"}, nil, true},
		{minio.ErrorResponse{StatusCode: 503, Code: "SlowDown"}, nil, true},
		{minio.ErrorResponse{StatusCode: 400, Code: "InvalidRequest"}, nil, false},
	} {
		t.Run(fmt.Sprint(tc.resp.StatusCode, tc.resp.Code), func(t *testing.T) {
			err := s3Error(fmt.Errorf("get: %w", tc.resp))
			for _, s := range []error{ErrNotFound, ErrUnauthorized, ErrRange} {
				if got := errors.Is(err, s); got != (s == tc.want) {
					t.Errorf("errors.Is(%v, %v) = %v", err, s, got)
				}
			}
			if Transient(err) != tc.transient {
				t.Errorf("Transient(%v) = %v, want %v", err, !tc.transient, tc.transient)
			}
			if msg := err.Error(); !strings.Contains(msg, fmt.Sprint(tc.resp.StatusCode)) || !strings.Contains(msg, tc.resp.Code) {
				t.Errorf("error %q does not name the status and code", err)
			}
		})
	}
	if err := s3Error(http.ErrHandlerTimeout); err != http.ErrHandlerTimeout {
		t.Errorf("non-S3 errors must pass unchanged, got %v", err)
	}
}
