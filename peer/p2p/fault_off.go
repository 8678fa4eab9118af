//go:build !faultinject

package p2p

import (
	"go.uber.org/zap"

	"github.com/dfnydus/dfnydus/peer/vortex"
)

// faults is the identity in release builds: fault injection exists only in binaries built with
// the faultinject tag, for the end-to-end suites.
func faults(h vortex.Handler, _ *zap.Logger) vortex.Handler { return h }

// rangeFaults is the identity in release builds.
func rangeFaults(h vortex.RangeHandler, _ *zap.Logger) vortex.RangeHandler { return h }
