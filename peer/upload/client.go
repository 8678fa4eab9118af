package upload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"

	dfdaemonv2 "d7y.io/api/v2/pkg/apis/dfdaemon/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// PieceLocation is where a parent says a piece can be fetched.
type PieceLocation struct {
	Number         uint32
	Offset, Length uint64
	IP             string
	// TCPPort and QUICPort are the parent's Vortex ports; 0 when it did not announce one.
	TCPPort, QUICPort int
}

// TCPAddr is the host:port of the parent's Vortex TCP server ("" without a TCP port).
func (l PieceLocation) TCPAddr() string {
	if l.TCPPort == 0 {
		return ""
	}
	return net.JoinHostPort(l.IP, strconv.Itoa(l.TCPPort))
}

// ErrBadResponse: a parent's SyncPieces response is not valid (a piece not asked for, a bad
// address).
var ErrBadResponse = errors.New("upload: bad SyncPieces response")

// SyncPieces asks the parent behind cc (its DfdaemonUpload service) where to fetch the given
// pieces of taskID; hostID names the asking host. Locations arrive as the parent gets the pieces;
// the first channel closes when the parent ends the stream, after which the second yields the
// error that ended it, or nil (a closed channel) when it ended cleanly. Pieces the parent never
// gets may never come. Cancel ctx to stop early; the goroutine behind the channels ends with it.
// A NotFound from the parent wraps ErrTaskNotFound.
func SyncPieces(ctx context.Context, cc grpc.ClientConnInterface, hostID, taskID string, numbers []uint32) (<-chan PieceLocation, <-chan error) {
	locs := make(chan PieceLocation)
	errc := make(chan error, 1)
	go func() {
		defer close(errc)
		defer close(locs)
		fail := func(err error) {
			if status.Code(err) == codes.NotFound {
				err = fmt.Errorf("%w: %w", ErrTaskNotFound, err)
			}
			errc <- fmt.Errorf("upload: sync pieces of task %s: %w", taskID, err)
		}
		stream, err := dfdaemonv2.NewDfdaemonUploadClient(cc).SyncPieces(ctx, &dfdaemonv2.SyncPiecesRequest{
			HostId: hostID, TaskId: taskID, InterestedPieceNumbers: numbers,
		})
		if err != nil {
			fail(err)
			return
		}
		want := make(map[uint32]bool, len(numbers))
		for _, n := range numbers {
			want[n] = true
		}
		got := make(map[uint32]bool, len(numbers))
		for {
			resp, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return
			}
			if err != nil {
				fail(err)
				return
			}
			loc, err := location(resp)
			if err == nil && !want[resp.GetNumber()] {
				err = fmt.Errorf("%w: piece %d was not asked for", ErrBadResponse, resp.GetNumber())
			}
			if err != nil {
				fail(err)
				return
			}
			if got[loc.Number] {
				continue // said twice: once is enough
			}
			got[loc.Number] = true
			select {
			case locs <- loc:
			case <-ctx.Done():
				fail(context.Cause(ctx))
				return
			}
		}
	}()
	return locs, errc
}

// location checks and converts one response.
func location(resp *dfdaemonv2.SyncPiecesResponse) (PieceLocation, error) {
	if _, err := netip.ParseAddr(resp.GetIp()); err != nil {
		return PieceLocation{}, fmt.Errorf("%w: piece %d: ip %q: %w", ErrBadResponse, resp.GetNumber(), resp.GetIp(), err)
	}
	loc := PieceLocation{Number: resp.GetNumber(), Offset: resp.GetOffset(), Length: resp.GetLength(), IP: resp.GetIp()}
	for _, p := range []struct {
		port *int32
		dst  *int
		name string
	}{{resp.TcpPort, &loc.TCPPort, "tcp"}, {resp.QuicPort, &loc.QUICPort, "quic"}} {
		if p.port == nil || *p.port == 0 {
			continue
		}
		if *p.port < 1 || *p.port > 65535 {
			return PieceLocation{}, fmt.Errorf("%w: piece %d: %s port %d", ErrBadResponse, resp.GetNumber(), p.name, *p.port)
		}
		*p.dst = int(*p.port)
	}
	return loc, nil
}
