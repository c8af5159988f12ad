//! Log replication (Raft §5.3).

use crate::net::*;

/// An entry commits exactly when a majority (3 of 5) stores it, not
/// before, and then reaches and is applied by every replica.
#[test]
fn replication_commits_after_majority() {
    let mut net = Net::new(5, |_| {});
    net.elect(1);
    let index = net.propose(1, "a");
    assert_eq!(index, 7);

    let holding = std::cell::RefCell::new(BTreeSet::from([3u64, 4, 5]));
    let fate = |m: &Message, _: &Net| match &m.body {
        MessageBody::Append { entries, .. }
            if !entries.is_empty() && holding.borrow().contains(&m.to) =>
        {
            Fate::Hold
        }
        _ => Fate::Deliver,
    };
    net.deliver_with(fate);
    assert_eq!(net.g(2).last_index(), 7, "follower 2 stores it");
    assert_eq!(net.g(1).commit_index(), 6, "2 of 5 is no majority");
    assert!(net.applied_payloads(1).is_empty());

    holding.borrow_mut().remove(&3);
    net.release(|m| m.to == 3);
    net.deliver_with(fate);
    assert_eq!(net.g(3).last_index(), 7);
    assert_eq!(net.g(1).commit_index(), 7, "3 of 5 commits");
    assert_eq!(net.applied_payloads(1), vec![(7, bytes("a"))]);

    holding.borrow_mut().clear();
    net.release(|_| true);
    net.deliver();
    for id in 1..=5 {
        assert_eq!(net.g(id).commit_index(), 7, "replica {id}");
        assert_eq!(
            net.applied_payloads(id),
            vec![(7, bytes("a"))],
            "replica {id}"
        );
    }
}

/// Log Matching: a deposed leader's uncommitted suffix is overwritten by
/// the new leader's log and never applied.
#[test]
fn replication_conflicting_uncommitted_suffix_is_overwritten() {
    let mut net = Net::new(3, |_| {});
    net.elect(1);
    net.isolate(1);
    net.propose(1, "x");
    net.propose(1, "y");
    net.deliver();
    assert_eq!(net.g(1).last_index(), 8);
    assert_eq!(net.g(1).log_term(8).unwrap(), 6);
    assert_eq!(net.g(1).commit_index(), 6, "x and y are not committed");

    // 2 and 3 elect a leader; 1 steps down (check-quorum).
    net.run_until(200, |net| {
        net.leaders_now().iter().any(|&l| l != 1) && !net.g(1).is_leader()
    });
    let leader = net.leaders_now()[0];
    assert_ne!(leader, 1);
    let z = net.propose(leader, "z");
    net.deliver();
    assert_eq!(net.g(leader).commit_index(), z);
    assert_eq!(net.g(1).last_index(), 8, "1 still holds x and y");

    net.heal();
    net.run(30);
    assert_eq!(net.log(1), net.log(leader), "replica 1 converged");
    assert_eq!(net.g(1).log_term(7).unwrap(), net.g(leader).term());
    for id in 1..=3 {
        assert_eq!(
            net.applied_payloads(id),
            vec![(z, bytes("z"))],
            "replica {id}"
        );
        assert!(net
            .log(id)
            .iter()
            .all(|e| e.data != bytes("x") && e.data != bytes("y")));
    }
}

/// A follower far behind, whose log holds 100 entries of an old term
/// that the leader never had, is found with the conflict hint in one or
/// two rejections instead of one per entry.
#[test]
fn replication_fast_backtracking_with_conflict_hint() {
    let mut net = Net::new(3, |_| {});
    net.elect(1);
    // 1 keeps leading alone for a while: 100 entries nobody else gets.
    net.isolate(1);
    for i in 0..100 {
        net.propose(1, &format!("stale-{i}"));
    }
    net.deliver();
    assert_eq!(net.g(1).last_index(), 106);

    // 2 and 3 move on: a term-7 leader with 50 entries, then a term-8
    // leader (by transfer), whose progress for 1 starts past its log end.
    net.run_until(200, |net| net.leaders_now().iter().any(|&l| l != 1));
    let first = *net.leaders_now().iter().find(|&&l| l != 1).unwrap();
    for i in 0..50 {
        net.propose(first, &format!("new-{i}"));
    }
    net.deliver();
    let second = if first == 2 { 3 } else { 2 };
    net.g_mut(first).transfer_leader(second).unwrap();
    net.deliver();
    assert!(net.g(second).is_leader());
    let leader_term = net.g(second).term();
    assert!(leader_term > 7);
    assert_eq!(net.g(1).term(), 6, "1 never bumped its term (pre-vote)");
    assert!(
        net.g(second).last_index() < 106,
        "the follower's log is longer"
    );

    let mark = net.delivered.len();
    net.heal();
    net.run(20);
    let rejections = net
        .delivered_since(mark)
        .iter()
        .filter(|m| m.from == 1 && is_append_rejection(m))
        .count();
    assert!(
        (1..=2).contains(&rejections),
        "{rejections} rejections to find the match point 50 entries back"
    );
    assert_eq!(net.log(1), net.log(second), "converged");
    assert_eq!(net.g(1).commit_index(), net.g(second).commit_index());
    assert!(net
        .applied_payloads(1)
        .iter()
        .all(|(_, p)| !p.starts_with(b"stale")));
    assert_eq!(net.applied_payloads(1), net.applied_payloads(second));
}

/// An append lost while the leader streams (Replicate state) must be
/// sent again without waiting for the next proposal: heartbeats keep
/// flowing, the follower answers them, and the leader knows the follower
/// is behind.
#[test]
fn idle_leader_resends_lost_append() {
    let mut net = Net::new(3, |_| {});
    net.elect(1);
    let index = net.propose(1, "lost-once");
    net.deliver_with(|m, _| match &m.body {
        MessageBody::Append { entries, .. } if !entries.is_empty() => Fate::Drop,
        _ => Fate::Deliver,
    });
    assert_eq!(net.g(1).commit_index(), 6);
    // Ten election timeouts of healthy heartbeats, no new proposal.
    net.run(200);
    assert_eq!(net.g(1).commit_index(), index, "the write never commits");
    for id in 1..=3 {
        assert_eq!(net.applied_payloads(id), vec![(index, bytes("lost-once"))]);
    }
}

/// A follower whose node answers no heartbeats (the engine's case: the
/// node has no replica of the range yet and drops them) and lost the
/// leader's first probe is probed again once per election timeout, so it
/// is caught up as soon as it can answer an append.
#[test]
fn leader_reprobes_a_follower_that_never_answered() {
    let mut net = Net::new(3, |_| {});
    net.campaign_only(1);
    net.release(|_| true);
    // Everything to 3 is lost for a while, and its heartbeats forever.
    net.deliver_with(|m, _| if m.to == 3 { Fate::Drop } else { Fate::Deliver });
    let index = net.propose(1, "while-3-is-away");
    net.deliver_with(|m, _| if m.to == 3 { Fate::Drop } else { Fate::Deliver });
    assert!(net.g(3).last_index() < index);
    let heartbeats_dropped = |m: &Message, _: &Net| match m.body {
        MessageBody::Heartbeat { .. } if m.to == 3 => Fate::Drop,
        _ => Fate::Deliver,
    };
    let timeout = u64::from(net.peers[&1].config.ticks_election_min);
    let mut caught_up_after = None;
    for tick in 1..=3 * timeout {
        net.tick_all();
        net.deliver_with(heartbeats_dropped);
        if net.g(3).last_index() == index {
            caught_up_after = Some(tick);
            break;
        }
    }
    let ticks = caught_up_after.expect("3 caught up without ever answering a heartbeat");
    assert!(ticks <= timeout, "took {ticks} ticks, timeout is {timeout}");
    assert!(net.g(1).is_leader());
}

/// A member added to an idle group gets everything at once (a snapshot
/// when the log is compacted), without waiting for new writes.
#[test]
fn membership_idle_leader_catches_up_new_learner() {
    let mut sim = Sim::new(99, 3, Faults::none());
    let leader = sim_elect(&mut sim);
    for _ in 0..20 {
        sim.propose(leader);
        sim_run(&mut sim, 1);
    }
    sim_run(&mut sim, 10);
    let learner = sim.add_learner().expect("leader accepts the learner");
    // No writes from here on.
    sim_run(&mut sim, 30);
    assert_eq!(sim.applied_payloads(learner), sim.applied_payloads(leader));
    assert_eq!(sim.applied_payloads(learner).len(), 20);
}

/// m7: a caught-up follower that `report_unreachable` put in probe goes
/// back to replicate on the next heartbeat answer (the empty append it
/// triggers is acknowledged at what the leader knows it holds), not only
/// with the next proposal.
#[test]
fn replication_m7_probe_returns_to_replicate_without_a_proposal() {
    let mut net = Net::new(3, |_| {});
    net.elect(1);
    let state = |net: &Net| {
        net.g(1)
            .status()
            .progress
            .iter()
            .find(|p| p.id == 2)
            .map(|p| p.state)
    };
    assert_eq!(
        state(&net),
        Some(flotilla_raftgroup::ProgressState::Replicate)
    );
    net.g_mut(1).report_unreachable(2);
    assert_eq!(state(&net), Some(flotilla_raftgroup::ProgressState::Probe));
    net.run(u64::from(net.peers[&1].config.ticks_heartbeat) + 1);
    assert_eq!(
        state(&net),
        Some(flotilla_raftgroup::ProgressState::Replicate)
    );
}

/// m7: no snapshot is streamed to a follower not heard from this
/// check-quorum round (it may be down); once it answers, it gets one.
#[test]
fn replication_m7_no_snapshot_to_an_inactive_follower() {
    let mut net = Net::new(3, |_| {});
    net.elect(1);
    let away = std::cell::Cell::new(true);
    let snapshots = std::cell::Cell::new(0);
    let fate = |m: &Message, _: &Net| {
        if matches!(m.body, MessageBody::InstallSnapshot { .. }) && m.to == 3 {
            snapshots.set(snapshots.get() + 1);
        }
        if away.get() && (m.to == 3 || m.from == 3) {
            Fate::Drop
        } else {
            Fate::Deliver
        }
    };
    for i in 0..5 {
        net.propose(1, &format!("w{i}"));
    }
    net.deliver_with(fate);
    let applied = net.peers[&1].applied_index;
    net.g_mut(1).compact(applied, Bytes::new()).unwrap();
    net.g_mut(1).report_unreachable(3);
    let emin = u64::from(net.peers[&1].config.ticks_election_min);
    for _ in 0..4 * emin {
        net.tick_all();
        net.deliver_with(fate);
    }
    assert!(net.g(1).is_leader());
    assert_eq!(
        snapshots.get(),
        0,
        "streamed to a follower that never answers"
    );
    away.set(false);
    for _ in 0..2 * emin {
        net.tick_all();
        net.deliver_with(fate);
    }
    assert!(snapshots.get() > 0, "sent once it answers");
    assert_eq!(net.g(3).commit_index(), net.g(1).commit_index());
}
