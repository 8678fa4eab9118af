package schedclient

import (
	"errors"
	"fmt"
	"hash/crc32"
	"strconv"
	"time"

	commonv2 "d7y.io/api/v2/pkg/apis/common/v2"
	"google.golang.org/protobuf/proto"
)

// Piece lengths the scheduler accepts in common.v2.Download.piece_length.
const (
	MinPieceLength = 4 << 20
	MaxPieceLength = 64 << 20
)

// TaskSpec describes the download a Session registers (common.v2.Download).
type TaskSpec struct {
	// TaskID is the Dragonfly task id (see TaskID); required.
	TaskID string
	// PeerID defaults to a new PeerID().
	PeerID string
	// URL is the source URL (required); Digest is "algorithm:hex" of the whole content, optional.
	URL, Digest string
	// PieceLength is the fixed piece length, MinPieceLength..MaxPieceLength (required).
	PieceLength uint64
	// ContentLength and PieceCount are the task's size. The scheduler takes them from the first
	// register of the task (the finish messages carry no sizes since api v2.2.x), and treats
	// ContentLength 0 as an empty task (EventEmpty). PieceCount defaults to
	// ceil(ContentLength / PieceLength).
	ContentLength uint64
	PieceCount    uint32
	// Priority selects what the scheduler does for a new task when seed peers exist: LEVEL6, LEVEL0,
	// LEVEL5 and LEVEL4 trigger a seed peer download, LEVEL3 sends this peer back to source.
	Priority commonv2.Priority
	// NeedBackToSource asks to download from the source; DisableBackToSource forbids it.
	NeedBackToSource, DisableBackToSource bool
	// RequestHeader is passed on to whoever downloads from the source (seed peers).
	RequestHeader map[string]string
	// Prefetch marks a prefetch download (common.v2.Download.is_prefetch).
	Prefetch bool
}

func (spec TaskSpec) withDefaults() (TaskSpec, error) {
	if spec.TaskID == "" || spec.URL == "" {
		return spec, errors.New("task spec needs a task id and a URL")
	}
	if spec.PieceLength < MinPieceLength || spec.PieceLength > MaxPieceLength {
		return spec, fmt.Errorf("piece length %d is outside %d..%d", spec.PieceLength, MinPieceLength, MaxPieceLength)
	}
	if spec.PeerID == "" {
		spec.PeerID = PeerID()
	}
	if spec.PieceCount == 0 && spec.ContentLength > 0 {
		spec.PieceCount = uint32((spec.ContentLength + spec.PieceLength - 1) / spec.PieceLength)
	}
	return spec, nil
}

// download is the register's common.v2.Download.
func (spec TaskSpec) download() *commonv2.Download {
	d := &commonv2.Download{
		Url:                 spec.URL,
		Type:                commonv2.TaskType_STANDARD,
		Priority:            spec.Priority,
		RequestHeader:       spec.RequestHeader,
		PieceLength:         proto.Uint64(spec.PieceLength),
		NeedBackToSource:    spec.NeedBackToSource,
		DisableBackToSource: spec.DisableBackToSource,
		IsPrefetch:          spec.Prefetch,
		ActualPieceLength:   proto.Uint64(spec.PieceLength),
		ActualContentLength: proto.Uint64(spec.ContentLength),
		ActualPieceCount:    proto.Uint64(uint64(spec.PieceCount)),
	}
	if spec.Digest != "" {
		d.Digest = proto.String(spec.Digest)
	}
	return d
}

// Piece is a downloaded piece, as reported to the scheduler.
type Piece struct {
	Number         uint32
	Offset, Length uint64
	// Digest is "crc32:<decimal>" like the Rust peer (see PieceDigest), or another "algo:hex".
	Digest string
	// Cost is how long the download took.
	Cost time.Duration
	// CreatedAt defaults to the time of the first report.
	CreatedAt time.Time
}

// PieceDigest is the digest the Rust peer reports for piece bytes: "crc32:" and the CRC-32 (IEEE)
// in decimal.
func PieceDigest(data []byte) string {
	return "crc32:" + strconv.FormatUint(uint64(crc32.ChecksumIEEE(data)), 10)
}
