package nydusapi

import (
	"errors"
	"reflect"
	"testing"
	"time"
)

// snapshotterConfig is what nydus-snapshotter v0.16.1 writes for an image in a plain-HTTP registry
// (its template misc/snapshotter/nydusd-config.fusedev.json, supplemented with host, repo, id, auth).
const snapshotterConfig = `{"device":{"id":"/42","backend":{"type":"registry","config":{"readahead":false,
"host":"127.0.0.1:5000","repo":"library/debian","auth":"dXNlcjpwYTpzcw==","scheme":"http","proxy":{"fallback":false},
"timeout":5,"connect_timeout":5,"retry_limit":2}},"cache":{"type":"blobcache","config":{"work_dir":"/var/lib/nydus/cache",
"disable_indexed_map":false}}},"mode":"direct","digest_validate":true,"enable_xattr":true,"amplify_io":1048576,
"fs_prefetch":{"enable":true,"prefetch_all":true,"threads_count":8,"merging_size":1048576}}`

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name    string
		json    string
		want    *MountConfig
		wantErr error
	}{
		{name: "the snapshotter's registry configuration", json: snapshotterConfig, want: &MountConfig{
			DeviceID: "/42", CacheDir: "/var/lib/nydus/cache", DigestValidate: true, Prefetch: PrefetchAll,
			Backend: Backend{Type: BackendRegistry, Host: "127.0.0.1:5000", Repo: "library/debian", PlainHTTP: true,
				Username: "user", Password: "pa:ss", Timeout: 5 * time.Second, Retries: 2}}},
		{name: "https by default, prefetch of the image's list only, proxy ignored",
			json: `{"device":{"backend":{"type":"registry","config":{"host":"r.example.com","repo":"a/b","proxy":{"url":"http://p:65001"}}}},
				"fs_prefetch":{"enable":true}}`,
			want: &MountConfig{Prefetch: PrefetchFiles, Backend: Backend{Type: BackendRegistry, Host: "r.example.com", Repo: "a/b"},
				Ignored: []string{"backend.config.proxy (dfnydus is the proxy: chunks come from peers or the source)"}}},
		{name: "localfs directory", json: `{"device":{"backend":{"type":"localfs","config":{"dir":"/blobs"}}}}`,
			want: &MountConfig{Prefetch: PrefetchOff, Backend: Backend{Type: BackendLocalfs, Dir: "/blobs"}}},
		{name: "unsupported backend type", json: `{"device":{"backend":{"type":"oss","config":{}}}}`, wantErr: ErrUnsupported},
		{name: "s3 backend", json: `{"device":{"backend":{"type":"s3","config":{}}}}`, wantErr: ErrUnsupported},
		{name: "fscache cache", json: `{"device":{"backend":{"type":"localfs","config":{"dir":"/b"}},"cache":{"type":"fscache"}}}`, wantErr: ErrUnsupported},
		{name: "id mapping", json: `{"device":{"backend":{"type":"localfs","config":{"dir":"/b"}}},"id_mapping":[0,1000,65536]}`, wantErr: ErrUnsupported},
		{name: "no device", json: `{"mode":"direct"}`, wantErr: ErrBadConfig},
		{name: "registry without repo", json: `{"device":{"backend":{"type":"registry","config":{"host":"h"}}}}`, wantErr: ErrBadConfig},
		{name: "auth that is not base64", json: `{"device":{"backend":{"type":"registry","config":{"host":"h","repo":"r","auth":"%%%"}}}}`, wantErr: ErrBadConfig},
		{name: "auth without a colon", json: `{"device":{"backend":{"type":"registry","config":{"host":"h","repo":"r","auth":"dXNlcg=="}}}}`, wantErr: ErrBadConfig},
		{name: "unknown scheme", json: `{"device":{"backend":{"type":"registry","config":{"host":"h","repo":"r","scheme":"ftp"}}}}`, wantErr: ErrBadConfig},
		{name: "not JSON", json: `device: {}`, wantErr: ErrBadConfig},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseConfig([]byte(tc.json))
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}
