//! Four `flotilla server` processes: the first range lives on nodes 1..=3,
//! so node 4 holds no replica. Requests through node 4 are routed to the
//! range's leader anyway; the admin CLI moves a replica onto node 4 and
//! off it again, and node 4 keeps routing afterwards.

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
