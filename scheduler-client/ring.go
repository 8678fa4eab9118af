package schedclient

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
	"slices"
	"sort"
)

// The scheduler of a task is picked like the Rust dfdaemon picks it, so that a dfnydus peer and a
// Rust peer of the same cluster send a task to the same scheduler (the scheduler only pairs peers
// it holds). Upstream, dragonflyoss/client dragonfly-client/src/grpc/scheduler.rs
// (SchedulerClient::client and update_available_scheduler_addrs) builds a hashring::HashRing (crate
// hashring 0.3.6) of VNode{addr: SocketAddr}, one node per available scheduler (no virtual
// replicas), and looks up &task_id[0..5].to_string():
//
//   - hasher: hashring's DefaultHashBuilder, siphasher 0.3.11 sip::SipHasher::new(), i.e.
//     SipHash-2-4 with keys 0, 0, fed by Rust's derived Hash (std's byte encoding, little-endian);
//   - a node's point is the SipHash of its #[derive(Hash)] SocketAddr: the enum discriminant as an
//     isize (8 bytes: 0 for V4, 1 for V6), the IP octets (Ipv4Addr/Ipv6Addr hash as one u32/u128
//     of their octets in memory order), the port as u16, and for V6 flowinfo and scope_id as u32
//     (both 0 for addresses built from an IP and a port);
//   - a key's point is the SipHash of the String: its bytes followed by 0xff (Hasher::write_str);
//     the key is the first 5 characters of the task id, not the whole id;
//   - lookup: the first node whose point is >= the key's point in the ascending ring (binary
//     search), wrapping to the first node.
//
// The Rust peer has no failover of its own: its dynconfig drops schedulers that fail
// grpc.health.v1 checks and the ring is rebuilt from the rest, so a dead scheduler's tasks land on
// the next node clockwise. order gives that sequence: the pick, then the following distinct nodes.

// ringNode is one scheduler on the ring.
type ringNode struct {
	point uint64
	idx   int // index into the client's schedulers
}

// ring is the consistent-hash ring of the configured schedulers.
type ring struct {
	nodes []ringNode // ascending by point
}

// newRing places schedulers addrs ("ip:port"; see ringPoint for other forms) on the ring.
func newRing(addrs []string) *ring {
	r := &ring{}
	for i, a := range addrs {
		r.nodes = append(r.nodes, ringNode{point: ringPoint(a), idx: i})
	}
	// Stable: equal points (the same address twice) keep their configured order.
	sort.SliceStable(r.nodes, func(a, b int) bool { return r.nodes[a].point < r.nodes[b].point })
	return r
}

// order is the schedulers for taskID: the ring's pick first, then the other distinct schedulers
// clockwise.
func (r *ring) order(taskID string) []int {
	if len(r.nodes) == 0 {
		return nil
	}
	k := keyPoint(taskID)
	start, _ := slices.BinarySearchFunc(r.nodes, k, func(n ringNode, k uint64) int {
		switch {
		case n.point < k:
			return -1
		case n.point > k:
			return 1
		}
		return 0
	})
	out := make([]int, 0, len(r.nodes))
	for i := range r.nodes {
		idx := r.nodes[(start+i)%len(r.nodes)].idx
		if !slices.Contains(out, idx) {
			out = append(out, idx)
		}
	}
	return out
}

// keyPoint is the ring position of a task: SipHash of the Rust String task_id[0..5].
func keyPoint(taskID string) uint64 {
	key := taskID
	if len(key) > 5 {
		key = key[:5]
	}
	b := make([]byte, 0, len(key)+1)
	b = append(b, key...)
	return sipHash24(0, 0, append(b, 0xff))
}

// ringPoint is the ring position of a scheduler address: SipHash of Rust's derived Hash of the
// SocketAddr. An address that is not "ip:port" (a host name) cannot be placed like the Rust peer
// places it, which only ever sees IPs from its dynconfig; it is hashed as a String instead, which
// keeps the ring deterministic across dfnydus peers.
func ringPoint(addr string) uint64 {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		b := append([]byte(addr), 0xff)
		return sipHash24(0, 0, b)
	}
	return sipHash24(0, 0, socketAddrHashBytes(ap))
}

// socketAddrHashBytes is what Rust's #[derive(Hash)] feeds a hasher for a SocketAddr built with
// SocketAddr::new(ip, port) on a little-endian 64-bit machine.
func socketAddrHashBytes(ap netip.AddrPort) []byte {
	ip := ap.Addr().WithZone("")
	var b []byte
	if ip.Is4() {
		b = binary.LittleEndian.AppendUint64(b, 0) // SocketAddr::V4
		o := ip.As4()
		b = append(b, o[:]...)
		b = binary.LittleEndian.AppendUint16(b, ap.Port())
		return b
	}
	b = binary.LittleEndian.AppendUint64(b, 1) // SocketAddr::V6 (an IPv4-mapped address stays V6 in Rust)
	o := ip.As16()
	b = append(b, o[:]...)
	b = binary.LittleEndian.AppendUint16(b, ap.Port())
	b = binary.LittleEndian.AppendUint32(b, 0) // flowinfo
	b = binary.LittleEndian.AppendUint32(b, 0) // scope_id
	return b
}

// sipHash24 is SipHash-2-4 (Aumasson and Bernstein) of msg with key (k0, k1), as
// siphasher::sip::SipHasher::new_with_keys(k0, k1) computes it over the concatenated writes.
func sipHash24(k0, k1 uint64, msg []byte) uint64 {
	v0 := k0 ^ 0x736f6d6570736575
	v1 := k1 ^ 0x646f72616e646f6d
	v2 := k0 ^ 0x6c7967656e657261
	v3 := k1 ^ 0x7465646279746573
	round := func() {
		v0 += v1
		v1 = bits.RotateLeft64(v1, 13)
		v1 ^= v0
		v0 = bits.RotateLeft64(v0, 32)
		v2 += v3
		v3 = bits.RotateLeft64(v3, 16)
		v3 ^= v2
		v0 += v3
		v3 = bits.RotateLeft64(v3, 21)
		v3 ^= v0
		v2 += v1
		v1 = bits.RotateLeft64(v1, 17)
		v1 ^= v2
		v2 = bits.RotateLeft64(v2, 32)
	}
	n := len(msg)
	for len(msg) >= 8 {
		m := binary.LittleEndian.Uint64(msg)
		v3 ^= m
		round()
		round()
		v0 ^= m
		msg = msg[8:]
	}
	last := uint64(n) << 56
	for i, c := range msg {
		last |= uint64(c) << (8 * i)
	}
	v3 ^= last
	round()
	round()
	v0 ^= last
	v2 ^= 0xff
	round()
	round()
	round()
	round()
	return v0 ^ v1 ^ v2 ^ v3
}
