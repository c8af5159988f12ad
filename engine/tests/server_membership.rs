//! Four `flotilla server` processes: the first range lives on nodes 1..=3,
//! so node 4 holds no replica. Requests through node 4 are routed to the
//! range's leader anyway; the admin CLI moves a replica onto node 4 and
//! off it again, and node 4 keeps routing afterwards. A forwarded
//! ADDREPLICA may run longer than the forward timeout.

mod server_support;

use std::time::Duration;

use redis::Commands;
use server_support::*;

const DEADLINE: Duration = Duration::from_secs(30);

fn ranges_on(cluster: &TestCluster, id: u64) -> usize {
    admin_json(cluster.node(id), &["ranges"])
        .ok()
        .and_then(|r| r.as_array().map(|a| a.len()))
        .unwrap_or(usize::MAX)
}

#[test]
fn a_node_without_replicas_routes_requests_and_a_replica_moves_onto_it_and_off() {
    let cluster = TestCluster::start(4, |_| String::new());
    wait_until("a leader for the first range", DEADLINE, || {
        cluster.leader_of("a").is_some()
    });
    assert_eq!(ranges_on(&cluster, 4), 0, "node 4 holds nothing");

    // Through node 4, which holds no replica: routed, not `range not found`.
    let mut four = cluster.node(4).redis();
    let _: () = four.set("via-4", "v1").unwrap();
    let got: Option<String> = four.get("via-4").unwrap();
    assert_eq!(got.as_deref(), Some("v1"));

    // Add a replica on node 4 (asked through node 4 itself).
    let out = admin(cluster.node(4), &["add-replica", "1", "4"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("node 4 to hold range 1", DEADLINE, || {
        ranges_on(&cluster, 4) == 1
    });
    let ranges = admin_json(cluster.node(4), &["ranges"]).unwrap();
    assert_eq!(ranges[0]["replicas"].as_array().unwrap().len(), 4);
    // Its copy has the data (a stale local read through the test hook is
    // not enabled here; a linearizable read through node 4 suffices).
    let got: Option<String> = four.get("via-4").unwrap();
    assert_eq!(got.as_deref(), Some("v1"));

    // And remove it again: 4 voters -> 3 is allowed.
    let out = admin(cluster.node(1), &["remove-replica", "1", "4"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("node 4 to destroy its replica", DEADLINE, || {
        ranges_on(&cluster, 4) == 0
    });
    let _: () = four.set("via-4", "v2").unwrap();
    let got: Option<String> = four.get("via-4").unwrap();
    assert_eq!(got.as_deref(), Some("v2"));
    // Below the replication factor now: refused, by name.
    let out = admin(cluster.node(4), &["remove-replica", "1", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("replication_factor") || stderr.contains("transfer leadership"),
        "{stderr}"
    );
}

/// Adding a replica through a node that does not lead the range forwards
/// the command to the leader, which answers once the new replica caught
/// up. `forward_timeout_ms` bounds retries, not that call: here the
/// catch-up (16 MiB of incompressible values, sent at the default
/// 32 MiB/s snapshot cap) outlasts a 100 ms forward timeout, and the
/// command must still succeed rather than answer TIMEOUT.
#[test]
fn a_forwarded_add_replica_may_outlast_the_forward_timeout() {
    let cluster = TestCluster::start(4, |_| "forward_timeout_ms = 100".to_string());
    wait_until("a leader for the first range", DEADLINE, || {
        cluster.leader_of("a").is_some()
    });
    let leader = cluster.leader_of("a").unwrap();
    assert_ne!(leader, 4, "node 4 holds no replica yet");
    let mut conn = cluster.node(leader).redis();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..64 {
        let value: Vec<u8> = (0..(256 << 10) / 8)
            .flat_map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed.to_le_bytes()
            })
            .collect();
        let _: () = conn.set(format!("big{i:02}"), value).unwrap();
    }
    let started = std::time::Instant::now();
    let out = admin(cluster.node(4), &["add-replica", "1", "4"]);
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Otherwise this test would prove nothing about the timeout.
    assert!(
        took > Duration::from_millis(100),
        "the catch-up took only {took:?}"
    );
    assert_eq!(ranges_on(&cluster, 4), 1, "node 4 holds range 1");
}
