package daemon

import "testing"

// FuzzParseConfig: the daemon's YAML config is user input; parsing and validating never panic.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("cacheDir: /var/lib/dfnydus\nscheduler: {addrs: [\"10.0.0.1:8002\"], seed: true}\n"))
	f.Add([]byte("store: {budget: 10GiB}\nprefetch: {mode: files, rate: 1MiB}\n"))
	f.Add([]byte("scheduler: {pieceLength: 1MiB}\n"))
	f.Add([]byte("- a\n- b\n"))
	f.Add([]byte("store: {budgt: 1}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err != nil {
			return
		}
		_ = c.Validate()
	})
}
