package p2p

import (
	"bytes"
	"testing"
)

// FuzzDecodeRecord: piece index records come from a file on disk that may be damaged; decoding
// must never panic, and a record that decodes re-encodes to the same bytes.
func FuzzDecodeRecord(f *testing.F) {
	f.Add(pieceRecord{CRC32: 7, Length: 4 << 20, Verified: true}.encode())
	f.Add(pieceRecord{FromParent: true}.encode())
	f.Add([]byte{})
	f.Add(bytes.Repeat([]byte{0xff}, recordLen+1))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeRecord(b)
		if err != nil {
			return
		}
		if len(b) != recordLen {
			t.Fatalf("decoded a %d-byte record", len(b))
		}
		again, err := decodeRecord(r.encode())
		if err != nil || again != r {
			t.Fatalf("record %+v does not survive a round trip: %+v, %v", r, again, err)
		}
	})
}

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
