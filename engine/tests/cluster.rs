//! Three nodes in one process over the real transport on 127.0.0.1.
//! Waits are bounded polls on observable state (a leader exists, a value is
//! visible), never sleeps that hope something happened.

use std::time::Duration;

use bytes::Bytes;
use flotilla::{Cluster, Error};

mod common;
use common::runtime;

const TICK: Duration = Duration::from_millis(10);

/// Poll `check` until it holds or `deadline` passes.
async fn eventually<F, Fut>(deadline: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + deadline;
    while tokio::time::Instant::now() < end {
        if check().await {
            return true;
        }
        tokio::time::sleep(TICK).await;
    }
    false
}

#[test]
fn three_nodes_replicate_and_survive_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let mut cluster = Cluster::start(3, dir.path(), TICK).unwrap();
        for i in 0..50 {
            cluster
                .put(format!("k{i:02}"), format!("v{i}"))
                .await
                .unwrap();
        }
        // Every node applies every write.
        for id in 1..=3 {
            let caught_up = eventually(Duration::from_secs(10), || async {
                cluster.get_local(id, "k49").await.ok().flatten() == Some(Bytes::from("v49"))
            })
            .await;
            assert!(caught_up, "node {id} did not apply the writes");
        }
        let leader = cluster.leader_of(b"k00").await.expect("a leader");
        // A follower refuses linearizable reads with a hint.
        let follower = (1..=3).find(|&id| id != leader).unwrap();
        match cluster.node(follower).unwrap().get("k00").await {
            Err(Error::NotLeader { leader: hint, .. }) => {
                if let Some(hint) = hint {
                    assert_eq!(hint.node_id, leader);
                }
            }
            other => panic!("follower answered a linearizable read: {other:?}"),
        }

        // Kill the leader's node: the others elect a new leader and every
        // acknowledged write is still there.
        cluster.stop(leader).await.unwrap();
        for i in 0..50 {
            assert_eq!(
                cluster.get(format!("k{i:02}")).await.unwrap(),
                Some(Bytes::from(format!("v{i}")))
            );
        }
        for i in 50..80 {
            cluster
                .put(format!("k{i:02}"), format!("v{i}"))
                .await
                .unwrap();
        }
        let new_leader = cluster.leader_of(b"k00").await.expect("a new leader");
        assert_ne!(new_leader, leader);

        // The old leader comes back and catches up through the log.
        cluster.restart(leader).unwrap();
        let caught_up = eventually(Duration::from_secs(15), || async {
            cluster.get_local(leader, "k79").await.ok().flatten() == Some(Bytes::from("v79"))
        })
        .await;
        assert!(caught_up, "restarted node {leader} did not catch up");
        cluster.close().await.unwrap();
    });
}

#[test]
fn a_follower_behind_compaction_catches_up_by_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let mut cluster =
            Cluster::start_with(3, dir.path(), TICK, |c| c.log_compact_entries = 20).unwrap();
        cluster.put("before", "1").await.unwrap();
        let leader = cluster.leader_of(b"before").await.expect("a leader");
        let lagging = (1..=3).find(|&id| id != leader).unwrap();
        cluster.stop(lagging).await.unwrap();
        // Far more entries than the compaction threshold: the leader's log
        // no longer holds what the stopped follower needs.
        for i in 0..300 {
            cluster
                .put(format!("s{i:03}"), format!("{i}"))
                .await
                .unwrap();
        }
        cluster.restart(lagging).unwrap();
        let caught_up = eventually(Duration::from_secs(20), || async {
            cluster.get_local(lagging, "s299").await.ok().flatten() == Some(Bytes::from("299"))
        })
        .await;
        assert!(caught_up, "node {lagging} did not catch up");
        let stats = cluster.node(lagging).unwrap().stats().await.unwrap();
        assert!(
            stats.snapshots_applied >= 1,
            "caught up without a snapshot: {stats:?}"
        );
        // And keeps following by log afterwards.
        cluster.put("after", "2").await.unwrap();
        let follows = eventually(Duration::from_secs(10), || async {
            cluster.get_local(lagging, "after").await.ok().flatten() == Some(Bytes::from("2"))
        })
        .await;
        assert!(follows);
        for i in [0, 150, 299] {
            assert_eq!(
                cluster
                    .get_local(lagging, format!("s{i:03}"))
                    .await
                    .unwrap(),
                Some(Bytes::from(format!("{i}")))
            );
        }
        cluster.close().await.unwrap();
    });
}

#[test]
fn a_thousand_ranges_on_three_nodes_all_accept_writes() {
    let ranges: u64 = std::env::var("CLUSTER_RANGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let mut cluster = Cluster::start(3, dir.path(), TICK).unwrap();
        cluster.put("r0000", "warm").await.unwrap();
        let leader = cluster.leader_of(b"r0000").await.expect("a leader");
        let mut engine = cluster.node_handle(leader).unwrap();
        for i in 1..ranges {
            let key = format!("r{i:04}");
            // The new range from the previous split elects a leader once a
            // majority applied the split: retry while it has none.
            let mut attempts = 0;
            loop {
                match engine.split(key.clone()).await {
                    Ok(_) => break,
                    Err(Error::NotLeader {
                        leader: Some(hint), ..
                    }) if attempts < 1_000 => {
                        attempts += 1;
                        if let Some(other) = cluster.node_handle(hint.node_id) {
                            engine = other;
                        }
                    }
                    Err(e) if e.is_retryable() && attempts < 1_000 => {
                        attempts += 1;
                        tokio::time::sleep(TICK).await;
                    }
                    Err(e) => panic!("split at {key}: {e}"),
                }
            }
        }
        for id in 1..=3 {
            let all = eventually(Duration::from_secs(30), || async {
                cluster
                    .node(id)
                    .unwrap()
                    .ranges()
                    .await
                    .map(|r| r.len() as u64)
                    .unwrap_or(0)
                    == ranges
            })
            .await;
            assert!(all, "node {id} does not hold all {ranges} ranges");
        }
        for i in 0..ranges {
            cluster
                .put(format!("r{i:04}"), format!("{i}"))
                .await
                .unwrap();
        }
        for i in (0..ranges).step_by(97) {
            assert_eq!(
                cluster.get(format!("r{i:04}")).await.unwrap(),
                Some(Bytes::from(format!("{i}")))
            );
        }
        cluster.close().await.unwrap();
    });
}
