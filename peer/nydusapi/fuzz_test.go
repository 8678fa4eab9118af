package nydusapi

import "testing"

// FuzzParseConfig: the v1 JSON config comes from the snapshotter's files and carries credentials
// and paths; parsing never panics.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`{"device":{"backend":{"type":"registry","config":{"host":"r:5000","repo":"a/b","scheme":"http","auth":"dXNlcjpwYXNz"}},"cache":{"type":"blobcache","config":{"work_dir":"/tmp/c"}}},"mode":"direct","digest_validate":true,"fs_prefetch":{"enable":true,"prefetch_all":true,"threads_count":4}}`))
	f.Add([]byte(`{"device":{"backend":{"type":"localfs","config":{"dir":"/blobs"}}}}`))
	f.Add([]byte(`{"device":{"backend":{"type":"oss"}}}`))
	f.Add([]byte(`{"device":{"backend":{"type":"registry","config":{"auth":"!!!"}}}}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = ParseConfig(data)
	})
}
