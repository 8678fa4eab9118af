package trace

import (
	"encoding/json"
	"testing"
)

func jsonOf(t *Trace) (string, error) {
	data, err := json.MarshalIndent(t, "", "  ")
	return string(data), err
}

// FuzzDecode checks the decoder never panics and that whatever it accepts encodes and decodes to
// the same trace.
func FuzzDecode(f *testing.F) {
	data, _ := good().Encode()
	f.Add(data)
	f.Add([]byte(`{"version":1,"bootstrap":"sha256:0000000000000000000000000000000000000000000000000000000000000000","created":"2024-01-01T00:00:00Z","entries":[]}`))
	f.Add([]byte(`{"version":2}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		tr, err := Decode(data)
		if err != nil {
			return
		}
		again, err := tr.Encode()
		if err != nil {
			t.Fatalf("accepted trace does not encode: %v", err)
		}
		tr2, err := Decode(again)
		if err != nil {
			t.Fatalf("re-encoded trace does not decode: %v", err)
		}
		if len(tr2.Entries) != len(tr.Entries) || tr2.Manifest != tr.Manifest || tr2.Bootstrap != tr.Bootstrap {
			t.Fatalf("round trip changed the trace")
		}
	})
}
