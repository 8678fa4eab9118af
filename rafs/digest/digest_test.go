package digest

import (
	"testing"

	"github.com/dfnydus/dfnydus/rafs"
)

// Known answers: sha256("abc") (FIPS 180-2) and blake3("") (the BLAKE3 reference test vectors).
func TestKnownAnswers(t *testing.T) {
	tests := []struct {
		alg  rafs.Digester
		in   string
		want string
	}{
		{rafs.DigestSHA256, "abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
		{rafs.DigestBlake3, "", "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"},
	}
	for _, tc := range tests {
		if got := Sum(tc.alg, []byte(tc.in)).String(); got != tc.want {
			t.Errorf("%v(%q) = %s, want %s", tc.alg, tc.in, got, tc.want)
		}
		h := New(tc.alg)
		h.Write([]byte(tc.in))
		var d rafs.Digest
		copy(d[:], h.Sum(nil))
		if d.String() != tc.want {
			t.Errorf("%v streaming = %s, want %s", tc.alg, d, tc.want)
		}
	}
}
