//! The split race on a three-node in-process cluster: a node hears from
//! the new right-hand range (its leader's appends and heartbeats) before it
//! has applied the split that creates it. It must not create an empty
//! replica from those messages (that replica would overlap its own
//! unsplit range and conflict with the split when it applies); it must
//! create the range from the split, then catch up from the new leader.

mod common;

use std::time::Duration;

use common::{eventually, leader_of_range, runtime};
use flotilla::Cluster;

const TICK: Duration = Duration::from_millis(10);

#[test]
fn a_node_hearing_of_a_new_range_before_its_split_waits_for_the_split() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let mut cluster = Cluster::start_with(3, dir.path(), TICK, |_| {}).unwrap();
        cluster.put("warm-up", "x").await.unwrap();
        let leader = cluster.leader_of(b"").await.expect("a leader");
        let others: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
        let (helper, late) = (others[0], others[1]);
        // `late` hears nothing from the leader of range 1: it will not learn
        // that the split committed.
        let faults = cluster.node(leader).unwrap().transport_faults().unwrap();
        faults.partition_one_way(late);
        let right = cluster.node(leader).unwrap().split("m").await.unwrap();
        eventually(
            "the new range has a leader",
            Duration::from_secs(10),
            || async { leader_of_range(&cluster, right).await == Some(leader) },
        )
        .await;
        // The new range moves to `helper`, which talks to `late` freely.
        cluster
            .node(leader)
            .unwrap()
            .transfer_leader(right, helper)
            .await
            .unwrap();
        for i in 0..20 {
            cluster
                .put(format!("x{i:02}"), format!("v{i}"))
                .await
                .unwrap();
        }
        eventually(
            "late hears of the new range",
            Duration::from_secs(10),
            || async {
                let stats = cluster.node(late).unwrap().stats().await.unwrap();
                stats.messages_dropped_unknown_range > 0 || stats.unknown_range_probes_answered > 0
            },
        )
        .await;
        let ranges = cluster.node(late).unwrap().ranges().await.unwrap();
        assert_eq!(
            ranges.len(),
            1,
            "no replica made from early messages: {ranges:?}"
        );
        assert!(
            ranges[0].descriptor.end.is_empty(),
            "the split is not applied yet"
        );
        // Healed: the split applies, the range is created by it and caught up.
        cluster
            .node(leader)
            .unwrap()
            .transport_faults()
            .unwrap()
            .heal(late);
        eventually(
            "late holds both ranges and every write",
            Duration::from_secs(30),
            || async {
                let ranges = cluster
                    .node(late)
                    .unwrap()
                    .ranges()
                    .await
                    .unwrap_or_default();
                if ranges.len() != 2 || !ranges.iter().any(|r| r.descriptor.id == right) {
                    return false;
                }
                for i in 0..20 {
                    let got = cluster.get_local(late, format!("x{i:02}")).await;
                    if got.ok().flatten().as_deref() != Some(format!("v{i}").as_bytes()) {
                        return false;
                    }
                }
                true
            },
        )
        .await;
        assert_eq!(cluster.node(late).unwrap().stats().await.unwrap().splits, 1);
        cluster.close().await.unwrap();
    });
}
