//go:build faultinject

package p2p

import (
	"bytes"
	"context"
	"io"
	"os"

	"go.uber.org/zap"

	"github.com/dfnydus/dfnydus/peer/vortex"
)

// FaultCorruptPieces, set to 1 in the environment of a daemon built with the faultinject tag, makes
// the peer serve every piece and every range with one byte flipped and a matching crc32, as a
// malicious peer would. The end-to-end suite uses it to check that other peers catch and avoid
// such a parent.
const FaultCorruptPieces = "DFNYDUS_FAULT_CORRUPT_PIECES"

func faults(h vortex.Handler, log *zap.Logger) vortex.Handler {
	if os.Getenv(FaultCorruptPieces) != "1" {
		return h
	}
	log.Warn("fault injection: this peer serves corrupted pieces", zap.String("env", FaultCorruptPieces))
	return func(ctx context.Context, id string, n uint32) (vortex.Piece, io.ReadCloser, error) {
		return corrupt(h(ctx, id, n))
	}
}

func rangeFaults(h vortex.RangeHandler, _ *zap.Logger) vortex.RangeHandler {
	if os.Getenv(FaultCorruptPieces) != "1" {
		return h
	}
	return func(ctx context.Context, id string, off, n uint64) (vortex.Piece, io.ReadCloser, error) {
		return corrupt(h(ctx, id, off, n))
	}
}

// corrupt flips the middle byte of what a handler serves and gives it a matching crc32.
func corrupt(p vortex.Piece, rc io.ReadCloser, err error) (vortex.Piece, io.ReadCloser, error) {
	if err != nil {
		return p, rc, err
	}
	data, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || len(data) == 0 {
		return p, io.NopCloser(bytes.NewReader(data)), err
	}
	data[len(data)/2] ^= 0xff
	p.Digest = vortex.CRC32Digest(data)
	return p, io.NopCloser(bytes.NewReader(data)), nil
}
