package testenv

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
)

// LogBuffer collects a child process's output while the test reads it; it keeps the first 4 MiB.
// Its zero value is ready to use.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := 4<<20 - l.b.Len(); room > 0 {
		l.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.ToValidUTF8(l.b.String(), "?")
}

// RegistryConfig is the docker-registry (distribution 2.8) configuration the suites run: filesystem
// storage under root, deletes on, no upload purging or access log, listening on addr; extra (YAML
// at top level, e.g. an auth section) is appended.
func RegistryConfig(root, addr, extra string) string { return registryConfig(root, addr, extra, false) }

// RegistryConfigWithAccessLog is RegistryConfig with the access log on: one Apache combined-format
// line per request on stdout, with the bytes its response carried.
func RegistryConfigWithAccessLog(root, addr, extra string) string {
	return registryConfig(root, addr, extra, true)
}

func registryConfig(root, addr, extra string, accessLog bool) string {
	return fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: %t
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
  secret: dfnydus-test-secret
%s`, !accessLog, root, addr, extra)
}
