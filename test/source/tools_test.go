package source_test

import (
	"testing"

	"github.com/dfnydus/dfnydus/test/internal/s3test"
)

func startGateway(t testing.TB) *s3test.Gateway { return s3test.Start(t) }
