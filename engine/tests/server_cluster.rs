//! Three `flotilla server` processes on loopback, driven through the
//! `redis` client crate, the admin CLI, the metrics endpoint, and
//! `redis-cli` / `redis-benchmark` when installed.

mod server_support;

use std::process::Command;
use std::time::Duration;

use redis::Commands;
use server_support::*;

const DEADLINE: Duration = Duration::from_secs(30);

#[test]
fn three_servers_serve_redis_clients_admin_and_metrics() {
    // Node 3 answers with -MOVED instead of forwarding.
    let mut cluster = TestCluster::start(3, |id| {
        if id == 3 {
            "follower_requests = \"redirect\"".into()
        } else {
            String::new()
        }
    });
    wait_until("a leader for the first range", DEADLINE, || {
        cluster.leader_of("a").is_some()
    });
    let leader = cluster.leader_of("a").unwrap();
    let follower = (1..=2).find(|&id| id != leader).unwrap();

    // Writes and reads through every forwarding node, leader or not.
    for id in [1, 2] {
        let mut conn = cluster.node(id).redis();
        let key = format!("key-from-{id}");
        let _: () = conn.set(&key, format!("value-{id}")).unwrap();
        for other in [1, 2] {
            let mut read = cluster.node(other).redis();
            let got: Option<String> = read.get(&key).unwrap();
            assert_eq!(got.as_deref(), Some(&*format!("value-{id}")));
        }
    }
    let mut conn = cluster.node(follower).redis();
    let _: () = conn.mset(&[("a1", "x"), ("a2", "y")]).unwrap();
    let got: Vec<Option<String>> = conn.mget(&["a1", "a2", "missing"]).unwrap();
    assert_eq!(got, vec![Some("x".into()), Some("y".into()), None]);
    let n: i64 = conn.exists(&["a1", "a2", "missing"]).unwrap();
    assert_eq!(n, 2);
    let n: i64 = conn.del(&["a1", "missing"]).unwrap();
    assert_eq!(n, 1);

    // A follower connection that asked not to forward gets -MOVED with
    // the leader's client address.
    let mut raw = cluster.node(follower).redis();
    let _: () = redis::cmd("FLOTILLA.NOFORWARD").query(&mut raw).unwrap();
    let err = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query::<()>(&mut raw)
        .unwrap_err();
    let text = err.to_string();
    assert!(text.to_uppercase().contains("MOVED"), "{text}");
    assert!(
        text.contains(&cluster.node(leader).resp.to_string()),
        "{text}"
    );
    // Node 3 is configured to redirect: when it does not lead, it says so.
    if leader != 3 {
        let mut three = cluster.node(3).redis();
        let err = three.set::<_, _, ()>("k3", "v").unwrap_err();
        assert!(err.to_string().to_uppercase().contains("MOVED"), "{err}");
    }

    // Admin CLI: split through a follower (forwarded to the leader).
    let split = admin_json(cluster.node(follower), &["split", "m"]).unwrap();
    let right = split["new_range_id"].as_i64().expect("new range id");
    wait_until("every node to see two ranges", DEADLINE, || {
        (1..=3).all(|id| {
            admin_json(cluster.node(id), &["ranges"])
                .map(|r| r.as_array().map(|a| a.len()) == Some(2))
                .unwrap_or(false)
        })
    });
    let ranges = admin_json(cluster.node(1), &["ranges"]).unwrap();
    assert_eq!(ranges[0]["end"], "m");
    assert_eq!(ranges[1]["start"], "m");
    assert_eq!(ranges[1]["id"].as_i64(), Some(right));
    assert_eq!(ranges[0]["replicas"].as_array().unwrap().len(), 3);

    // MSET within one range is atomic; across ranges it is refused whole.
    let err = conn
        .mset::<_, _, ()>(&[("b", "1"), ("z", "2")])
        .unwrap_err();
    assert!(err.to_string().contains("CROSSRANGE"), "{err}");
    let got: Option<String> = conn.get("b").unwrap();
    assert_eq!(got, None, "nothing of a refused MSET is written");
    wait_until("writes on both sides of the split", DEADLINE, || {
        conn.mset::<_, _, ()>(&[("b", "1"), ("c", "2")]).is_ok()
            && conn.set::<_, _, ()>("y", "3").is_ok()
    });
    // An ordered scan across both ranges.
    let rows: Vec<String> = redis::cmd("FLOTILLA.SCAN")
        .arg("b")
        .arg("")
        .query(&mut conn)
        .unwrap();
    let keys: Vec<&String> = rows.iter().step_by(2).collect();
    assert_eq!(keys, ["b", "c", "key-from-1", "key-from-2", "y"]);

    // Merge the two replicated ranges back (JSON output), then split again.
    // The split left both leaderships on one node, which a merge needs.
    let left = ranges[0]["id"].to_string();
    wait_until("the merge of the two ranges", DEADLINE, || {
        admin_json(cluster.node(1), &["merge", &left, &right.to_string()]).is_ok()
    });
    wait_until("every node to see one range", DEADLINE, || {
        (1..=3).all(|id| {
            admin_json(cluster.node(id), &["ranges"])
                .map(|r| r.as_array().map(|a| a.len()) == Some(1))
                .unwrap_or(false)
        })
    });
    let got: Option<String> = conn.get("y").unwrap();
    assert_eq!(
        got.as_deref(),
        Some("3"),
        "the right range's data survives the merge"
    );
    let split = admin_json(cluster.node(follower), &["split", "m"]).unwrap();
    let right = split["new_range_id"].as_i64().expect("new range id");
    wait_until("every node to see two ranges again", DEADLINE, || {
        (1..=3).all(|id| {
            admin_json(cluster.node(id), &["ranges"])
                .map(|r| r.as_array().map(|a| a.len()) == Some(2))
                .unwrap_or(false)
        })
    });
    // Leadership transfer through any node (forwarded to the leader): the
    // call returns once node 2 leads, which node 2 itself reports.
    let out = admin(
        cluster.node(1),
        &["transfer-leader", &right.to_string(), "2"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let on_two = admin_json(cluster.node(2), &["ranges"]).unwrap();
    let role = on_two
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"].as_i64() == Some(right))
        .map(|r| r["role"].clone());
    assert_eq!(role, Some(serde_json::json!("leader")));
    // Membership: node 2 is already a voter (done at once); removing a
    // voter of a 3-replica range is refused (replication factor 3), and so
    // is removing the leader's own replica.
    let out = admin(cluster.node(1), &["add-replica", &right.to_string(), "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = admin(
        cluster.node(1),
        &["remove-replica", &right.to_string(), "1"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("replication_factor"), "{stderr}");
    let out = admin(
        cluster.node(1),
        &["remove-replica", &right.to_string(), "2"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("transfer leadership"), "{stderr}");
    let status = admin_json(cluster.node(leader), &["status"]).unwrap();
    assert_eq!(status["node_id"].as_u64(), Some(leader));
    assert_eq!(status["cluster_id"].as_u64(), Some(7));
    assert!(status["ranges_leading"].as_u64().unwrap() >= 1);
    let table = admin(cluster.node(1), &["ranges"]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("RANGE"));

    // Metrics move with traffic.
    let metrics = cluster.node(follower).metrics.unwrap();
    let sets = |m: &std::collections::HashMap<String, f64>| {
        m.get("flotilla_server_commands_total{command=\"set\"}")
            .copied()
            .unwrap_or(0.0)
    };
    let before = scrape(metrics);
    for i in 0..20 {
        let _: () = conn.set(format!("m{i}"), i).unwrap();
    }
    let after = scrape(metrics);
    assert!(sets(&after) >= sets(&before) + 20.0);
    assert!(after["flotilla_server_forwarded_total"] > 0.0);
    assert!(after["flotilla_node_ranges"] >= 2.0);
    assert!(after
        .keys()
        .any(|k| k.starts_with("flotilla_wal_fsyncs_total")));
    assert!(after
        .keys()
        .any(|k| k.starts_with("flotilla_server_errors_total")));
    // Latency histograms (summaries in the text format) and elections.
    assert!(after["flotilla_raft_apply_seconds_count"] > 0.0);
    assert!(after["flotilla_wal_write_seconds_count"] > 0.0);
    assert!(after["flotilla_node_leader_changes_total"] >= 1.0);
    let all: Vec<_> = (1..=3)
        .map(|id| scrape(cluster.node(id).metrics.unwrap()))
        .collect();
    let sum = |name: &str| {
        all.iter()
            .map(|m| m.get(name).copied().unwrap_or(0.0))
            .sum::<f64>()
    };
    assert!(sum("flotilla_raft_commit_seconds_count") >= 20.0);
    assert!(sum("flotilla_node_elections_won_total") >= 1.0);
    assert!(sum("flotilla_node_elections_total") >= sum("flotilla_node_elections_won_total"));

    // redis-cli and redis-benchmark against a follower.
    if have("redis-cli") && have("redis-benchmark") {
        let port = cluster.node(follower).resp.port().to_string();
        let cli = |args: &[&str]| {
            let out = Command::new("redis-cli")
                .args(["-p", &port])
                .args(args)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        assert_eq!(cli(&["SET", "cli-key", "cli value"]), "OK");
        assert_eq!(cli(&["GET", "cli-key"]), "cli value");
        assert_eq!(cli(&["PING"]), "PONG");
        assert!(cli(&["INFO"]).contains("flotilla_version"));
        let bench = Command::new("redis-benchmark")
            .args(["-p", &port, "-t", "set,get", "-n", "400", "-c", "4", "-q"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&bench.stdout);
        assert!(bench.status.success(), "{text}");
        assert!(text.contains("SET") && text.contains("GET"), "{text}");
        assert_eq!(cli(&["EXISTS", "key:__rand_int__"]), "1");
    } else {
        println!("NOTE: redis-cli / redis-benchmark not installed (make deps): skipped");
    }

    // A merge of ranges led from different nodes (right: node 2, left: moved
    // to node 1): the server moves the right range's leadership itself.
    let out = admin(cluster.node(1), &["transfer-leader", &left, "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = admin(cluster.node(2), &["merge", &left, &right.to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(
        "every node to see one range after the merge",
        DEADLINE,
        || {
            (1..=3).all(|id| {
                admin_json(cluster.node(id), &["ranges"])
                    .map(|r| r.as_array().map(|a| a.len()) == Some(1))
                    .unwrap_or(false)
            })
        },
    );

    // SIGTERM: a graceful exit; the other two keep serving.
    let mut stopped = cluster.nodes[(leader - 1) as usize].take().unwrap();
    assert!(stopped.terminate(DEADLINE), "{}", stopped.stderr());
    assert!(stopped.stderr().contains("engine closed"));
    let survivor = (1..=3).find(|&id| id != leader && id != 3).unwrap_or(3);
    let mut conn = cluster.node(survivor).redis();
    wait_until("writes after the leader stopped", DEADLINE, || {
        conn.set::<_, _, ()>("after-stop", "ok").is_ok()
    });
    let got: Option<String> = conn.get("key-from-1").unwrap();
    assert_eq!(got.as_deref(), Some("value-1"));
}
