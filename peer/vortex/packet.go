package vortex

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Sizes of the fixed parts of packets (vortex-protocol src/lib.rs HEADER_SIZE,
// src/tlv/download_piece.rs TASK_ID_SIZE and PIECE_NUMBER_SIZE, src/tlv/piece_content.rs *_SIZE).
const (
	// HeaderSize is the size of a packet header: packet id u8, tag u8, value length u32.
	HeaderSize = 6
	// TaskIDSize is the size of the task id in a DownloadPiece request.
	TaskIDSize = 64

	downloadPieceSize  = TaskIDSize + 4
	downloadRangeSize  = TaskIDSize + 8 + 8
	metadataLengthSize = 4
	// fixedMetadataSize counts the metadata fields other than the digest and parent id bytes:
	// number 4, offset 8, length 8, digest length 4, parent id length 4, traffic type 1, cost 8,
	// created at 8.
	fixedMetadataSize = 4 + 8 + 8 + 4 + 4 + 1 + 8 + 8
	errorCodeSize     = 1
)

// Limits on what a peer may send us. The protocol allows values up to 4 GiB; nothing we exchange
// comes near that, so anything larger is refused before a byte of it is allocated.
const (
	// MaxPieceLength is the default cap on a piece's content: Dragonfly pieces are 4 to 64 MiB
	// (the last one shorter).
	MaxPieceLength = 64 << 20
	// MaxMetadataSize caps the PieceContent metadata (its variable parts are a digest and a peer id).
	MaxMetadataSize = 64 << 10
	// MaxErrorSize caps the value of an Error packet (code and message).
	MaxErrorSize = 64 << 10
	// MaxRangeLength caps a DownloadRange: ranges are what a reader waits for (a few chunks), not
	// whole pieces. A range is served from memory (for its crc32), so this times the server's
	// MaxConcurrentPieces bounds what callers can pin (4 MiB x 64 = 256 MiB); a longer chunk comes
	// in two ranges, its halves verified together.
	MaxRangeLength = 4 << 20
)

// Tag says what a packet's value holds (vortex-protocol src/tlv/mod.rs).
type Tag uint8

// The tags of the protocol. Only DownloadPiece, PieceContent, Error and Close are used here; the
// persistent and cache variants belong to other task types.
const (
	TagDownloadPiece                Tag = 0
	TagPieceContent                 Tag = 1
	TagDownloadPersistentPiece      Tag = 2
	TagPersistentPieceContent       Tag = 3
	TagDownloadPersistentCachePiece Tag = 4
	TagPersistentCachePieceContent  Tag = 5
	TagDownloadCachePiece           Tag = 6
	TagCachePieceContent            Tag = 7
	// TagDownloadRange is ours, not vortex-protocol's: task id (64 bytes) | offset u64 | length
	// u64 asks for bytes [offset, offset+length) of a task the peer holds verified, whether or not
	// the pieces around them are complete (a container start reads a few chunks of many pieces).
	// The answer is a PieceContent with Number 0 and the range's Offset and Length, or an Error.
	// A Rust dfdaemon answers it with an Error (or closes the connection): callers fall back to
	// whole pieces.
	TagDownloadRange Tag = 128
	TagClose         Tag = 254
	TagError         Tag = 255
)

func (t Tag) String() string {
	switch t {
	case TagDownloadPiece:
		return "DownloadPiece"
	case TagPieceContent:
		return "PieceContent"
	case TagDownloadPersistentPiece:
		return "DownloadPersistentPiece"
	case TagPersistentPieceContent:
		return "PersistentPieceContent"
	case TagDownloadPersistentCachePiece:
		return "DownloadPersistentCachePiece"
	case TagPersistentCachePieceContent:
		return "PersistentCachePieceContent"
	case TagDownloadCachePiece:
		return "DownloadCachePiece"
	case TagCachePieceContent:
		return "CachePieceContent"
	case TagDownloadRange:
		return "DownloadRange"
	case TagClose:
		return "Close"
	case TagError:
		return "Error"
	}
	return "Reserved(" + strconv.Itoa(int(t)) + ")"
}

// Code is the error code of an Error packet (vortex-protocol src/tlv/error.rs).
type Code uint8

// The error codes; 4-255 are reserved.
const (
	CodeUnknown         Code = 0
	CodeInvalidArgument Code = 1
	CodeNotFound        Code = 2
	CodeInternal        Code = 3
)

func (c Code) String() string {
	switch c {
	case CodeUnknown:
		return "Unknown"
	case CodeInvalidArgument:
		return "InvalidArgument"
	case CodeNotFound:
		return "NotFound"
	case CodeInternal:
		return "Internal"
	}
	return "Reserved(" + strconv.Itoa(int(c)) + ")"
}

// TrafficTypeRemotePeer is common.v2.TrafficType REMOTE_PEER, what the Rust server always puts in
// PieceContent (dragonfly-client-storage/src/server/tcp.rs handle_piece).
const TrafficTypeRemotePeer uint8 = 1

// Errors the package's errors wrap; check them with errors.Is.
var (
	// ErrPieceNotFound: the peer does not hold the piece (a Handler returns it; a Client gets it for
	// an Error packet with CodeNotFound).
	ErrPieceNotFound = errors.New("vortex: piece not found")
	// ErrRemote: the peer answered with an Error packet (RemoteError has its code and message).
	ErrRemote = errors.New("vortex: remote error")
	// ErrProtocol: the peer sent bytes that are not a valid packet, or not the packet expected.
	ErrProtocol = errors.New("vortex: protocol violation")
	// ErrPieceInvalid: the peer sent a piece other than the one asked for: wrong number, offset or
	// length, or content that does not match its digest.
	ErrPieceInvalid = errors.New("vortex: invalid piece")
	// ErrClientClosed: the Client was closed.
	ErrClientClosed = errors.New("vortex: client closed")
)

// RemoteError is an Error packet a peer sent. It matches ErrRemote, and ErrPieceNotFound when its
// code is CodeNotFound.
type RemoteError struct {
	Code    Code
	Message string
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("vortex: remote error %s: %s", e.Code, e.Message)
}

// Is reports whether target is ErrRemote, or ErrPieceNotFound for CodeNotFound.
func (e *RemoteError) Is(target error) bool {
	return target == ErrRemote || (target == ErrPieceNotFound && e.Code == CodeNotFound)
}

// Piece is the metadata of a piece as PieceContent carries it.
type Piece struct {
	Number uint32
	// Offset and Length place the piece in the task's content.
	Offset, Length uint64
	// Digest is "crc32:<decimal>" in Dragonfly today; empty means none.
	Digest string
	// ParentID is the peer the sender got the piece from (empty if it came from the source).
	ParentID string
	// TrafficType is a common.v2.TrafficType value (the Rust server sends TrafficTypeRemotePeer).
	TrafficType uint8
	// Cost is how long the sender took to get the piece; the wire carries whole seconds.
	Cost time.Duration
	// CreatedAt is when the sender got the piece; the wire carries Unix seconds.
	CreatedAt time.Time
}

// CRC32Digest returns the digest Dragonfly gives a piece: "crc32:" and the CRC-32 (IEEE) of b in
// decimal, as the Rust dfdaemon writes it (dragonfly-client-storage/src/io.rs hashes with crc32fast
// and formats hasher.finalize() with to_string; pkg/digest AlgorithmCRC32 in the Go tree).
func CRC32Digest(b []byte) string {
	return "crc32:" + strconv.FormatUint(uint64(crc32.ChecksumIEEE(b)), 10)
}

// header is a packet header.
type header struct {
	id     uint8
	tag    Tag
	length uint32
}

func (h header) append(b []byte) []byte {
	b = append(b, h.id, byte(h.tag))
	return binary.BigEndian.AppendUint32(b, h.length)
}

func parseHeader(b []byte) header {
	_ = b[HeaderSize-1]
	return header{id: b[0], tag: Tag(b[1]), length: binary.BigEndian.Uint32(b[2:6])}
}

// checkTaskID reports whether taskID can go into a DownloadPiece request: the Rust decoder takes
// exactly TaskIDSize bytes of UTF-8 (src/tlv/download_piece.rs).
func checkTaskID(taskID string) error {
	if len(taskID) != TaskIDSize {
		return fmt.Errorf("vortex: task id %q is %d bytes, want %d", taskID, len(taskID), TaskIDSize)
	}
	if !utf8.ValidString(taskID) {
		return fmt.Errorf("vortex: task id %q is not UTF-8", taskID)
	}
	return nil
}

// appendDownloadPiece appends a whole DownloadPiece packet; taskID must pass checkTaskID.
func appendDownloadPiece(b []byte, id uint8, taskID string, number uint32) []byte {
	b = header{id: id, tag: TagDownloadPiece, length: downloadPieceSize}.append(b)
	b = append(b, taskID...)
	return binary.BigEndian.AppendUint32(b, number)
}

// decodeDownloadPiece decodes the value of a DownloadPiece packet.
func decodeDownloadPiece(v []byte) (taskID string, number uint32, err error) {
	if len(v) != downloadPieceSize {
		return "", 0, fmt.Errorf("%w: DownloadPiece value is %d bytes, want %d", ErrProtocol, len(v), downloadPieceSize)
	}
	if !utf8.Valid(v[:TaskIDSize]) {
		return "", 0, fmt.Errorf("%w: DownloadPiece task id is not UTF-8", ErrProtocol)
	}
	return string(v[:TaskIDSize]), binary.BigEndian.Uint32(v[TaskIDSize:]), nil
}

// appendDownloadRange appends a whole DownloadRange packet; taskID must pass checkTaskID.
func appendDownloadRange(b []byte, id uint8, taskID string, offset, length uint64) []byte {
	b = header{id: id, tag: TagDownloadRange, length: downloadRangeSize}.append(b)
	b = append(b, taskID...)
	b = binary.BigEndian.AppendUint64(b, offset)
	return binary.BigEndian.AppendUint64(b, length)
}

// decodeDownloadRange decodes the value of a DownloadRange packet.
func decodeDownloadRange(v []byte) (taskID string, offset, length uint64, err error) {
	if len(v) != downloadRangeSize {
		return "", 0, 0, fmt.Errorf("%w: DownloadRange value is %d bytes, want %d", ErrProtocol, len(v), downloadRangeSize)
	}
	if !utf8.Valid(v[:TaskIDSize]) {
		return "", 0, 0, fmt.Errorf("%w: DownloadRange task id is not UTF-8", ErrProtocol)
	}
	offset = binary.BigEndian.Uint64(v[TaskIDSize:])
	length = binary.BigEndian.Uint64(v[TaskIDSize+8:])
	if length == 0 || length > MaxRangeLength || offset > math.MaxInt64-length {
		return "", 0, 0, fmt.Errorf("%w: DownloadRange of %d bytes at %d", ErrProtocol, length, offset)
	}
	return string(v[:TaskIDSize]), offset, length, nil
}

// metadataSize is the encoded size of p's metadata (without the metadata length field).
func metadataSize(p *Piece) int {
	return fixedMetadataSize + len(p.Digest) + len(p.ParentID)
}

// checkPiece reports whether p's metadata can be sent.
func checkPiece(p *Piece) error {
	if n := metadataSize(p); n > MaxMetadataSize {
		return fmt.Errorf("vortex: piece %d metadata is %d bytes, more than %d", p.Number, n, MaxMetadataSize)
	}
	if !utf8.ValidString(p.Digest) || !utf8.ValidString(p.ParentID) {
		return fmt.Errorf("vortex: piece %d digest or parent id is not UTF-8", p.Number)
	}
	if t := p.CreatedAt.Unix(); t < minCreatedAt || t > maxCreatedAt {
		return fmt.Errorf("vortex: piece %d created at %s is out of range", p.Number, p.CreatedAt)
	}
	return nil
}

// appendPieceContentValue appends the value of a PieceContent packet (metadata length and
// metadata, src/tlv/piece_content.rs From<PieceMetadata>); p must pass checkPiece.
func appendPieceContentValue(b []byte, p *Piece) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(metadataSize(p)))
	b = binary.BigEndian.AppendUint32(b, p.Number)
	b = binary.BigEndian.AppendUint64(b, p.Offset)
	b = binary.BigEndian.AppendUint64(b, p.Length)
	b = binary.BigEndian.AppendUint32(b, uint32(len(p.Digest)))
	b = append(b, p.Digest...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(p.ParentID)))
	b = append(b, p.ParentID...)
	b = append(b, p.TrafficType)
	cost := uint64(0)
	if p.Cost > 0 {
		cost = uint64(p.Cost / time.Second) // Rust Duration::as_secs truncates too
	}
	b = binary.BigEndian.AppendUint64(b, cost)
	return binary.BigEndian.AppendUint64(b, uint64(p.CreatedAt.Unix()))
}

// The created-at range the Rust decoder accepts: chrono's DateTime<Utc> spans the years -262143
// to 262142 (DateTime::from_timestamp returns None outside).
var (
	minCreatedAt = time.Date(-262143, time.January, 1, 0, 0, 0, 0, time.UTC).Unix()
	maxCreatedAt = time.Date(262142, time.December, 31, 23, 59, 59, 0, time.UTC).Unix()
)

// maxCostSeconds is the largest cost a time.Duration holds in whole seconds.
const maxCostSeconds = math.MaxInt64 / 1_000_000_000

// decodePieceContentValue decodes the value of a PieceContent packet. Like the Rust decoder it
// requires the metadata length to account for the whole value and ignores metadata bytes after
// created at (room for fields a newer peer may add).
func decodePieceContentValue(v []byte) (Piece, error) {
	if len(v) < metadataLengthSize {
		return Piece{}, fmt.Errorf("%w: PieceContent value is %d bytes, shorter than its metadata length", ErrProtocol, len(v))
	}
	n := binary.BigEndian.Uint32(v)
	if uint64(n) != uint64(len(v)-metadataLengthSize) {
		return Piece{}, fmt.Errorf("%w: PieceContent metadata length %d, but %d bytes follow", ErrProtocol, n, len(v)-metadataLengthSize)
	}
	return decodePieceMetadata(v[metadataLengthSize:])
}

// decodePieceMetadata decodes PieceContent metadata (src/tlv/piece_content.rs
// TryFrom<(Bytes, u32)> for PieceMetadata).
func decodePieceMetadata(m []byte) (Piece, error) {
	var p Piece
	r := reader{b: m}
	p.Number = r.u32()
	p.Offset = r.u64()
	p.Length = r.u64()
	p.Digest = r.str("digest")
	p.ParentID = r.str("parent id")
	p.TrafficType = r.u8()
	cost := r.u64()
	created := int64(r.u64())
	if r.err != nil {
		return Piece{}, fmt.Errorf("%w: PieceContent metadata: %w", ErrProtocol, r.err)
	}
	// A cost beyond what time.Duration holds saturates (at whole seconds, so it re-encodes as is).
	p.Cost = time.Duration(min(cost, uint64(maxCostSeconds))) * time.Second
	if created < minCreatedAt || created > maxCreatedAt {
		return Piece{}, fmt.Errorf("%w: PieceContent created at %d is not a valid timestamp", ErrProtocol, created)
	}
	p.CreatedAt = time.Unix(created, 0).UTC()
	return p, nil
}

// appendError appends a whole Error packet; msg is made valid UTF-8 and cut to fit MaxErrorSize.
func appendError(b []byte, id uint8, code Code, msg string) []byte {
	msg = strings.ToValidUTF8(msg, "\uFFFD")
	if len(msg) > MaxErrorSize-errorCodeSize {
		cut := MaxErrorSize - errorCodeSize
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut]
	}
	b = header{id: id, tag: TagError, length: uint32(errorCodeSize + len(msg))}.append(b)
	b = append(b, byte(code))
	return append(b, msg...)
}

// decodeError decodes the value of an Error packet (src/tlv/error.rs TryFrom<Bytes>).
func decodeError(v []byte) (*RemoteError, error) {
	if len(v) < errorCodeSize {
		return nil, fmt.Errorf("%w: Error value is empty", ErrProtocol)
	}
	if !utf8.Valid(v[errorCodeSize:]) {
		return nil, fmt.Errorf("%w: Error message is not UTF-8", ErrProtocol)
	}
	return &RemoteError{Code: Code(v[0]), Message: string(v[errorCodeSize:])}, nil
}

// reader walks a byte slice; the first short read sets err and later reads return zeros.
type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) take(n int, what string) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b)-r.off {
		r.err = fmt.Errorf("%s needs %d bytes at offset %d, %d left", what, n, r.off, len(r.b)-r.off)
		return nil
	}
	s := r.b[r.off : r.off+n]
	r.off += n
	return s
}

func (r *reader) u8() uint8 {
	if s := r.take(1, "field"); s != nil {
		return s[0]
	}
	return 0
}

func (r *reader) u32() uint32 {
	if s := r.take(4, "field"); s != nil {
		return binary.BigEndian.Uint32(s)
	}
	return 0
}

func (r *reader) u64() uint64 {
	if s := r.take(8, "field"); s != nil {
		return binary.BigEndian.Uint64(s)
	}
	return 0
}

// str reads a u32 length and that many bytes of UTF-8.
func (r *reader) str(what string) string {
	n := r.u32()
	if r.err != nil {
		return ""
	}
	if uint64(n) > uint64(len(r.b)-r.off) {
		r.err = fmt.Errorf("%s length %d exceeds the %d bytes left", what, n, len(r.b)-r.off)
		return ""
	}
	s := r.take(int(n), what)
	if !utf8.Valid(s) {
		r.err = fmt.Errorf("%s is not UTF-8", what)
		return ""
	}
	return string(s)
}
