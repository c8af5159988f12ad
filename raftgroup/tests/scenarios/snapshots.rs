//! Snapshots for followers behind the compaction point.

use crate::net::*;

#[test]
fn snapshot_catches_up_follower_behind_compaction() {
    let mut sim = Sim::new(77, 3, Faults::none());
    let leader = sim_elect(&mut sim);
    sim_run(&mut sim, 5);
    let lagging = (1..=3).find(|&id| id != leader).unwrap();
    sim.isolate(lagging);
    for _ in 0..30 {
        sim.propose(leader);
        sim_run(&mut sim, 1);
    }
    sim_run(&mut sim, 5);
    let lagging_last = sim.group(lagging).unwrap().last_index();
    sim.compact(leader).unwrap();
    let compacted_to = sim.group(leader).unwrap().first_index() - 1;
    assert_eq!(compacted_to, sim.applied_index(leader));
    assert!(
        compacted_to > lagging_last + 1,
        "the lagging follower needs compacted entries ({lagging_last} vs {compacted_to})"
    );

    let snapshots_before = sim.stats.snapshots_installed;
    sim.heal();
    // The leader keeps taking writes (an idle leader would not catch the
    // follower up at all: see `bug_idle_leader_never_catches_up_rejoined_follower`).
    sim.propose(leader).expect("accepted");
    sim_run(&mut sim, 30);
    assert_eq!(sim.stats.snapshots_installed, snapshots_before + 1);
    let g = sim.group(lagging).unwrap();
    assert_eq!(g.first_index(), compacted_to + 1, "installed the snapshot");
    assert_eq!(g.last_index(), sim.group(leader).unwrap().last_index());
    assert_eq!(sim.applied_payloads(lagging), sim.applied_payloads(leader));
    assert_eq!(sim.applied_payloads(lagging).len(), 31);

    // Then it catches up by log: no further snapshot.
    for _ in 0..5 {
        sim.propose(leader);
        sim_run(&mut sim, 2);
    }
    sim_run(&mut sim, 10);
    let g = sim.group(lagging).unwrap();
    assert_eq!(sim.stats.snapshots_installed, snapshots_before + 1);
    assert_eq!(g.first_index(), compacted_to + 1);
    assert_eq!(g.last_index(), sim.group(leader).unwrap().last_index());
    assert_eq!(sim.applied_payloads(lagging), sim.applied_payloads(leader));
    assert_eq!(sim.applied_payloads(lagging).len(), 36);
}
