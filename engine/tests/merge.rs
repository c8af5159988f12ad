//! Merges of replicated ranges on a three-node in-process cluster over the
//! real transport: under concurrent writes (every acknowledged write is
//! readable afterwards on every node, the range maps agree), with a source
//! replica that lags (the merge waits, then rolls back at its deadline),
//! with the driving node stopped mid-merge (the frozen source is unfrozen
//! through the target's log), and 1,000 splits merged back down to one
//! range. Waits are bounded polls on observable state.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{eventually, leader_of_range, runtime};
use flotilla::{Cluster, Engine, Error};

const TICK: Duration = Duration::from_millis(10);

/// The ranges node `engine` holds, as (id, start, end), sorted by start.
async fn range_map(engine: &Engine) -> Vec<(u64, Bytes, Bytes)> {
    let mut ranges: Vec<(u64, Bytes, Bytes)> = engine
        .ranges()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|r| (r.descriptor.id, r.descriptor.start, r.descriptor.end))
        .collect();
    ranges.sort_by(|a, b| a.1.cmp(&b.1));
    ranges
}

/// Every running node holds the same ranges, and they tile the key space.
async fn maps_agree(cluster: &Cluster, nodes: &[u64]) -> Option<Vec<(u64, Bytes, Bytes)>> {
    let first = range_map(cluster.node(nodes[0])?).await;
    for &id in &nodes[1..] {
        if range_map(cluster.node(id)?).await != first {
            return None;
        }
    }
    let tiles = first.first().map(|r| r.1.is_empty()) == Some(true)
        && first.last().map(|r| r.2.is_empty()) == Some(true)
        && first.windows(2).all(|w| w[0].2 == w[1].1);
    tiles.then_some(first)
}

/// Merge `right` into `left`: bring both leaderships to one node first,
/// retrying what leader changes make fail.
async fn merge_colocated(cluster: &Cluster, left: u64, right: u64) {
    let mut last = None;
    // Long enough for an abandoned freeze to be undone (`request_timeout`).
    let end = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < end {
        let (Some(l), Some(r)) = (
            leader_of_range(cluster, left).await,
            leader_of_range(cluster, right).await,
        ) else {
            tokio::time::sleep(TICK).await;
            continue;
        };
        if l != r {
            let _ = cluster.node(r).unwrap().transfer_leader(right, l).await;
            continue;
        }
        match cluster.node(l).unwrap().merge(left, right).await {
            Ok(()) => return,
            Err(e) => {
                eprintln!("merge of {right} into {left} via node {l}: {e}");
                last = Some(e)
            }
        }
        tokio::time::sleep(TICK).await;
    }
    panic!("merge of {right} into {left} kept failing: {last:?}");
}

/// Writers on both sides of `m`, recording what was acknowledged.
struct Writers {
    stop: Arc<AtomicBool>,
    /// Acknowledged writes so far, all writers.
    acks: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<BTreeMap<String, String>>>,
}

fn start_writers(cluster: &Cluster, prefixes: &[&'static str]) -> Writers {
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(AtomicU64::new(0));
    let handles: Vec<Arc<Engine>> = (1..=cluster.len() as u64)
        .filter_map(|id| cluster.node_handle(id))
        .collect();
    let tasks = prefixes
        .iter()
        .map(|&prefix| {
            let stop = stop.clone();
            let acks = acks.clone();
            let handles = handles.clone();
            tokio::spawn(async move {
                let mut acked = BTreeMap::new();
                let mut i = 0u64;
                let mut via = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("{prefix}{:05}", i % 300);
                    let value = format!("v{i}");
                    match handles[via % handles.len()]
                        .put(key.clone(), value.clone())
                        .await
                    {
                        Ok(()) => {
                            acked.insert(key, value);
                            acks.fetch_add(1, Ordering::Relaxed);
                            i += 1;
                        }
                        // Not the leader, frozen for a merge, range
                        // changed: try another node (writes are
                        // idempotent puts, so an indeterminate one is
                        // simply overwritten by the retry).
                        Err(_) => {
                            via += 1;
                            tokio::time::sleep(TICK).await;
                        }
                    }
                }
                acked
            })
        })
        .collect();
    Writers { stop, acks, tasks }
}

impl Writers {
    /// Wait until `n` more writes were acknowledged.
    async fn progress(&self, n: u64) {
        let target = self.acks.load(Ordering::Relaxed) + n;
        eventually(
            "the writers make progress",
            Duration::from_secs(20),
            || async { self.acks.load(Ordering::Relaxed) >= target },
        )
        .await;
    }

    async fn finish(self) -> BTreeMap<String, String> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = BTreeMap::new();
        for task in self.tasks {
            all.extend(task.await.expect("writer"));
        }
        all
    }
}

/// Every acknowledged write is on every node (stale local reads, once the
/// nodes applied everything: the last value written per key is the last
/// acknowledged, since each writer owns its keys and writes in order).
async fn all_nodes_hold(cluster: &Cluster, nodes: &[u64], acked: &BTreeMap<String, String>) {
    for &id in nodes {
        eventually(
            &format!("node {id} holds every acknowledged write"),
            Duration::from_secs(20),
            || async {
                for (key, value) in acked {
                    match cluster.get_local(id, key.clone()).await {
                        Ok(Some(v)) if v == value.as_bytes() => {}
                        _ => return false,
                    }
                }
                true
            },
        )
        .await;
    }
}

#[test]
fn replicated_merges_under_concurrent_writes_keep_every_write() {
    replicated_merges_under_writes(1, 5);
}

/// The same with four raft loops per node: the source of most merges
/// lives in another loop than the target on every node (the driver pulls
/// it before freezing, the followers when `CommitMerge` applies).
#[test]
fn replicated_merges_across_raft_loops_keep_every_write() {
    replicated_merges_under_writes(4, 8);
}

fn replicated_merges_under_writes(pollers: usize, rounds: u64) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let mut cluster =
            Cluster::start_with(3, dir.path(), TICK, move |c| c.pollers = pollers).unwrap();
        cluster.put("warm-up", "x").await.unwrap();
        let writers = start_writers(&cluster, &["a", "n", "z"]);
        for _round in 0..rounds {
            let leader = cluster.leader_of(b"").await.expect("a leader");
            let engine = cluster.node(leader).unwrap();
            let right = engine.split("m").await.expect("split");
            // The right half's leader starts on the parent leader's node;
            // wait until it is elected there.
            eventually(
                "the new range has a leader",
                Duration::from_secs(10),
                || async { leader_of_range(&cluster, right).await.is_some() },
            )
            .await;
            writers.progress(30).await;
            merge_colocated(&cluster, 1, right).await;
            writers.progress(30).await;
            eventually(
                "every node has one range again",
                Duration::from_secs(10),
                || async { maps_agree(&cluster, &[1, 2, 3]).await.map(|m| m.len()) == Some(1) },
            )
            .await;
        }
        let acked = writers.finish().await;
        all_nodes_hold(&cluster, &[1, 2, 3], &acked).await;
        for id in 1..=3 {
            let stats = cluster.node(id).unwrap().stats().await.unwrap();
            assert_eq!(stats.merges, rounds, "node {id}: {stats:?}");
            // Each round's new range lives in another loop than range 1
            // with probability 3/4 (the same ids on every node): none in
            // eight rounds is (1/4)^8. The driver pulls the source before
            // freezing it, the followers when `CommitMerge` applies.
            if pollers > 1 {
                assert!(stats.handovers > 0, "node {id}: no merge crossed loops");
            } else {
                assert_eq!(stats.handovers, 0, "node {id}");
            }
        }
        cluster.close().await.unwrap();
    });
}

#[test]
fn a_lagging_source_replica_makes_the_merge_wait_then_roll_back() {
    if std::env::var("MERGE_TEST_LOG").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_test_writer()
            .try_init();
    }
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let mut cluster = Cluster::start_with(3, dir.path(), TICK, |c| {
            c.request_timeout = Duration::from_secs(2);
        })
        .unwrap();
        cluster.put("warm-up", "x").await.unwrap();
        let leader = cluster.leader_of(b"").await.expect("a leader");
        let right = cluster.node(leader).unwrap().split("m").await.unwrap();
        eventually(
            "the new range has a leader",
            Duration::from_secs(10),
            || async { leader_of_range(&cluster, right).await == Some(leader) },
        )
        .await;
        // A follower stops: the freeze can commit on two nodes, but its
        // entry never reaches the third, so the target must not absorb.
        let lagging = (1..=3).find(|&id| id != leader).unwrap();
        cluster.stop(lagging).await.unwrap();
        cluster.put("zz-before", "1").await.unwrap();
        let err = cluster
            .node(leader)
            .unwrap()
            .merge(1, right)
            .await
            .expect_err("cannot merge while a source replica lags");
        let text = err.to_string();
        assert!(
            text.contains("did not catch up") && text.contains("unfrozen"),
            "{text}"
        );
        // Unfrozen: the right range takes writes again.
        eventually(
            "the source is unfrozen",
            Duration::from_secs(10),
            || async { cluster.put("zz-after", "2").await.is_ok() },
        )
        .await;
        // With the replica back, the same merge goes through.
        cluster.restart(lagging).unwrap();
        let running: Vec<u64> = vec![1, 2, 3];
        eventually(
            "the restarted node caught up",
            Duration::from_secs(20),
            || async { maps_agree(&cluster, &running).await.map(|m| m.len()) == Some(2) },
        )
        .await;
        merge_colocated(&cluster, 1, right).await;
        eventually("one range everywhere", Duration::from_secs(10), || async {
            maps_agree(&cluster, &running).await.map(|m| m.len()) == Some(1)
        })
        .await;
        let acked: BTreeMap<String, String> = [("zz-before", "1"), ("zz-after", "2")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        all_nodes_hold(&cluster, &running, &acked).await;
        cluster.close().await.unwrap();
    });
}

#[test]
fn a_source_frozen_by_a_stopped_driver_is_unfrozen_through_the_target() {
    orphaned_freeze_is_undone(1);
}

/// The same with four raft loops per node: a restarted node starts the
/// frozen source in its target's loop, where the abort finds it.
#[test]
fn an_orphaned_freeze_is_undone_across_raft_loops() {
    orphaned_freeze_is_undone(4);
}

fn orphaned_freeze_is_undone(pollers: usize) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let mut cluster = Cluster::start_with(3, dir.path(), TICK, move |c| {
            // Long enough that the driver is stopped while it waits.
            c.request_timeout = Duration::from_secs(4);
            c.pollers = pollers;
        })
        .unwrap();
        cluster.put("warm-up", "x").await.unwrap();
        let leader = cluster.leader_of(b"").await.expect("a leader");
        let right = cluster.node(leader).unwrap().split("m").await.unwrap();
        eventually(
            "the new range has a leader",
            Duration::from_secs(10),
            || async { leader_of_range(&cluster, right).await == Some(leader) },
        )
        .await;
        let others: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
        cluster.stop(others[1]).await.unwrap();
        // The merge freezes the source and then waits for the stopped
        // replica; the driving node is stopped while it waits.
        let driver = cluster.node_handle(leader).unwrap();
        let merge = tokio::spawn(async move { driver.merge(1, right).await });
        eventually("the source froze", Duration::from_secs(10), || async {
            let ranges = cluster
                .node(others[0])
                .unwrap()
                .ranges()
                .await
                .unwrap_or_default();
            ranges
                .iter()
                .any(|r| r.descriptor.id == right && r.merging_into == Some(1))
        })
        .await;
        cluster.stop(leader).await.unwrap();
        assert!(merge.await.unwrap().is_err(), "the driver stopped");
        cluster.restart(others[1]).unwrap();
        cluster.restart(leader).unwrap();
        // Nobody drives the merge now: after request_timeout the
        // target's leader aborts it and the source is unfrozen.
        eventually(
            "the orphaned freeze is undone",
            Duration::from_secs(30),
            || async { cluster.put("zz-after", "1").await.is_ok() },
        )
        .await;
        let running = [1, 2, 3];
        eventually(
            "two ranges, unfrozen, everywhere",
            Duration::from_secs(20),
            || async {
                if maps_agree(&cluster, &running).await.map(|m| m.len()) != Some(2) {
                    return false;
                }
                for id in running {
                    let ranges = cluster.node(id).unwrap().ranges().await.unwrap_or_default();
                    if ranges.iter().any(|r| r.merging_into.is_some()) {
                        return false;
                    }
                }
                true
            },
        )
        .await;
        cluster.close().await.unwrap();
    });
}

/// `FLOTILLA_MERGE_SPLITS` (default 1,000) splits of one range on three
/// nodes, every range holding data, then merges back down to one range:
/// every key readable on every node, the range maps identical.
#[test]
fn a_thousand_splits_merge_back_to_one_range() {
    let splits: usize = std::env::var("FLOTILLA_MERGE_SPLITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let mut cluster = Cluster::start_with(3, dir.path(), TICK, |_| {}).unwrap();
        cluster.put("warm-up", "x").await.unwrap();
        let leader = cluster.leader_of(b"").await.expect("a leader");
        let engine = cluster.node_handle(leader).unwrap();
        let key = |i: usize| format!("k{i:06}");
        let mut acked = BTreeMap::new();
        for i in 0..=splits {
            cluster.put(key(i), format!("v{i}")).await.unwrap();
            acked.insert(key(i), format!("v{i}"));
        }
        // Split from the right end so every new range is led where its
        // parent is (the parent leader campaigns first).
        let mut ids = vec![1u64];
        for i in (1..=splits).rev() {
            let id = loop {
                match engine.split(key(i)).await {
                    Ok(id) => break id,
                    Err(e) if e.is_retryable() => tokio::time::sleep(TICK).await,
                    Err(e) => panic!("split at {}: {e}", key(i)),
                }
            };
            ids.push(id);
        }
        eventually(
            "every node holds every range",
            Duration::from_secs(60),
            || async {
                maps_agree(&cluster, &[1, 2, 3]).await.map(|m| m.len()) == Some(splits + 1)
            },
        )
        .await;
        // Merge left to right: range 1 absorbs its right neighbour each time.
        let map = maps_agree(&cluster, &[1, 2, 3]).await.unwrap();
        for (right, _, _) in map.into_iter().skip(1) {
            merge_colocated(&cluster, 1, right).await;
        }
        eventually(
            "one range on every node",
            Duration::from_secs(30),
            || async { maps_agree(&cluster, &[1, 2, 3]).await.map(|m| m.len()) == Some(1) },
        )
        .await;
        all_nodes_hold(&cluster, &[1, 2, 3], &acked).await;
        drop(ids);
        cluster.close().await.unwrap();
    });
}

/// Merging is refused, with a message naming what to do, when the
/// ranges' replica sets or leaders differ.
#[test]
fn merges_that_cannot_work_are_refused_clearly() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let mut cluster = Cluster::start_with(3, dir.path(), TICK, |_| {}).unwrap();
        cluster.put("warm-up", "x").await.unwrap();
        let leader = cluster.leader_of(b"").await.expect("a leader");
        let engine = cluster.node(leader).unwrap();
        let far = engine.split("t").await.unwrap();
        let right = engine.split("m").await.unwrap();
        let err = engine.merge(1, far).await.expect_err("not adjacent");
        assert!(err.to_string().contains("not adjacent"), "{err}");
        eventually(
            "the new range has a leader",
            Duration::from_secs(10),
            || async { leader_of_range(&cluster, right).await.is_some() },
        )
        .await;
        let other = (1..=3).find(|&id| id != leader).unwrap();
        cluster
            .node(leader_of_range(&cluster, right).await.unwrap())
            .unwrap()
            .transfer_leader(right, other)
            .await
            .unwrap();
        let err = cluster
            .node(leader)
            .unwrap()
            .merge(1, right)
            .await
            .expect_err("leaders on different nodes");
        assert!(matches!(err, Error::AdminRefused(_)), "{err:?}");
        assert!(err.to_string().contains("transfer one leadership"), "{err}");
        cluster.close().await.unwrap();
    });
}

/// A frozen merge source takes no membership or leadership change (C1 of
/// the engine review): a replica removed after the freeze destroys the
/// source's data on its node while the target replica there is about to
/// absorb that span. Replication factor 2 and a stopped follower: the
/// merge waits for it, frozen, and a removal of the live follower would
/// otherwise be accepted (two voters would remain, both reachable).
#[test]
fn a_frozen_merge_source_refuses_membership_and_leadership_changes() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let mut cluster = Cluster::start_with(3, dir.path(), TICK, |c| {
            c.request_timeout = Duration::from_secs(6);
            c.replication_factor = 2;
        })
        .unwrap();
        cluster.put("warm-up", "x").await.unwrap();
        let leader = cluster.leader_of(b"").await.expect("a leader");
        let right = cluster.node(leader).unwrap().split("m").await.unwrap();
        eventually(
            "the new range has a leader",
            Duration::from_secs(10),
            || async { leader_of_range(&cluster, right).await == Some(leader) },
        )
        .await;
        let followers: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
        cluster.stop(followers[1]).await.unwrap();
        let driver = cluster.node_handle(leader).unwrap();
        let merge = tokio::spawn(async move { driver.merge(1, right).await });
        eventually("the source froze", Duration::from_secs(10), || async {
            let ranges = cluster
                .node(leader)
                .unwrap()
                .ranges()
                .await
                .unwrap_or_default();
            ranges
                .iter()
                .any(|r| r.descriptor.id == right && r.merging_into == Some(1))
        })
        .await;
        let engine = cluster.node(leader).unwrap();
        let removed = engine.remove_replica(right, followers[0]).await;
        assert!(
            matches!(&removed, Err(Error::Busy(m)) if m.contains("merge")),
            "removal from a frozen source: {removed:?}"
        );
        let moved = engine.transfer_leader(right, followers[0]).await;
        assert!(
            matches!(&moved, Err(Error::Busy(m)) if m.contains("merge")),
            "leadership transfer of a frozen source: {moved:?}"
        );
        let added = engine.add_replica(right, followers[1]).await;
        assert!(
            matches!(&added, Err(Error::Busy(m)) if m.contains("merge")),
            "addition to a frozen source: {added:?}"
        );
        // The lagging replica never catches up: the merge rolls back.
        assert!(merge.await.unwrap().is_err());
        cluster.restart(followers[1]).unwrap();
        let running = [1, 2, 3];
        eventually(
            "two unfrozen ranges on every node",
            Duration::from_secs(20),
            || async { maps_agree(&cluster, &running).await.map(|m| m.len()) == Some(2) },
        )
        .await;
        for id in running {
            let ranges = cluster.node(id).unwrap().ranges().await.unwrap();
            let r = ranges.iter().find(|r| r.descriptor.id == right).unwrap();
            assert_eq!(r.descriptor.replicas.len(), 3, "node {id}: {r:?}");
        }
        cluster.close().await.unwrap();
    });
}
