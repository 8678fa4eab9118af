package schedclient

import (
	"slices"
	"testing"
)

// The SipHash-2-4 vectors are the paper's (key 00..0f, message 00..n-1), confirmed with Rust's
// std::hash::SipHasher::new_with_keys.
func TestSipHash24Vectors(t *testing.T) {
	k0, k1 := uint64(0x0706050403020100), uint64(0x0f0e0d0c0b0a0908)
	for _, tc := range []struct {
		n    int
		want uint64
	}{
		{0, 0x726fdb47dd0e0e31}, {1, 0x74f839c593dc67fd}, {7, 0xab0200f58b01d137}, {8, 0x93f5f5799a932462},
		{15, 0xa129ca6149be45e5}, {16, 0x3f2acc7f57c29bdb}, {63, 0x958a324ceb064572},
	} {
		msg := make([]byte, tc.n)
		for i := range msg {
			msg[i] = byte(i)
		}
		if got := sipHash24(k0, k1, msg); got != tc.want {
			t.Errorf("siphash of %d bytes: %016x, want %016x", tc.n, got, tc.want)
		}
	}
}

// Points on the ring, from a Rust program hashing SocketAddr and String with
// std::hash::SipHasher::new() (keys 0, 0), the same algorithm as siphasher's SipHasher::new().
func TestRingPointsAreRusts(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
		key  bool
	}{
		{in: "127.0.0.1:8002", want: 0x2c30ce45aaaf7546},
		{in: "10.0.0.1:8002", want: 0x9948a09af7ec8dee},
		{in: "10.0.0.2:8002", want: 0x3c5a35daa4177512},
		{in: "10.0.0.3:8002", want: 0x3fb2e2c7ee4f0057},
		{in: "[::1]:8002", want: 0x3f52c1d091552b23},
		{in: "abcde", want: 0xf4cdb0a996a23a5e, key: true},
		{in: "01234", want: 0x6ac4ce6639948f89, key: true},
		{in: "abcdef0123", want: 0xf4cdb0a996a23a5e, key: true}, // only the first 5 characters count
	} {
		got := ringPoint(tc.in)
		if tc.key {
			got = keyPoint(tc.in)
		}
		if got != tc.want {
			t.Errorf("point of %q: %016x, want %016x", tc.in, got, tc.want)
		}
	}
}

// The expected orders were printed by scheduler-client/testdata/ringref/ref.rs, which runs the
// real crates the Rust dfdaemon locks (hashring 0.3.6 and siphasher 0.3.11, compiled from their
// release sources with rustc) on the VNode type of dragonfly-client/src/grpc/scheduler.rs:
// HashRing::get for the pick and get_with_replicas for the nodes after it. The order after the
// pick is where a task goes when its scheduler drops out of the Rust peer's available list.
func TestRingOrderIsRustPeers(t *testing.T) {
	three := []string{"10.0.0.1:8002", "10.0.0.2:8002", "10.0.0.3:8002"}
	two := []string{"10.0.0.1:8002", "10.0.0.3:8002"} // three without 10.0.0.2
	mixed := []string{"127.0.0.1:8002", "[::1]:8002"}
	four := []string{"192.168.1.10:8002", "192.168.1.11:8002", "192.168.1.12:8002", "192.168.1.13:8002"}
	for _, tc := range []struct {
		addrs []string
		task  string
		want  []string
	}{
		{three, "a5b9e1c2d3", []string{"10.0.0.2:8002", "10.0.0.3:8002", "10.0.0.1:8002"}},
		{three, "9c8d7e6f5a", []string{"10.0.0.1:8002", "10.0.0.2:8002", "10.0.0.3:8002"}},
		{three, "b1c2d3e4f5", []string{"10.0.0.1:8002", "10.0.0.2:8002", "10.0.0.3:8002"}},
		{three, "1234567890", []string{"10.0.0.1:8002", "10.0.0.2:8002", "10.0.0.3:8002"}},
		{three, "deadbeef00", []string{"10.0.0.2:8002", "10.0.0.3:8002", "10.0.0.1:8002"}},
		// 10.0.0.2 gone: its tasks move to the next node clockwise, the others stay.
		{two, "a5b9e1c2d3", []string{"10.0.0.3:8002", "10.0.0.1:8002"}},
		{two, "9c8d7e6f5a", []string{"10.0.0.1:8002", "10.0.0.3:8002"}},
		{two, "deadbeef00", []string{"10.0.0.3:8002", "10.0.0.1:8002"}},
		{mixed, "0000000000", []string{"[::1]:8002", "127.0.0.1:8002"}},
		{mixed, "7777766666", []string{"[::1]:8002", "127.0.0.1:8002"}},
		{mixed, "a5b9e1c2d3", []string{"127.0.0.1:8002", "[::1]:8002"}},
		{four, "a5b9e1c2d3", []string{"192.168.1.11:8002", "192.168.1.13:8002", "192.168.1.10:8002", "192.168.1.12:8002"}},
		{four, "b1c2d3e4f5", []string{"192.168.1.13:8002", "192.168.1.10:8002", "192.168.1.12:8002", "192.168.1.11:8002"}},
		{four, "4f1e0d3c2b", []string{"192.168.1.13:8002", "192.168.1.10:8002", "192.168.1.12:8002", "192.168.1.11:8002"}},
	} {
		r := newRing(tc.addrs)
		var got []string
		for _, i := range r.order(tc.task) {
			got = append(got, tc.addrs[i])
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%v, task %s: order %v, want %v", tc.addrs, tc.task, got, tc.want)
		}
		// The configured order does not matter.
		rev := slices.Clone(tc.addrs)
		slices.Reverse(rev)
		rr := newRing(rev)
		if first := rev[rr.order(tc.task)[0]]; first != tc.want[0] {
			t.Errorf("%v reversed, task %s: pick %s, want %s", tc.addrs, tc.task, first, tc.want[0])
		}
	}
}

func TestRingEdgeCases(t *testing.T) {
	if got := newRing(nil).order("abcdef"); got != nil {
		t.Errorf("empty ring: %v", got)
	}
	// A task id shorter than the 5-character key hashes whole.
	if got := newRing([]string{"10.0.0.1:8002", "10.0.0.2:8002"}).order("ab"); len(got) != 2 {
		t.Errorf("short task id: order %v", got)
	}
	// A host name is placed deterministically.
	if ringPoint("scheduler.example:8002") != ringPoint("scheduler.example:8002") {
		t.Error("host name point not deterministic")
	}
}
