package vortex

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

var updateSeeds = flag.Bool("update-seeds", false, "rewrite the seed corpus in testdata/fuzz")

// streamConn is a net.Conn over a fixed input stream whose output goes to a buffer; deadlines are
// ignored. It lets the fuzzers drive the client's and the server's stream handling.
type streamConn struct {
	r   io.Reader
	out bytes.Buffer
}

func (c *streamConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *streamConn) Write(p []byte) (int, error)      { return c.out.Write(p) }
func (c *streamConn) Close() error                     { return nil }
func (c *streamConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *streamConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *streamConn) SetDeadline(time.Time) error      { return nil }
func (c *streamConn) SetReadDeadline(time.Time) error  { return nil }
func (c *streamConn) SetWriteDeadline(time.Time) error { return nil }

func newStreamConn(b []byte) *streamConn { return &streamConn{r: bytes.NewReader(b)} }

func pieceContentPacket(p Piece, content []byte) []byte { return appendPieceContent(nil, p, content) }

// appendPieceContent appends a whole PieceContent response: header, value, content.
func appendPieceContent(b []byte, p Piece, content []byte) []byte {
	b = header{id: 9, tag: TagPieceContent, length: uint32(metadataLengthSize + metadataSize(&p))}.append(b)
	b = appendPieceContentValue(b, &p)
	return append(b, content...)
}

// seedCorpus is the seed inputs per fuzz target (also written to testdata/fuzz by -update-seeds).
func seedCorpus() map[string][][]byte {
	content := []byte("hello vortex")
	p := Piece{Number: 3, Offset: 3 << 22, Length: uint64(len(content)), Digest: CRC32Digest(content),
		ParentID: "peer-a", TrafficType: TrafficTypeRemotePeer, Cost: time.Second, CreatedAt: time.Unix(1693152000, 0)}
	value := func(pkt []byte) []byte { return pkt[HeaderSize:] }
	pc := pieceContentPacket(p, nil)
	req := appendDownloadPiece(nil, 1, goldenTaskID, 3)
	rng := appendDownloadRange(nil, 1, goldenTaskID, 0, uint64(len(content)))
	return map[string][][]byte{
		"FuzzDecodeDownloadPiece": {value(req), make([]byte, downloadPieceSize)},
		"FuzzDecodeDownloadRange": {value(rng), value(appendDownloadRange(nil, 1, goldenTaskID, 1<<40, MaxRangeLength)), make([]byte, downloadRangeSize)},
		"FuzzDecodePieceContent":  {value(pc), value(pieceContentPacket(Piece{}, nil))},
		"FuzzDecodeError":         {value(appendError(nil, 0, CodeNotFound, "piece gone")), {3}},
		"FuzzClientResponse": {
			pieceContentPacket(p, content),
			appendError(nil, 0, CodeNotFound, "piece gone"),
			header{tag: TagClose}.append(nil),
			pc[:HeaderSize+10],
		},
		"FuzzServerRequest": {
			req,
			append(append([]byte{}, req...), req...),
			header{tag: TagClose}.append(nil),
			header{tag: TagDownloadCachePiece, length: downloadPieceSize}.append(nil),
			rng,
			append(append([]byte{}, rng...), req...),
			appendDownloadRange(nil, 1, goldenTaskID, 5, 1),
		},
	}
}

func addSeeds(f *testing.F, target string) {
	for _, s := range seedCorpus()[target] {
		f.Add(s)
	}
}

func TestWriteSeedCorpus(t *testing.T) {
	if !*updateSeeds {
		t.Skip("run with -update-seeds to rewrite testdata/fuzz")
	}
	for target, seeds := range seedCorpus() {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, s := range seeds {
			body := "go test fuzz v1\n[]byte(" + strconv.Quote(string(s)) + ")\n"
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%d", i)), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func FuzzDecodeDownloadPiece(f *testing.F) {
	addSeeds(f, "FuzzDecodeDownloadPiece")
	f.Fuzz(func(t *testing.T, v []byte) {
		taskID, number, err := decodeDownloadPiece(v)
		if err != nil {
			return
		}
		if got := appendDownloadPiece(nil, 0, taskID, number)[HeaderSize:]; !bytes.Equal(got, v) {
			t.Fatalf("re-encoded %x, decoded from %x", got, v)
		}
	})
}

func FuzzDecodeDownloadRange(f *testing.F) {
	addSeeds(f, "FuzzDecodeDownloadRange")
	f.Fuzz(func(t *testing.T, v []byte) {
		taskID, off, n, err := decodeDownloadRange(v)
		if err != nil {
			return
		}
		if n == 0 || n > MaxRangeLength || off+n < off {
			t.Fatalf("decoded a range of %d bytes at %d", n, off)
		}
		if got := appendDownloadRange(nil, 0, taskID, off, n)[HeaderSize:]; !bytes.Equal(got, v) {
			t.Fatalf("re-encoded %x, decoded from %x", got, v)
		}
	})
}

func FuzzDecodePieceContent(f *testing.F) {
	addSeeds(f, "FuzzDecodePieceContent")
	f.Fuzz(func(t *testing.T, v []byte) {
		p, err := decodePieceContentValue(v)
		if err != nil {
			return
		}
		if err := checkPiece(&p); err != nil {
			return // decodes, but too big for us to send: fine
		}
		again, err := decodePieceContentValue(appendPieceContentValue(nil, &p))
		if err != nil || again != p {
			t.Fatalf("round trip: %+v, %v; want %+v", again, err, p)
		}
	})
}

func FuzzDecodeError(f *testing.F) {
	addSeeds(f, "FuzzDecodeError")
	f.Fuzz(func(t *testing.T, v []byte) {
		rerr, err := decodeError(v)
		if err != nil {
			return
		}
		if got := appendError(nil, 0, rerr.Code, rerr.Message)[HeaderSize:]; len(v) <= MaxErrorSize && !bytes.Equal(got, v) {
			t.Fatalf("re-encoded %x, decoded from %x", got, v)
		}
	})
}

// FuzzClientResponse feeds arbitrary bytes to the client as a peer's response to a request for
// piece 3: it must never panic, allocate past its caps, or accept a piece that fails its checks.
func FuzzClientResponse(f *testing.F) {
	addSeeds(f, "FuzzClientResponse")
	c := NewClient(ClientOptions{MaxPieceLength: 1 << 20})
	req := appendDownloadPiece(nil, 1, goldenTaskID, 3)
	f.Fuzz(func(t *testing.T, stream []byte) {
		cn := &clientConn{nc: newStreamConn(stream)}
		cn.br = bufio.NewReader(cn.nc)
		res := c.exchange(cn, req, 3, nil)
		if res.err != nil {
			return
		}
		if res.piece.Number != 3 || uint64(len(res.data)) != res.piece.Length {
			t.Fatalf("accepted piece %+v with %d bytes", res.piece, len(res.data))
		}
		if res.piece.Digest != "" && res.piece.Digest != CRC32Digest(res.data) {
			t.Fatalf("accepted piece with digest %s for content %s", res.piece.Digest, CRC32Digest(res.data))
		}
	})
}

// FuzzServerRequest feeds arbitrary bytes to a server connection: it must never panic, and what it
// writes back must be a sequence of well-formed responses.
func FuzzServerRequest(f *testing.F) {
	addSeeds(f, "FuzzServerRequest")
	content := []byte("hello vortex")
	s := NewServerWithOptions(BytesHandler(func(_ context.Context, taskID string, number uint32) (Piece, []byte, error) {
		if number != 3 {
			return Piece{}, nil, fmt.Errorf("piece %d of %s: %w", number, taskID, ErrPieceNotFound)
		}
		return Piece{Number: 3, Length: uint64(len(content))}, content, nil
	}), nil, ServerOptions{Ranges: func(_ context.Context, taskID string, off, n uint64) (Piece, io.ReadCloser, error) {
		if off != 0 || n != uint64(len(content)) {
			return Piece{}, nil, fmt.Errorf("range %d+%d of %s: %w", off, n, taskID, ErrPieceNotFound)
		}
		return Piece{Length: n, Digest: CRC32Digest(content)}, io.NopCloser(bytes.NewReader(content)), nil
	}})
	f.Fuzz(func(t *testing.T, stream []byte) {
		nc := newStreamConn(stream)
		s.serveConn(nc)
		out := nc.out.Bytes()
		for len(out) > 0 {
			if len(out) < HeaderSize {
				t.Fatalf("trailing %d bytes are not a header", len(out))
			}
			h := parseHeader(out)
			v := out[HeaderSize:]
			if uint64(len(v)) < uint64(h.length) {
				t.Fatalf("%s packet says %d bytes, %d left", h.tag, h.length, len(v))
			}
			v, out = v[:h.length], v[h.length:]
			switch h.tag {
			case TagPieceContent:
				p, err := decodePieceContentValue(v)
				if err != nil || p.Length != uint64(len(content)) || uint64(len(out)) < p.Length {
					t.Fatalf("bad PieceContent %+v: %v", p, err)
				}
				out = out[p.Length:]
			case TagError:
				if _, err := decodeError(v); err != nil {
					t.Fatalf("bad Error packet: %v", err)
				}
			default:
				t.Fatalf("server sent a %s packet", h.tag)
			}
		}
	})
}
