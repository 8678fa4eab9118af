package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/dfnydus/dfnydus/peer/trace"
)

// prefetchPaths is the prefetch table the flags ask for, in order: a start trace's files (in the
// order the workload first read them), then the pattern and list files' paths; normalised as
// nydus-image does (a path under a directory listed earlier is dropped), the order kept.
func (f *formatFlags) prefetchPaths() ([]string, error) {
	if f.prefetchList == "-" && f.prefetchPatterns == "-" {
		return nil, errors.New("--prefetch-list and --prefetch-patterns cannot both read stdin")
	}
	var paths []string
	if f.prefetchTrace != "" {
		data, err := os.ReadFile(f.prefetchTrace)
		if err != nil {
			return nil, fmt.Errorf("--prefetch-trace: %w", err)
		}
		t, err := trace.Decode(data)
		if err != nil {
			return nil, fmt.Errorf("--prefetch-trace %s: %w", f.prefetchTrace, err)
		}
		paths = append(paths, t.PrefetchPaths()...)
	}
	for _, p := range []struct{ flag, file string }{{"--prefetch-patterns", f.prefetchPatterns}, {"--prefetch-list", f.prefetchList}} {
		if p.file == "" {
			continue
		}
		list, err := readPrefetchList(p.file)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.flag, err)
		}
		paths = append(paths, list...)
	}
	if len(paths) == 0 {
		return nil, nil
	}
	return trace.Patterns(paths), nil
}
