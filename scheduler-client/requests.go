package schedclient

import (
	"fmt"

	commonv2 "d7y.io/api/v2/pkg/apis/common/v2"
	errordetailsv2 "d7y.io/api/v2/pkg/apis/errordetails/v2"
	schedulerv2 "d7y.io/api/v2/pkg/apis/scheduler/v2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Builders of the AnnouncePeer requests a session sends. They read only the session's immutable
// spec and its client's host id, so they need no lock.

// build is an AnnouncePeerRequest of this session's host, task and peer; set fills its Request
// (the oneof's interface type is unexported in the generated code).
func (s *Session) build(set func(*schedulerv2.AnnouncePeerRequest)) *schedulerv2.AnnouncePeerRequest {
	req := &schedulerv2.AnnouncePeerRequest{HostId: s.c.cfg.Host.ID, TaskId: s.spec.TaskID, PeerId: s.spec.PeerID}
	set(req)
	return req
}

func (s *Session) registerRequest() *schedulerv2.AnnouncePeerRequest {
	return s.build(func(r *schedulerv2.AnnouncePeerRequest) {
		r.Request = &schedulerv2.AnnouncePeerRequest_RegisterPeerRequest{
			RegisterPeerRequest: &schedulerv2.RegisterPeerRequest{Download: s.spec.download()},
		}
	})
}

func (s *Session) startedRequest(backToSource bool) *schedulerv2.AnnouncePeerRequest {
	if backToSource {
		return s.build(func(r *schedulerv2.AnnouncePeerRequest) {
			r.Request = &schedulerv2.AnnouncePeerRequest_DownloadPeerBackToSourceStartedRequest{
				DownloadPeerBackToSourceStartedRequest: &schedulerv2.DownloadPeerBackToSourceStartedRequest{}}
		})
	}
	return s.build(func(r *schedulerv2.AnnouncePeerRequest) {
		r.Request = &schedulerv2.AnnouncePeerRequest_DownloadPeerStartedRequest{
			DownloadPeerStartedRequest: &schedulerv2.DownloadPeerStartedRequest{}}
	})
}

func (s *Session) pieceRequest(p Piece, parentID string) *schedulerv2.AnnouncePeerRequest {
	piece := &commonv2.Piece{
		Number:    p.Number,
		Offset:    p.Offset,
		Length:    p.Length,
		Digest:    p.Digest,
		Cost:      durationpb.New(p.Cost),
		CreatedAt: timestamppb.New(p.CreatedAt),
	}
	if parentID == "" {
		piece.TrafficType = commonv2.TrafficType_BACK_TO_SOURCE.Enum()
		return s.build(func(r *schedulerv2.AnnouncePeerRequest) {
			r.Request = &schedulerv2.AnnouncePeerRequest_DownloadPieceBackToSourceFinishedRequest{
				DownloadPieceBackToSourceFinishedRequest: &schedulerv2.DownloadPieceBackToSourceFinishedRequest{Piece: piece}}
		})
	}
	piece.ParentId = proto.String(parentID)
	piece.TrafficType = commonv2.TrafficType_REMOTE_PEER.Enum()
	return s.build(func(r *schedulerv2.AnnouncePeerRequest) {
		r.Request = &schedulerv2.AnnouncePeerRequest_DownloadPieceFinishedRequest{
			DownloadPieceFinishedRequest: &schedulerv2.DownloadPieceFinishedRequest{Piece: piece}}
	})
}

func (s *Session) outcomeRequest(o outcome) *schedulerv2.AnnouncePeerRequest {
	var desc *string
	if o.description != "" {
		desc = proto.String(o.description)
	}
	switch {
	case o.finished && o.backToSource:
		return s.build(func(r *schedulerv2.AnnouncePeerRequest) {
			r.Request = &schedulerv2.AnnouncePeerRequest_DownloadPeerBackToSourceFinishedRequest{
				DownloadPeerBackToSourceFinishedRequest: &schedulerv2.DownloadPeerBackToSourceFinishedRequest{}}
		})
	case o.finished:
		return s.build(func(r *schedulerv2.AnnouncePeerRequest) {
			r.Request = &schedulerv2.AnnouncePeerRequest_DownloadPeerFinishedRequest{
				DownloadPeerFinishedRequest: &schedulerv2.DownloadPeerFinishedRequest{}}
		})
	case o.backToSource:
		return s.build(func(r *schedulerv2.AnnouncePeerRequest) {
			r.Request = &schedulerv2.AnnouncePeerRequest_DownloadPeerBackToSourceFailedRequest{
				DownloadPeerBackToSourceFailedRequest: &schedulerv2.DownloadPeerBackToSourceFailedRequest{Description: desc}}
		})
	default:
		return s.build(func(r *schedulerv2.AnnouncePeerRequest) {
			r.Request = &schedulerv2.AnnouncePeerRequest_DownloadPeerFailedRequest{
				DownloadPeerFailedRequest: &schedulerv2.DownloadPeerFailedRequest{Description: desc}}
		})
	}
}

// placeholderPeer is a common.v2.Peer for a parent the scheduler did not name in this session. The
// scheduler reads only the id (service_v2.go handleReschedulePeerRequest), but its request
// validator checks every required field of the message, so the others get valid fillers.
func (s *Session) placeholderPeer(p Parent) *commonv2.Peer {
	now := timestamppb.Now()
	host := &commonv2.Host{Id: p.HostID, Hostname: p.Hostname, Ip: p.IP, Port: int32(p.Port), DownloadPort: int32(p.DownloadPort)}
	if host.Id == "" {
		host.Id = "unknown"
	}
	if host.Hostname == "" {
		host.Hostname = host.Id
	}
	if host.Ip == "" {
		host.Ip = "0.0.0.0"
	}
	if host.Port < 1024 || host.Port >= 65535 {
		host.Port = 1024
	}
	if host.DownloadPort < 1024 || host.DownloadPort >= 65535 {
		host.DownloadPort = host.Port
	}
	state := p.State
	if state == "" {
		state = "Running"
	}
	return &commonv2.Peer{
		Id: p.PeerID, Priority: s.spec.Priority, Cost: durationpb.New(0), State: state,
		Task: &commonv2.Task{Id: s.spec.TaskID, Type: commonv2.TaskType_STANDARD, Url: s.spec.URL, State: "Running",
			CreatedAt: now, UpdatedAt: now},
		Host: host, CreatedAt: now, UpdatedAt: now,
	}
}

func (s *Session) pieceFailedRequest(number uint32, parentID string, temporary bool) *schedulerv2.AnnouncePeerRequest {
	if parentID == "" {
		return s.build(func(r *schedulerv2.AnnouncePeerRequest) {
			r.Request = &schedulerv2.AnnouncePeerRequest_DownloadPieceBackToSourceFailedRequest{
				DownloadPieceBackToSourceFailedRequest: &schedulerv2.DownloadPieceBackToSourceFailedRequest{
					PieceNumber: proto.Uint32(number),
					Response: &schedulerv2.DownloadPieceBackToSourceFailedRequest_Unknown{Unknown: &errordetailsv2.Unknown{
						Message: proto.String(fmt.Sprintf("piece %d failed from the source", number))}},
				}}
		})
	}
	return s.build(func(r *schedulerv2.AnnouncePeerRequest) {
		r.Request = &schedulerv2.AnnouncePeerRequest_DownloadPieceFailedRequest{
			DownloadPieceFailedRequest: &schedulerv2.DownloadPieceFailedRequest{
				PieceNumber: proto.Uint32(number), ParentId: parentID, Temporary: temporary,
			}}
	})
}

func (s *Session) rescheduleRequest(cands []*commonv2.Peer, description string) *schedulerv2.AnnouncePeerRequest {
	var desc *string
	if description != "" {
		desc = proto.String(description)
	}
	return s.build(func(r *schedulerv2.AnnouncePeerRequest) {
		r.Request = &schedulerv2.AnnouncePeerRequest_ReschedulePeerRequest{
			ReschedulePeerRequest: &schedulerv2.ReschedulePeerRequest{CandidateParents: cands, Description: desc},
		}
	})
}

func (s *Session) deletePeerRequest() *schedulerv2.DeletePeerRequest {
	return &schedulerv2.DeletePeerRequest{HostId: s.c.cfg.Host.ID, TaskId: s.spec.TaskID, PeerId: s.spec.PeerID}
}
