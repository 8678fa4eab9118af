// Reference for scheduler-client/ring_test.go. Built with rustc against the real crates the Rust
// dfdaemon locks (hashring 0.3.6, siphasher 0.3.11), using the types of
// dragonfly-client/src/grpc/scheduler.rs: HashRing<VNode { addr: SocketAddr }> and the key
// &task_id[0..5].to_string().
use hashring::HashRing;
use std::net::SocketAddr;

#[derive(Debug, Copy, Clone, Hash, PartialEq)]
struct VNode { addr: SocketAddr }

fn main() {
    let sets: [&[&str]; 4] = [
        &["10.0.0.1:8002", "10.0.0.2:8002", "10.0.0.3:8002"],
        &["10.0.0.1:8002", "10.0.0.3:8002"],
        &["127.0.0.1:8002", "[::1]:8002"],
        &["192.168.1.10:8002", "192.168.1.11:8002", "192.168.1.12:8002", "192.168.1.13:8002"],
    ];
    let tasks = ["a5b9e1c2d3", "0000000000", "ffffffffff", "3f4e2a1b00", "9c8d7e6f5a", "b1c2d3e4f5", "e5d4c3b2a1", "7777766666",
        "4f1e0d3c2b", "c0ffee1234", "1234567890", "deadbeef00"];
    for set in sets {
        let mut ring: HashRing<VNode> = HashRing::new();
        for s in set { ring.add(VNode { addr: s.parse().unwrap() }); }
        println!("set {:?}", set);
        for t in tasks {
            let key = t[0..5].to_string();
            let all = ring.get_with_replicas(&key, set.len()).unwrap();
            println!("  {} {} {:?}", t, ring.get(&key).unwrap().addr, all.iter().map(|v| v.addr.to_string()).collect::<Vec<_>>());
        }
    }
}
