// Package vortex speaks Dragonfly's Vortex protocol over TCP: the piece transfer that replaced the
// DownloadPiece gRPC (d7y.io/api v2.2.10) between peers. A Server serves pieces this peer holds; a
// Client downloads pieces from other peers, Rust dfdaemons or ours.
//
// The wire format comes from github.com/dragonflyoss/vortex-protocol (docs/README.md, src/lib.rs,
// src/tlv/*.rs); how the Rust dfdaemon uses it comes from github.com/dragonflyoss/client
// (dragonfly-client-storage/src/server/tcp.rs and client/tcp.rs). Every packet is
//
//	packet id u8 | tag u8 | length u32 big-endian | value (length bytes)
//
// The packet id is random and never echoed: a connection carries one request and its response at a
// time. The requests and responses used here:
//
//   - DownloadPiece (tag 0): task id (exactly 64 bytes of UTF-8, the hex sha256 task id) | piece
//     number u32.
//   - PieceContent (tag 1): metadata length u32 | metadata, where metadata is number u32 | offset
//     u64 | length u64 | digest length u32 | digest | parent id length u32 | parent id | traffic
//     type u8 | cost u64 (whole seconds) | created at i64 (Unix seconds). The header length covers
//     only these bytes; the piece's raw bytes (metadata length field "length" of them) follow the
//     value on the stream, outside the TLV.
//   - Error (tag 255): code u8 (0 unknown, 1 invalid argument, 2 not found, 3 internal) | UTF-8
//     message.
//   - Close (tag 254): empty; the receiver closes the connection.
//   - DownloadRange (tag 128) is ours, not the protocol's: task id (64 bytes) | offset u64 | length
//     u64 asks a peer of ours for bytes of a task it holds verified, whole pieces or not (a
//     container start reads a few chunks of many pieces). The answer is a PieceContent with number
//     0 and the range's offset and length, or an Error; a Rust dfdaemon answers with an Error (or
//     closes), and callers then use whole pieces. At most MaxRangeLength (4 MiB).
//
// All integers are big-endian. The Rust server answers one request per connection and then closes
// it; the Rust client opens a connection per piece and reads exactly the piece length. Our Server
// keeps a connection open for further requests until it idles out, and our Client pools idle
// connections, retrying once on a fresh connection when a reused one turns out to be closed (and
// then stops pooling for that address, which is what a Rust server looks like).
//
// The Server streams each piece from the Handler's reader through a 64 KiB buffer under a write
// deadline per chunk, caps its connections (extra ones are closed on accept) and the pieces it
// sends at once, paces bytes with an optional shared rate limiter, and answers failures with fixed
// messages (MsgNotFound, MsgInvalid, MsgInternal, MsgUnavailable); details are logged locally.
//
// Neither side trusts the other: lengths are capped before anything is allocated (MaxMetadataSize,
// MaxErrorSize, ClientOptions.MaxPieceLength, 64 MiB by default), every read and write has a
// progress deadline, and the Client checks the piece number, length and "crc32:<decimal>" digest of
// what it received before returning it.
package vortex
