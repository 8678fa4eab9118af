package v5

import (
	"bytes"
	"errors"
	"testing"

	"github.com/dfnydus/dfnydus/rafs"
)

// FuzzDecode: Decode never panics and fails only with ErrCorrupt; whatever it accepts, Encode can
// write, and the written bytes decode to the (normalised) model, verify, and re-encode unchanged.
func FuzzDecode(f *testing.F) {
	f.Add(readFile(f, fixtureSHA256))
	f.Add(readFile(f, fixtureBlake3))
	for _, tc := range modelCases {
		out, err := Encode(tc.build())
		if err != nil {
			f.Fatalf("%s: %v", tc.name, err)
		}
		f.Add(out)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		img, err := Decode(data)
		if err != nil {
			if !errors.Is(err, rafs.ErrCorrupt) {
				t.Fatalf("Decode error does not wrap ErrCorrupt: %v", err)
			}
			return
		}
		if err := Verify(img); err != nil && !errors.Is(err, rafs.ErrCorrupt) {
			t.Fatalf("Verify error does not wrap ErrCorrupt: %v", err)
		}
		out, err := Encode(img)
		if err != nil {
			t.Fatalf("Encode of a decoded image: %v", err)
		}
		again, err := Decode(out)
		if err != nil {
			t.Fatalf("Decode of Encode output: %v", err)
		}
		for _, d := range diffImages(img, again) {
			t.Error(d)
		}
		if err := Verify(again); err != nil {
			t.Errorf("Verify after Encode: %v", err)
		}
		if out2, err := Encode(again); err != nil || !bytes.Equal(out, out2) {
			t.Errorf("re-encoding is not stable: %v", err)
		}
	})
}
