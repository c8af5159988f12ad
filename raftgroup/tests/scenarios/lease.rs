//! The leader lease (`lease_read_index`): how long it lasts, and the
//! states in which it must not be granted (review findings C1, M3, M4, m1).

use crate::net::*;

/// A 3-voter group led by 1 with a write committed everywhere.
fn led_by_1() -> Net {
    let mut net = Net::new(3, |_| {});
    net.elect(1);
    net.propose(1, "w");
    net.deliver();
    net
}

/// Tick only `ids` (the others' loops are stopped or skip them), then
/// deliver whatever can be delivered.
fn tick_only(net: &mut Net, ids: &[ReplicaId]) {
    for &id in ids {
        net.g_mut(id).tick();
    }
    net.deliver();
}

/// Drop every message except those `keep` accepts, for `ticks` ticks of
/// every replica.
fn run_holding(net: &mut Net, ticks: u64, hold: impl Fn(&Message) -> bool) {
    for _ in 0..ticks {
        net.tick_all();
        net.deliver_with(|m, _| if hold(m) { Fate::Hold } else { Fate::Deliver });
    }
}

/// M3: the lease lasts `ticks_election_min - 1 - ticks_lease_drift` leader
/// ticks from the tick its round started (7 with the defaults), not
/// `ticks_election_min - ticks_lease_drift`: a voter that acknowledged the
/// round may tick right after it reset its timer, so it is only sure to
/// refuse votes for `ticks_election_min - 1` whole intervals.
#[test]
fn lease_m3_lasts_election_min_minus_one_minus_drift_ticks() {
    let mut net = led_by_1();
    let config = net.peers[&1].config.clone();
    assert_eq!(config.lease_ticks(), 7, "10 - 1 - 2");
    // A read starts a heartbeat round at this tick; its answers confirm it.
    net.g_mut(1).read_index(bytes("r")).unwrap();
    net.deliver();
    assert_eq!(net.peers[&1].read_states.len(), 1);
    assert!(net.g(1).lease_read_index().is_some());
    // From now on nothing reaches the leader: the lease runs out on its
    // own ticks.
    for other in [2, 3] {
        net.cut.insert((other, 1));
    }
    let mut held = 0;
    while net.g(1).lease_read_index().is_some() {
        tick_only(&mut net, &[1]);
        held += 1;
        assert!(held < 20, "the lease never ends");
    }
    assert_eq!(held, u64::from(config.lease_ticks()));
    assert!(
        net.g(1).is_leader(),
        "check-quorum has not stepped it down yet"
    );
}

/// C1: a quiesced leader grants no lease. The engine stops ticking a
/// quiesced group, which freezes the lease's clock: an isolated quiesced
/// leader would serve stale reads for as long as its followers, woken by a
/// peer-down report, elect another leader and commit behind its back.
#[test]
fn lease_c1_never_while_quiesced_nor_from_before_it() {
    let mut net = led_by_1();
    assert!(net.g(1).lease_read_index().is_some());
    assert!(net.g_mut(1).quiesce());
    net.deliver();
    assert!((1..=3).all(|id| net.g(id).is_quiescent()));
    assert_eq!(net.g(1).lease_read_index(), None, "quiesced: no lease");

    // 1 is cut off and, quiesced, never ticked; 2 and 3 are woken (a
    // peer-down report) and elect one of them, which commits a write.
    net.isolate(1);
    net.g_mut(2).wake_up();
    net.g_mut(3).wake_up();
    let mut ticks = 0;
    while !(net.g(2).is_leader() || net.g(3).is_leader()) {
        tick_only(&mut net, &[2, 3]);
        ticks += 1;
        assert!(ticks < 300, "2 and 3 never elect a leader");
    }
    let new_leader = if net.g(2).is_leader() { 2 } else { 3 };
    let w = net.propose(new_leader, "newer");
    net.deliver();
    assert_eq!(net.g(new_leader).commit_index(), w);
    assert!(net.g(1).is_leader(), "1 still believes it leads");
    assert_eq!(net.g(1).lease_read_index(), None);

    // Woken (a proposal arrives), 1 still has no lease: the round before
    // it quiesced is no anchor, and no new round can be confirmed.
    net.g_mut(1).wake_up();
    assert_eq!(net.g(1).lease_read_index(), None, "no lease from before");
    tick_only(&mut net, &[1]);
    assert_eq!(net.g(1).lease_read_index(), None);
}

/// M4: once a leader sent TimeoutNow in a term it grants no lease in that
/// term again. A TimeoutNow that arrives after the transfer was abandoned
/// still makes its target campaign, and voters grant a transfer vote
/// despite their lease.
#[test]
fn lease_m4_none_after_a_timeout_now_in_the_term() {
    let mut net = led_by_1();
    let term = net.g(1).term();
    let is_timeout_now = |m: &Message| matches!(m.body, MessageBody::TimeoutNow);
    net.g_mut(1).transfer_leader(3).unwrap();
    net.deliver_with(|m, _| {
        if is_timeout_now(m) {
            Fate::Hold
        } else {
            Fate::Deliver
        }
    });
    assert!(net.held.iter().any(is_timeout_now), "3 was caught up");
    // The transfer is abandoned; heartbeats go on and are acknowledged.
    let ticks = u64::from(net.peers[&1].config.ticks_transfer_max) + 2;
    run_holding(&mut net, ticks, is_timeout_now);
    assert_eq!(
        net.g(1).status().transfer_target,
        flotilla_raftgroup::NO_REPLICA
    );
    assert!(net.g(1).is_leader());
    assert_eq!(
        net.g(1).lease_read_index(),
        None,
        "no lease after TimeoutNow"
    );

    // Why: the late TimeoutNow elects 3 at once, lease or not.
    net.release(|m| is_timeout_now(m));
    net.deliver_with(|m, _| match m.body {
        MessageBody::RequestVote { .. }
        | MessageBody::RequestVoteResponse { .. }
        | MessageBody::TimeoutNow => Fate::Deliver,
        _ => Fate::Hold,
    });
    assert!(net.g(3).is_leader());
    assert_eq!(net.g(3).term(), term + 1);
}

/// m1: a voter that applies its own removal still refuses votes while it
/// may have acknowledged a lease: the leader counts its acknowledgement
/// until the leader applies the removal too.
#[test]
fn lease_m1_a_replica_that_applies_its_own_removal_keeps_refusing_votes() {
    let mut g = lone(3, |c| c.lease_on_start = false);
    g.step(Message {
        from: 1,
        to: 3,
        term: 6,
        body: MessageBody::Heartbeat {
            commit: BOOTSTRAP_INDEX,
            seq: 1,
            quiesce: false,
        },
    })
    .unwrap();
    take_ready(&mut g);
    assert_eq!((g.term(), g.leader()), (6, 1));
    g.apply_conf_change(&ConfChange::Remove(3)).unwrap();
    assert_eq!(
        g.leader(),
        flotilla_raftgroup::NO_REPLICA,
        "it follows nobody now"
    );
    g.step(vote_request(2, 3, 7, (BOOTSTRAP_INDEX + 10, 6)))
        .unwrap();
    let ready = take_ready(&mut g);
    assert!(
        ready.messages_after_persist.is_empty() && ready.messages.is_empty(),
        "the vote request is ignored: {:?}",
        ready.messages_after_persist
    );
    assert_eq!((g.term(), g.status().vote), (6, 0));
}
