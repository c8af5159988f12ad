//! ReadIndex (thesis §6.4).

use crate::net::*;

#[test]
fn read_index_on_follower_is_forwarded() {
    let mut net = Net::new(3, |_| {});
    net.elect(1);
    let w = net.propose(1, "w");
    net.deliver();
    assert_eq!(
        net.applied_payloads(1),
        vec![(w, bytes("w"))],
        "acknowledged"
    );

    let mark = net.delivered.len();
    net.g_mut(2).read_index(bytes("r1")).unwrap();
    net.deliver();
    let since = net.delivered_since(mark);
    assert!(since
        .iter()
        .any(|m| (m.from, m.to) == (2, 1) && matches!(m.body, MessageBody::ReadIndex { .. })));
    assert!(since.iter().any(|m| (m.from, m.to) == (1, 2)
        && matches!(m.body, MessageBody::ReadIndexResponse { index, .. } if index >= w)));
    let states = &net.peers[&2].read_states;
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].context, bytes("r1"));
    assert!(states[0].index >= w, "sees the acknowledged write");
    assert!(net.peers[&2].applied_index >= states[0].index);
}

/// A new leader does not know what its predecessor committed until it
/// commits an entry of its own term: reads wait until then, and then see
/// the write the old leader acknowledged.
#[test]
fn read_index_new_leader_waits_for_its_noop() {
    let mut net = Net::new(3, |_| {});
    net.elect(1);
    let w = net.propose(1, "w");
    // 2 and 3 store w, 1 commits and acknowledges it, but the news of the
    // commit never leaves 1.
    net.deliver_with(|m, _| match &m.body {
        MessageBody::Append { entries, .. } if entries.is_empty() => Fate::Drop,
        _ => Fate::Deliver,
    });
    assert_eq!(net.applied_payloads(1), vec![(w, bytes("w"))]);
    for id in [2, 3] {
        assert_eq!((net.g(id).last_index(), net.g(id).commit_index()), (w, 6));
    }
    net.crash(1);

    net.campaign_only(2);
    assert_eq!(net.g(2).commit_index(), 6, "2 does not know w committed");
    net.g_mut(2).read_index(bytes("r")).unwrap();
    // Heartbeats flow, appends do not: the no-op stays uncommitted.
    let no_appends = |m: &Message, _: &Net| match m.body {
        MessageBody::Append { .. } => Fate::Hold,
        _ => Fate::Deliver,
    };
    for _ in 0..6 {
        net.tick_all();
        net.deliver_with(no_appends);
        assert!(
            net.peers[&2].read_states.is_empty(),
            "no read before the no-op"
        );
        assert_eq!(net.g(2).lease_read_index(), None);
    }
    net.release(|_| true);
    net.deliver();
    let states = &net.peers[&2].read_states;
    assert_eq!(states.len(), 1);
    assert!(states[0].index > w, "served after the no-op at {}", w + 1);
    assert!(net.g(2).lease_read_index().is_some_and(|i| i > w));
}

/// Many reads arriving together cost one heartbeat round.
#[test]
fn read_index_batches_reads_into_one_heartbeat_round() {
    let mut net = Net::new(3, |_| {});
    net.elect(1);
    net.propose(1, "w");
    net.deliver();
    let commit = net.g(1).commit_index();

    for id in [2, 3] {
        for i in 0..10 {
            net.g_mut(id)
                .read_index(bytes(&format!("f{id}-{i}")))
                .unwrap();
        }
    }
    let mark = net.delivered.len();
    // The forwarded requests reach the leader...
    net.pump(2);
    net.pump(3);
    net.step_queue(&mut |_, _| Fate::Deliver);
    // ... together with 100 local ones.
    for i in 0..100 {
        net.g_mut(1).read_index(bytes(&format!("l{i}"))).unwrap();
    }
    net.deliver();
    let heartbeats = net
        .delivered_since(mark)
        .iter()
        .filter(|m| matches!(m.body, MessageBody::Heartbeat { .. }))
        .count();
    assert_eq!(heartbeats, 2, "one round: one heartbeat per follower");
    assert_eq!(net.peers[&1].read_states.len(), 100);
    assert_eq!(net.peers[&2].read_states.len(), 10);
    assert_eq!(net.peers[&3].read_states.len(), 10);
    for id in 1..=3 {
        assert!(net.peers[&id].read_states.iter().all(|r| r.index == commit));
        assert!(net.peers[&id].reads_dropped.is_empty());
    }
}

/// m6: a forwarded read is never lost silently. A candidate has no
/// leader to pass it to and tells the asker to retry; an answer that
/// arrives after the asker's term moved on is dropped as a retry; a leader
/// that loses leadership answers its followers' pending reads only after
/// its new term is durable.
#[test]
fn read_index_m6_forwarded_reads_are_answered_or_dropped_never_lost() {
    // A candidate answers a forwarded read with "retry" (index 0).
    let mut candidate = lone(1, |c| c.pre_vote = false);
    candidate.campaign().unwrap();
    take_ready(&mut candidate);
    let term = candidate.term();
    candidate
        .step(Message {
            from: 2,
            to: 1,
            term,
            body: MessageBody::ReadIndex {
                context: bytes("r"),
            },
        })
        .unwrap();
    let seen = take_ready(&mut candidate);
    assert!(seen.messages_after_persist.iter().any(|m| m.to == 2
        && matches!(&m.body, MessageBody::ReadIndexResponse { index: 0, context } if *context == bytes("r"))));

    // An answer from an older term comes back as a dropped read.
    let mut follower = lone(2, |c| c.lease_on_start = false);
    follower
        .step(vote_request(3, 2, 9, (BOOTSTRAP_INDEX + 5, 8)))
        .unwrap();
    take_ready(&mut follower);
    assert_eq!(follower.term(), 9);
    follower
        .step(Message {
            from: 1,
            to: 2,
            term: 8,
            body: MessageBody::ReadIndexResponse {
                context: bytes("late"),
                index: 40,
            },
        })
        .unwrap();
    let ready = follower.ready();
    assert_eq!(ready.reads_dropped, vec![bytes("late")]);
    assert!(ready.read_states.is_empty());

    // A leader with a follower's read pending steps down for a higher
    // term: the "retry" answer waits for the persist of the new term.
    let mut net = Net::new(3, |_| {});
    net.elect(1);
    net.g_mut(2).read_index(bytes("f")).unwrap();
    net.pump(2);
    net.step_queue(&mut |_, _| Fate::Deliver);
    let term = net.g(1).term();
    net.g_mut(1)
        .step(Message {
            from: 3,
            to: 1,
            term: term + 1,
            body: MessageBody::HeartbeatResponse { seq: 0 },
        })
        .unwrap();
    assert!(!net.g(1).is_leader());
    let ready = net.g_mut(1).ready();
    let retry = |m: &Message| {
        m.to == 2 && matches!(m.body, MessageBody::ReadIndexResponse { index: 0, .. })
    };
    assert!(!ready.messages.iter().any(retry), "sent before the persist");
    assert!(ready.messages_after_persist.iter().any(retry));
}
