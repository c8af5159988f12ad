//! An idle leader catches up a rejoined follower and a new learner. Both
//! once failed: the leader waited for traffic that never came.

use crate::net::*;

/// A follower cut off while the leader streamed entries (Replicate state,
/// `next` advanced optimistically over lost appends) rejoins an idle
/// group: heartbeats flow both ways, and it must be caught up all the
/// same (it once was not).
#[test]
fn idle_leader_catches_up_rejoined_follower() {
    let mut sim = Sim::new(77, 3, Faults::none());
    let leader = sim_elect(&mut sim);
    sim_run(&mut sim, 5);
    let lagging = (1..=3).find(|&id| id != leader).unwrap();
    sim.isolate(lagging);
    for _ in 0..10 {
        sim.propose(leader);
        sim_run(&mut sim, 1);
    }
    sim_run(&mut sim, 5);
    sim.heal();
    // Ten election timeouts, no new proposal.
    sim_run(&mut sim, 200);
    assert_eq!(
        sim.group(lagging).unwrap().last_index(),
        sim.group(leader).unwrap().last_index()
    );
    assert_eq!(sim.applied_payloads(lagging), sim.applied_payloads(leader));
}

/// A learner added to an idle group: the leader's progress for it starts
/// at `next = last_index + 1` (Probe), so the heartbeat answers trigger no
/// probe, so the leader once never learned it needed a snapshot and it
/// never caught up.
#[test]
fn idle_leader_catches_up_new_learner() {
    let mut sim = Sim::new(4242, 3, Faults::none());
    let leader = sim_elect(&mut sim);
    for _ in 0..5 {
        sim.propose(leader);
        sim_run(&mut sim, 1);
    }
    sim_run(&mut sim, 10);
    let learner = sim.add_learner().expect("accepted");
    sim_run(&mut sim, 200);
    assert_eq!(
        sim.group(learner).unwrap().conf_state().learners,
        vec![learner]
    );
    assert_eq!(sim.applied_payloads(learner), sim.applied_payloads(leader));
}
