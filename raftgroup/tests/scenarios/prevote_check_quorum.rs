//! Pre-vote and check-quorum: a rejoining replica does not disrupt the
//! leader; an isolated leader steps down before a new one is elected.

use crate::net::*;

fn isolate_follower_and_rejoin(pre_vote: bool, seed: u64) -> (Sim, ReplicaId, Term, ReplicaId) {
    let config = Config {
        pre_vote,
        ..Config::default()
    };
    let mut sim = Sim::with_config(seed, 3, Faults::none(), config);
    let leader = sim_elect(&mut sim);
    sim_run(&mut sim, 20);
    let term = sim.group(leader).unwrap().term();
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    sim.isolate(follower);
    // Ten election timeouts (of the longest kind).
    let timeouts = 10 * u64::from(Config::default().ticks_election_max);
    for _ in 0..timeouts {
        sim_run(&mut sim, 1);
        if pre_vote {
            assert_eq!(
                sim.group(follower).unwrap().term(),
                term,
                "pre-vote: the isolated replica never bumps its term"
            );
        }
    }
    sim.heal();
    sim_run(&mut sim, 100);
    (sim, leader, term, follower)
}

#[test]
fn prevote_rejoining_replica_does_not_disrupt_leader() {
    for seed in 0..4u64 {
        let (mut sim, leader, term, follower) = isolate_follower_and_rejoin(true, seed);
        assert_eq!(sim.leader(), Some(leader), "seed {seed}");
        assert_eq!(sim.group(leader).unwrap().term(), term, "seed {seed}");
        assert_eq!(sim.stats.leaders_elected, 1, "seed {seed}: no new election");
        let f = sim.group(follower).unwrap();
        assert_eq!(
            (f.role(), f.leader(), f.term()),
            (Role::Follower, leader, term)
        );
        let p = sim.propose(leader).expect("accepted");
        sim_run(&mut sim, 5);
        assert!(sim.committed_everywhere(p));
    }
}

/// The control experiment: without pre-vote the same rejoin does bump
/// the term (so the test above really measures pre-vote).
#[test]
fn prevote_control_without_pre_vote_the_rejoin_disrupts() {
    let (sim, leader, term, _) = isolate_follower_and_rejoin(false, 0);
    let now = sim.leader().expect("a leader after the disruption");
    assert!(
        sim.group(now).unwrap().term() > term,
        "term {term} should have been bumped (old leader {leader})"
    );
}

// Check-quorum: an isolated leader steps down, its lease ends first.

#[test]
fn check_quorum_isolated_leader_steps_down_before_a_new_leader() {
    let election_min = u64::from(Config::default().ticks_election_min);
    for seed in 0..6u64 {
        let mut sim = Sim::new(seed, 5, Faults::none());
        let old = sim_elect(&mut sim);
        sim_run(&mut sim, 30);
        let term = sim.group(old).unwrap().term();
        assert!(
            sim.group(old).unwrap().lease_read_index().is_some(),
            "seed {seed}: a healthy leader holds its lease"
        );
        sim.isolate(old);
        let mut stepped_down = None;
        let mut lease_lost = None;
        let mut new_leader = None;
        for t in 1..=200u64 {
            sim_run(&mut sim, 1);
            let g = sim.group(old).unwrap();
            let lease = g.lease_read_index();
            if lease.is_none() && lease_lost.is_none() {
                lease_lost = Some(t);
            }
            if !g.is_leader() && stepped_down.is_none() {
                stepped_down = Some(t);
            }
            let other = sim
                .live_ids()
                .into_iter()
                .find(|&id| id != old && sim.group(id).is_some_and(|g| g.is_leader()));
            if let Some(other) = other {
                assert!(
                    lease.is_none(),
                    "seed {seed}: tick {t}: old leader's lease overlaps new leader {other}"
                );
                new_leader.get_or_insert((t, other));
            }
            if stepped_down.is_some() && new_leader.is_some() {
                break;
            }
        }
        let stepped_down = stepped_down.expect("stepped down");
        let lease_lost = lease_lost.expect("lease lost");
        let (elected_at, new) = new_leader.expect("majority side elects");
        assert!(
            stepped_down <= 2 * election_min,
            "seed {seed}: stepped down after {stepped_down} ticks"
        );
        assert!(lease_lost < elected_at, "seed {seed}");
        assert!(lease_lost <= stepped_down, "seed {seed}");
        assert_eq!(sim.group(old).unwrap().role(), Role::Follower);
        assert_eq!(sim.group(old).unwrap().term(), term, "no term bump alone");
        assert!(sim.group(new).unwrap().term() > term);

        sim.heal();
        sim_run(&mut sim, 30);
        let g = sim.group(old).unwrap();
        assert_eq!((g.role(), g.leader()), (Role::Follower, new), "seed {seed}");
    }
}
