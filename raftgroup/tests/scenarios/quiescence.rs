//! Quiescence: an idle group goes silent and wakes on a proposal.

use crate::net::*;

#[test]
fn quiescence_idle_group_goes_silent_and_wakes_on_proposal() {
    let mut net = Net::new(3, |_| {});
    net.elect(1);
    net.propose(1, "before");
    assert!(!net.g_mut(1).quiesce(), "not idle: a proposal is in flight");
    net.deliver();
    assert!(net.g_mut(1).quiesce());
    net.deliver();
    for id in 1..=3 {
        assert!(net.g(id).is_quiescent(), "replica {id}");
    }

    let mark = net.delivered.len();
    let terms: Vec<Term> = (1..=3).map(|id| net.g(id).term()).collect();
    net.run(200);
    // Ten election timeouts of silence but for the leader's reminder every
    // `ticks_quiesced_heartbeat` (100), which nobody answers.
    let reminders: Vec<&Message> = net.delivered_since(mark).iter().collect();
    assert_eq!(
        reminders.len(),
        4,
        "two reminders to two followers: {reminders:?}"
    );
    assert!(reminders
        .iter()
        .all(|m| m.from == 1 && matches!(m.body, MessageBody::Heartbeat { quiesce: true, .. })));
    assert!(net.queue.is_empty());
    assert_eq!(
        terms,
        (1..=3).map(|id| net.g(id).term()).collect::<Vec<_>>()
    );
    assert_eq!(net.leaders_now(), vec![1]);

    let index = net.propose(1, "wake");
    net.deliver();
    for id in 1..=3 {
        assert!(!net.g(id).is_quiescent(), "replica {id} woke");
        assert_eq!(net.g(id).commit_index(), index);
        assert_eq!(
            net.applied_payloads(id).last(),
            Some(&(index, bytes("wake")))
        );
    }
    let mark = net.delivered.len();
    net.run(4);
    assert!(
        net.delivered_since(mark)
            .iter()
            .any(|m| matches!(m.body, MessageBody::Heartbeat { .. })),
        "heartbeats resume"
    );
}

/// A 3-voter group led by 1, idle and quiesced, with reminders every
/// `period` ticks.
fn quiesced_group(period: u32) -> Net {
    let mut net = Net::new(3, |c| c.ticks_quiesced_heartbeat = period);
    net.elect(1);
    net.propose(1, "w");
    net.deliver();
    assert!(net.g_mut(1).quiesce());
    net.deliver();
    assert!((1..=3).all(|id| net.g(id).is_quiescent()));
    net
}

/// M5: a quiesced group whose leader dies elects another by itself. Ticks
/// keep coming (the core's contract), the leader's reminders stop, and
/// after two missed reminders the followers wake and campaign. Before,
/// quiesced followers waited forever for someone outside to wake them.
#[test]
fn quiescence_m5_followers_replace_a_dead_leader_by_themselves() {
    let period = 20;
    let mut net = quiesced_group(period);
    net.crash(1);
    let emax = u64::from(net.peers[&2].config.ticks_election_max);
    let took = net.run_until(2 * u64::from(period) + 4 * emax, |net| {
        net.leaders_now().iter().any(|&l| l != 1)
    });
    assert!(
        took > 2 * u64::from(period),
        "not before two reminders are missed"
    );
}

/// M5, the other side: a follower that misses the reminders of a leader
/// that is alive wakes the leader (it answers) instead of deposing it.
#[test]
fn quiescence_m5_a_missed_reminder_wakes_the_leader_without_an_election() {
    let period = 20;
    let mut net = quiesced_group(period);
    let term = net.g(1).term();
    for _ in 0..(2 * period + 1) {
        net.tick_all();
        net.deliver_with(|m, _| match m.body {
            MessageBody::Heartbeat { quiesce: true, .. } if m.to == 3 => Fate::Drop,
            _ => Fate::Deliver,
        });
    }
    assert!(
        !net.g(3).is_quiescent(),
        "3 woke after two missed reminders"
    );
    assert!(!net.g(1).is_quiescent(), "and woke the leader");
    net.run(60);
    assert_eq!(net.leaders_now(), vec![1]);
    assert!((1..=3).all(|id| net.g(id).term() == term), "no election");
}

/// m7: a leader woken from quiescence gets no free check-quorum round: its
/// followers' activity marks from before it quiesced do not count, so an
/// isolated leader steps down one election timeout after it wakes, not
/// two.
#[test]
fn quiescence_m7_a_woken_leader_must_hear_a_quorum_within_one_timeout() {
    let mut net = quiesced_group(100);
    net.isolate(1);
    net.g_mut(1).wake_up();
    let emin = u64::from(net.peers[&1].config.ticks_election_min);
    let mut ticks = 0;
    while net.g(1).is_leader() {
        net.g_mut(1).tick();
        net.deliver();
        ticks += 1;
        assert!(ticks <= 3 * emin, "the isolated leader never steps down");
    }
    assert_eq!(ticks, emin);
}
