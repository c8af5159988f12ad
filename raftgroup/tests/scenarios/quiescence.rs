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
    assert_eq!(
        net.delivered.len(),
        mark,
        "ten election timeouts of silence"
    );
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
