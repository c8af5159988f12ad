//! Leadership transfer (thesis §3.10).

use crate::net::*;

#[test]
fn transfer_to_lagging_follower_catches_it_up_first() {
    let mut net = Net::new(3, |_| {});
    net.elect(1);
    net.isolate(3);
    for i in 0..20 {
        net.propose(1, &format!("t{i}"));
    }
    net.deliver();
    assert_eq!(net.g(1).commit_index(), 26);
    assert_eq!(net.g(3).last_index(), 6, "3 lags 20 entries");
    net.heal();

    let mark = net.delivered.len();
    net.g_mut(1).transfer_leader(3).unwrap();
    assert_eq!(
        net.g_mut(1).propose(bytes("refused")),
        Err(Error::TransferInProgress { target: 3 })
    );
    assert_eq!(
        net.g(1).lease_read_index(),
        None,
        "no lease while handing over"
    );
    net.deliver();

    assert!(net.g(3).is_leader());
    assert_eq!(net.g(3).term(), 7);
    assert_eq!(net.leaders, vec![(6, 1), (7, 3)], "no one else in between");
    let g1 = net.g(1);
    assert_eq!((g1.role(), g1.leader()), (Role::Follower, 3));
    // Caught up before TimeoutNow went out.
    let since = net.delivered_since(mark);
    let caught_up = since
        .iter()
        .position(|m| {
            m.from == 3
                && matches!(
                    m.body,
                    MessageBody::AppendResponse {
                        reject: false,
                        index: 26,
                        ..
                    }
                )
        })
        .expect("3 acknowledged the whole log");
    let timeout_now = since
        .iter()
        .position(|m| m.to == 3 && m.body == MessageBody::TimeoutNow)
        .expect("TimeoutNow sent");
    assert!(caught_up < timeout_now);
    net.run(u64::from(Config::default().ticks_heartbeat));
    let want: Vec<Bytes> = (0..20).map(|i| bytes(&format!("t{i}"))).collect();
    for id in 1..=3 {
        let got: Vec<Bytes> = net.applied_payloads(id).into_iter().map(|p| p.1).collect();
        assert_eq!(got, want, "replica {id}");
        assert_eq!(net.g(id).commit_index(), 27, "the new leader's no-op");
    }
    assert_eq!(
        net.g_mut(1).propose(bytes("x")),
        Err(Error::NotLeader { leader: 3 })
    );
    net.propose(3, "after");
    net.deliver();
    assert_eq!(net.applied_payloads(2).last().unwrap().1, bytes("after"));
}

#[test]
fn transfer_to_dead_node_times_out() {
    let mut net = Net::new(3, |_| {});
    net.elect(1);
    net.crash(3);
    net.g_mut(1).transfer_leader(3).unwrap();
    let max = Config::default().ticks_transfer_max;
    for tick in 0..max {
        assert_eq!(
            net.g_mut(1).propose(bytes("refused")),
            Err(Error::TransferInProgress { target: 3 }),
            "tick {tick}"
        );
        net.tick_all();
        net.deliver();
    }
    assert!(net.g(1).is_leader(), "still leading with 2 of 3");
    assert_eq!(net.g(1).term(), 6);
    let index = net.propose(1, "accepted");
    net.deliver();
    assert_eq!(net.g(1).commit_index(), index);
    assert_eq!(net.applied_payloads(2), vec![(index, bytes("accepted"))]);
}
