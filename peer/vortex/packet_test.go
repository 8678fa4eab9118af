package vortex

import (
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"
)

// unhex decodes hex written with spaces and | between fields for reading.
func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.NewReplacer(" ", "", "|", "", "\n", "", "\t", "").Replace(s))
	if err != nil {
		t.Fatalf("bad hex in test: %v", err)
	}
	return b
}

// goldenTaskID is 64 bytes of ASCII; its hex is "30313233343536373839616263646566" four times.
var goldenTaskID = strings.Repeat("0123456789abcdef", 4)

var goldenTaskIDHex = strings.Repeat("30313233343536373839616263646566", 4)

// The golden packets are written from the layouts in vortex-protocol src/lib.rs (header) and
// src/tlv/{download_piece,piece_content,error}.rs, field by field.
func TestGoldenPackets(t *testing.T) {
	created := time.Unix(1693152000, 0).UTC() // 0x64eb7300

	t.Run("DownloadPiece", func(t *testing.T) {
		wire := unhex(t, "12 | 00 | 00000044 |"+goldenTaskIDHex+"| 0000002a")
		h := parseHeader(wire)
		if h != (header{id: 0x12, tag: TagDownloadPiece, length: 68}) {
			t.Fatalf("header = %+v", h)
		}
		taskID, number, err := decodeDownloadPiece(wire[HeaderSize:])
		if err != nil || taskID != goldenTaskID || number != 42 {
			t.Fatalf("decode = %q, %d, %v; want %q, 42", taskID, number, err, goldenTaskID)
		}
		if got := appendDownloadPiece(nil, 0x12, goldenTaskID, 42); string(got) != string(wire) {
			t.Fatalf("encode =\n%x\nwant\n%x", got, wire)
		}
	})

	t.Run("PieceContent", func(t *testing.T) {
		wire := unhex(t, `
			7f | 01 | 00000040
			0000003c
			00000007 | 0000000001c00000 | 0000000000400000
			00000009 | 63726333323a313233
			00000006 | 706565722d61
			01 | 0000000000000003 | 0000000064eb7300`)
		want := Piece{Number: 7, Offset: 7 << 22, Length: 4 << 20, Digest: "crc32:123", ParentID: "peer-a",
			TrafficType: TrafficTypeRemotePeer, Cost: 3 * time.Second, CreatedAt: created}
		h := parseHeader(wire)
		if h != (header{id: 0x7f, tag: TagPieceContent, length: 64}) {
			t.Fatalf("header = %+v", h)
		}
		got, err := decodePieceContentValue(wire[HeaderSize:])
		if err != nil || got != want {
			t.Fatalf("decode = %+v, %v\nwant %+v", got, err, want)
		}
		enc := header{id: 0x7f, tag: TagPieceContent, length: uint32(metadataLengthSize + metadataSize(&want))}.append(nil)
		enc = appendPieceContentValue(enc, &want)
		if string(enc) != string(wire) {
			t.Fatalf("encode =\n%x\nwant\n%x", enc, wire)
		}
	})

	t.Run("Error", func(t *testing.T) {
		wire := unhex(t, "01 | ff | 0000000b | 02 | 706965636520676f6e65") // "piece gone"
		h := parseHeader(wire)
		if h != (header{id: 1, tag: TagError, length: 11}) {
			t.Fatalf("header = %+v", h)
		}
		rerr, err := decodeError(wire[HeaderSize:])
		if err != nil || *rerr != (RemoteError{Code: CodeNotFound, Message: "piece gone"}) {
			t.Fatalf("decode = %+v, %v", rerr, err)
		}
		if !errors.Is(rerr, ErrPieceNotFound) || !errors.Is(rerr, ErrRemote) {
			t.Fatalf("a NotFound error must match ErrPieceNotFound and ErrRemote")
		}
		if got := appendError(nil, 1, CodeNotFound, "piece gone"); string(got) != string(wire) {
			t.Fatalf("encode =\n%x\nwant\n%x", got, wire)
		}
	})

	t.Run("Close", func(t *testing.T) {
		wire := unhex(t, "07 | fe | 00000000")
		if h := parseHeader(wire); h != (header{id: 7, tag: TagClose}) {
			t.Fatalf("header = %+v", h)
		}
		if got := (header{id: 7, tag: TagClose}).append(nil); string(got) != string(wire) {
			t.Fatalf("encode = %x", got)
		}
	})
}

func TestCRC32Digest(t *testing.T) {
	for _, tc := range []struct {
		in, want string
	}{
		{"", "crc32:0"},
		{"hello vortex", "crc32:3513858833"}, // zlib.crc32, the same IEEE polynomial as crc32fast
		{"123456789", "crc32:3421780262"},    // the CRC-32 check value 0xcbf43926
	} {
		if got := CRC32Digest([]byte(tc.in)); got != tc.want {
			t.Errorf("CRC32Digest(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	meta := func(s string) []byte { return unhex(t, s) }
	for _, tc := range []struct {
		name   string
		decode func() error
		want   string
	}{
		{"DownloadPiece too short", func() error {
			_, _, err := decodeDownloadPiece(make([]byte, 67))
			return err
		}, "67 bytes, want 68"},
		{"DownloadPiece too long", func() error {
			_, _, err := decodeDownloadPiece(make([]byte, 69))
			return err
		}, "69 bytes, want 68"},
		{"DownloadPiece task id not UTF-8", func() error {
			v := append([]byte(strings.Repeat("\xff", 64)), 0, 0, 0, 1)
			_, _, err := decodeDownloadPiece(v)
			return err
		}, "not UTF-8"},
		{"PieceContent empty", func() error {
			_, err := decodePieceContentValue(nil)
			return err
		}, "shorter than its metadata length"},
		{"PieceContent metadata length beyond value", func() error {
			_, err := decodePieceContentValue(meta("ffffffff 00"))
			return err
		}, "metadata length 4294967295, but 1 bytes follow"},
		{"PieceContent metadata truncated in length field", func() error {
			_, err := decodePieceContentValue(meta("0000000c 00000007 0000000001c00000"))
			return err
		}, "needs 8 bytes"},
		{"PieceContent digest length beyond metadata", func() error {
			_, err := decodePieceContentValue(meta("00000018 00000007 0000000000000000 0000000000000000 7fffffff"))
			return err
		}, "digest length 2147483647 exceeds the 0 bytes left"},
		{"PieceContent digest not UTF-8", func() error {
			_, err := decodePieceContentValue(meta("00000019 00000007 0000000000000000 0000000000000000 00000001 ff"))
			return err
		}, "digest is not UTF-8"},
		{"PieceContent missing created at", func() error {
			_, err := decodePieceContentValue(meta("00000025 00000007 0000000000000000 0000000000000000 00000000 00000000 01 0000000000000003"))
			return err
		}, "needs 8 bytes"},
		{"PieceContent created at out of chrono range", func() error {
			_, err := decodePieceContentValue(meta("0000002d 00000007 0000000000000000 0000000000000000 00000000 00000000 01 0000000000000003 7fffffffffffffff"))
			return err
		}, "not a valid timestamp"},
		{"Error empty", func() error {
			_, err := decodeError(nil)
			return err
		}, "Error value is empty"},
		{"Error message not UTF-8", func() error {
			_, err := decodeError([]byte{2, 0xff})
			return err
		}, "not UTF-8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.decode()
			if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrProtocol mentioning %q", err, tc.want)
			}
		})
	}
}

func TestDecodePieceMetadataEdges(t *testing.T) {
	for _, tc := range []struct {
		name string
		wire string
		want Piece
	}{
		{
			// Extra metadata bytes after created at are ignored, as the Rust decoder does.
			name: "trailing metadata bytes",
			wire: "0000002f 00000001 0000000000000000 0000000000000010 00000000 00000000 00 0000000000000000 0000000000000000 abcd",
			want: Piece{Number: 1, Length: 16, CreatedAt: time.Unix(0, 0).UTC()},
		},
		{
			// A cost beyond time.Duration saturates instead of wrapping.
			name: "huge cost",
			wire: "0000002d 00000001 0000000000000000 0000000000000010 00000000 00000000 00 ffffffffffffffff 0000000000000000",
			want: Piece{Number: 1, Length: 16, Cost: maxCostSeconds * time.Second, CreatedAt: time.Unix(0, 0).UTC()},
		},
		{
			name: "max numbers, empty digest and parent",
			wire: "0000002d ffffffff ffffffffffffffff ffffffffffffffff 00000000 00000000 ff 0000000000000000 fffffffffffffffe",
			want: Piece{Number: 1<<32 - 1, Offset: 1<<64 - 1, Length: 1<<64 - 1, TrafficType: 255, CreatedAt: time.Unix(-2, 0).UTC()},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodePieceContentValue(unhex(t, tc.wire))
			if err != nil || got != tc.want {
				t.Fatalf("decode = %+v, %v\nwant %+v", got, err, tc.want)
			}
		})
	}
}

func TestAppendErrorBoundsMessage(t *testing.T) {
	for _, tc := range []struct {
		name, msg string
		wantLen   int
	}{
		{"short", "boom", 1 + 4},
		{"invalid UTF-8 is replaced", "a\xffb", 1 + len("a\uFFFDb")},
		{"long is cut on a rune boundary", strings.Repeat("é", MaxErrorSize), MaxErrorSize - 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := appendError(nil, 0, CodeInternal, tc.msg)
			h := parseHeader(b)
			if int(h.length) != tc.wantLen || len(b) != HeaderSize+tc.wantLen {
				t.Fatalf("value length %d (packet %d), want %d", h.length, len(b), tc.wantLen)
			}
			if _, err := decodeError(b[HeaderSize:]); err != nil {
				t.Fatalf("our own Error packet does not decode: %v", err)
			}
		})
	}
}
