package p2p

import (
	"context"
	"io"

	"github.com/dfnydus/dfnydus/peer/vortex"
)

// pieceHandler serves a piece as a stream.
type pieceHandler func(ctx context.Context, id string, n uint32) (vortex.Piece, io.ReadCloser, error)

// legacy adapts a streaming handler to a vortex.Handler that wants the bytes in hand.
func legacy(h pieceHandler) vortex.Handler {
	return func(ctx context.Context, id string, n uint32) (vortex.Piece, []byte, error) {
		p, rc, err := h(ctx, id, n)
		if err != nil {
			return p, nil, err
		}
		defer rc.Close()
		data, err := io.ReadAll(rc)
		return p, data, err
	}
}
