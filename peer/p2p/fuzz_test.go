package p2p

import (
	"bytes"
	"testing"
)

// FuzzBlobIDFromURL: URLs come from the scheduler (DownloadTask); an id that comes out is 64
// characters and is the tail of the URL's blobs path.
func FuzzBlobIDFromURL(f *testing.F) {
	f.Add("http://10.0.0.1:5000/v2/a/b/blobs/sha256:" + string(bytes.Repeat([]byte("ab"), 32)))
	f.Add("https://r/v2/x/blobs/sha256:00?x=1")
	f.Add("")
	f.Fuzz(func(t *testing.T, u string) {
		id, err := BlobIDFromURL(u)
		if err != nil {
			return
		}
		if len(id) != 64 {
			t.Fatalf("blob id %q from %q", id, u)
		}
	})
}
