//! Membership and leadership changes on an in-process cluster over the real
//! transport: a replica is moved (added on a fourth node, which is caught up
//! by snapshot and promoted, then removed from one of the first three)
//! while a writer keeps writing and nodes restart; what would lose quorum
//! or replicas is refused; an addition that cannot catch up is rolled back.
//! Waits are bounded polls on observable state, never sleeps that hope.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use flotilla::{Cluster, Consistency, Engine, Error};

const TICK: Duration = Duration::from_millis(10);

mod common;
use common::{eventually, runtime};

/// Node ids holding a replica of range 1 per `node`'s descriptor, with
/// whether each is a voter.
async fn replicas_seen_by(engine: &Engine) -> Vec<(u64, bool)> {
    let ranges = engine.ranges().await.unwrap_or_default();
    let Some(range) = ranges.iter().find(|r| r.descriptor.id == 1) else {
        return Vec::new();
    };
    let mut nodes: Vec<(u64, bool)> = range
        .descriptor
        .replicas
        .iter()
        .map(|r| {
            (
                r.node_id,
                r.role == flotilla_router::range::ReplicaRole::Voter,
            )
        })
        .collect();
    nodes.sort_unstable();
    nodes
}

/// Write through whichever of `nodes` leads; `Ok` only when acknowledged.
async fn put_anywhere(nodes: &[Arc<Engine>], key: Bytes, value: Bytes) -> Result<(), Error> {
    let mut last = Error::Closed;
    for _ in 0..50 {
        for engine in nodes {
            match engine.put(key.clone(), value.clone()).await {
                Ok(()) => return Ok(()),
                Err(e @ Error::Timeout(_)) => return Err(e), // indeterminate
                Err(e) => last = e,
            }
        }
        tokio::time::sleep(TICK).await;
    }
    Err(last)
}

#[test]
fn a_replica_moves_under_writes_and_restarts_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        // A short log: the new replica must be caught up by a snapshot.
        // Two raft loops per node (the other membership tests run one).
        let mut cluster = Cluster::start_with(4, dir.path(), TICK, |c| {
            c.log_compact_entries = 30;
            c.pollers = 2;
        })
        .unwrap();
        for i in 0..200 {
            cluster
                .put(format!("pre{i:04}"), format!("v{i}"))
                .await
                .unwrap();
        }
        let leader = cluster.leader_of(b"pre").await.expect("a leader");
        assert!(leader <= 3, "the first range lives on nodes 1..=3");
        let leader_engine = cluster.node_handle(leader).unwrap();

        // A writer on the three original nodes, all the way through.
        let writers: Vec<Arc<Engine>> = (1..=3).filter_map(|id| cluster.node_handle(id)).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut acked = BTreeMap::new();
                let mut attempted = Vec::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = Bytes::from(format!("w{i:06}"));
                    let value = Bytes::from(format!("value-{i}"));
                    attempted.push(key.clone());
                    if put_anywhere(&writers, key.clone(), value.clone())
                        .await
                        .is_ok()
                    {
                        acked.insert(key, value);
                    }
                    i += 1;
                }
                (acked, attempted)
            })
        };

        // Refused: a node nobody knows.
        let err = leader_engine.add_replica(1, 99).await.unwrap_err();
        assert!(err.to_string().contains("not known"), "{err}");

        // Add node 4: learner, snapshot, promotion. Returns once it votes.
        leader_engine.add_replica(1, 4).await.unwrap();
        let all_voters = vec![(1, true), (2, true), (3, true), (4, true)];
        assert_eq!(replicas_seen_by(&leader_engine).await, all_voters);
        let four = cluster.node_handle(4).unwrap();
        eventually(
            "node 4 to apply its promotion",
            Duration::from_secs(20),
            || {
                let (four, all_voters) = (four.clone(), all_voters.clone());
                async move { replicas_seen_by(&four).await == all_voters }
            },
        )
        .await;
        assert!(four.stats().await.unwrap().snapshots_applied >= 1);
        // Adding it again is a no-op.
        leader_engine.add_replica(1, 4).await.unwrap();

        // Node 4 restarts in the middle: it keeps its replica and catches up.
        cluster.stop(4).await.unwrap();
        cluster.restart(4).unwrap();
        let four = cluster.node_handle(4).unwrap();
        eventually(
            "node 4 to restart with its replica",
            Duration::from_secs(20),
            || {
                let four = four.clone();
                async move { replicas_seen_by(&four).await.len() == 4 }
            },
        )
        .await;

        // Remove a follower among the first three (4 voters -> 3).
        let victim = (1..=3).find(|&n| n != leader).unwrap();
        leader_engine.remove_replica(1, victim).await.unwrap();
        let victim_engine = cluster.node_handle(victim).unwrap();
        eventually(
            "the removed node to destroy its replica",
            Duration::from_secs(20),
            || {
                let v = victim_engine.clone();
                async move { v.ranges().await.map(|r| r.is_empty()).unwrap_or(false) }
            },
        )
        .await;
        assert_eq!(victim_engine.stats().await.unwrap().replicas_destroyed, 1);
        let err = victim_engine
            .get_with("pre0001", Consistency::Stale)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::RangeNotFound(_)), "{err}");

        // Refused: fewer voters than the replication factor; the leader's
        // own replica.
        let other = (1..=3).find(|&n| n != leader && n != victim).unwrap();
        let err = leader_engine.remove_replica(1, other).await.unwrap_err();
        assert!(err.to_string().contains("replication_factor"), "{err}");
        let err = leader_engine.remove_replica(1, leader).await.unwrap_err();
        assert!(err.to_string().contains("transfer leadership"), "{err}");

        // The removed node restarts: its tombstone keeps the range away.
        cluster.stop(victim).await.unwrap();
        cluster.restart(victim).unwrap();
        let victim_engine = cluster.node_handle(victim).unwrap();
        for _ in 0..50 {
            tokio::time::sleep(TICK).await;
            assert!(victim_engine.ranges().await.unwrap().is_empty());
        }

        // Stop writing; every acknowledged write is there, exactly.
        stop.store(true, Ordering::Relaxed);
        let (acked, attempted) = writer.await.unwrap();
        assert!(
            acked.len() > 20,
            "the writer made progress: {}",
            acked.len()
        );
        for (key, value) in &acked {
            assert_eq!(
                cluster.get(key.clone()).await.unwrap().as_ref(),
                Some(value)
            );
        }
        // Nothing appears that was never written.
        let rows = leader_engine
            .scan(Bytes::from("w")..Bytes::from("x"), 1 << 20)
            .await
            .unwrap();
        for (key, value) in &rows {
            assert!(attempted.contains(key), "{key:?} was never written");
            if let Some(expected) = acked.get(key) {
                assert_eq!(value, expected);
            }
        }
        // Node 4 converges to the same data (stale reads of its replica).
        let last = acked.keys().last().unwrap().clone();
        let expected = acked[&last].clone();
        eventually(
            "node 4 to apply the last write",
            Duration::from_secs(20),
            || {
                let (four, last, expected) = (four.clone(), last.clone(), expected.clone());
                async move {
                    four.get_with(last, Consistency::Stale).await.ok().flatten() == Some(expected)
                }
            },
        )
        .await;

        // Hand leadership to the new replica.
        leader_engine.transfer_leader(1, 4).await.unwrap();
        assert_eq!(cluster.leader_of(b"pre").await, Some(4));
        cluster.put("after-transfer", "ok").await.unwrap();
        cluster.close().await.unwrap();
    });
}

#[test]
fn an_addition_that_cannot_catch_up_is_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let mut cluster = Cluster::start_with(4, dir.path(), TICK, |c| {
            c.membership_timeout = Duration::from_secs(2);
        })
        .unwrap();
        cluster.put("k", "v").await.unwrap();
        // Node 4 is known but down: it can never catch up.
        cluster.stop(4).await.unwrap();
        let leader = cluster.leader_of(b"k").await.expect("a leader");
        let engine = cluster.node_handle(leader).unwrap();
        let err = engine.add_replica(1, 4).await.unwrap_err();
        assert!(err.to_string().contains("did not catch up"), "{err}");
        eventually("the learner to be removed again", Duration::from_secs(20), || {
            let engine = engine.clone();
            async move { replicas_seen_by(&engine).await == vec![(1, true), (2, true), (3, true)] }
        })
        .await;
        // The range is healthy.
        cluster.put("k2", "v2").await.unwrap();
        cluster.close().await.unwrap();
    });
}

#[test]
fn a_replica_removed_while_down_is_destroyed_when_it_returns_and_can_be_added_back() {
    if std::env::var("DEBUG_LOG").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .try_init();
    }
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let mut cluster = Cluster::start_with(3, dir.path(), TICK, |c| {
            c.replication_factor = 2;
            c.log_compact_entries = 30;
            c.membership_timeout = Duration::from_secs(20);
        })
        .unwrap();
        for i in 0..100 {
            cluster.put(format!("k{i:03}"), "old").await.unwrap();
        }
        let leader = cluster.leader_of(b"k").await.expect("a leader");
        let victim = (1..=3).find(|&n| n != leader).unwrap();
        let engine = cluster.node_handle(leader).unwrap();
        // Down while it is removed: it never hears of its removal.
        cluster.stop(victim).await.unwrap();
        engine.remove_replica(1, victim).await.unwrap();
        // Enough data that the snapshot's chunks are split by the transfer
        // (1 MiB pieces), and one value larger than a chunk by itself.
        for i in 0..100 {
            cluster.put(format!("k{i:03}"), "new").await.unwrap();
            cluster
                .put(format!("pad{i:03}"), vec![b'p'; 64 << 10])
                .await
                .unwrap();
        }
        cluster.put("huge", vec![b'h'; 3 << 20]).await.unwrap();
        // Back with its old replica: the others tell it it is no member.
        cluster.restart(victim).unwrap();
        let back = cluster.node_handle(victim).unwrap();
        eventually(
            "the stale replica to be destroyed",
            Duration::from_secs(20),
            || {
                let back = back.clone();
                async move { back.ranges().await.map(|r| r.is_empty()).unwrap_or(false) }
            },
        )
        .await;
        assert_eq!(back.stats().await.unwrap().replicas_destroyed, 1);
        // Added back: a new replica, caught up by snapshot, with the new data.
        engine.add_replica(1, victim).await.unwrap();
        eventually(
            "the re-added replica to hold the new data",
            Duration::from_secs(20),
            || {
                let back = back.clone();
                async move {
                    back.get_with("k099", Consistency::Stale)
                        .await
                        .ok()
                        .flatten()
                        == Some(Bytes::from("new"))
                        && back
                            .get_with("huge", Consistency::Stale)
                            .await
                            .ok()
                            .flatten()
                            .map(|v| v.len())
                            == Some(3 << 20)
                }
            },
        )
        .await;
        cluster.close().await.unwrap();
    });
}
