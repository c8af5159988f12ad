//! Safety (Raft §5.4), with Figure 8 scripted step by step.

use crate::net::*;

/// §5.4.1: a voter grants its vote (and its pre-vote) only to a candidate
/// whose log is at least as up to date: later last term, or same last
/// term and at least as long.
#[test]
fn safety_voters_refuse_less_up_to_date_candidates() {
    // The voter's log: 6..=8 in term 6.
    let mut store = MemStore::new_with_voters([1, 2, 3]);
    store
        .append(&[
            Entry::new(6, 6, Bytes::new()),
            Entry::new(6, 7, bytes("a")),
            Entry::new(6, 8, bytes("b")),
        ])
        .unwrap();
    store.set_hard_state(HardState {
        term: 6,
        vote: 0,
        commit: 6,
    });
    let voter = || {
        let mut c = Config::new(2);
        c.check_quorum = false;
        RaftGroup::new(c, store.clone()).unwrap()
    };
    let cases: [((Index, Term), bool, &str); 5] = [
        ((7, 6), false, "same last term, shorter"),
        ((10, 5), false, "longer but older last term"),
        ((8, 6), true, "identical"),
        ((9, 6), true, "same last term, longer"),
        ((6, 7), true, "newer last term, shorter"),
    ];
    for (last, grants, why) in cases {
        for pre in [false, true] {
            let mut g = voter();
            let request = if pre {
                pre_vote_request(1, 2, 7, last)
            } else {
                vote_request(1, 2, 7, last)
            };
            g.step(request).unwrap();
            let ready = take_ready(&mut g);
            let (_, _, answered_pre, reject) = the_vote_answer(&ready);
            assert_eq!(answered_pre, pre);
            assert_eq!(!reject, grants, "{why} (pre-vote: {pre})");
            let vote = g.status().vote;
            if grants && !pre {
                assert_eq!(vote, 1);
            } else {
                assert_eq!(vote, 0, "{why}: no vote recorded (pre-vote: {pre})");
            }
        }
    }
}

/// End to end: a replica that missed committed entries never becomes
/// leader; the one that has them does, and keeps them.
#[test]
fn safety_stale_replica_never_leads() {
    for seed in 0..6u64 {
        let mut net = Net::new(3, |c| c.seed = seed);
        net.elect(1);
        net.isolate(3);
        for i in 0..5 {
            net.propose(1, &format!("w{i}"));
        }
        net.deliver();
        assert_eq!(net.g(1).commit_index(), 11);
        net.crash(1);
        net.heal();
        net.run_until(300, |net| !net.leaders_now().is_empty());
        net.run(100);
        assert_eq!(net.leaders_now(), vec![2], "seed {seed}");
        assert!(
            net.leaders.iter().all(|&(_, id)| id != 3),
            "seed {seed}: stale replica 3 led: {:?}",
            net.leaders
        );
        let applied: Vec<Bytes> = net.applied_payloads(3).into_iter().map(|p| p.1).collect();
        let want: Vec<Bytes> = (0..5).map(|i| bytes(&format!("w{i}"))).collect();
        assert_eq!(applied, want, "seed {seed}: committed writes survived");
    }
}

/// Figure 8 of the Raft paper, terms shifted by the bootstrap (paper term
/// 2, 3, 4, 5 are terms 6, 7, 8, 9 here; paper index 1, 2, 3 are 6, 7,
/// 8). Returns the network at the end of step (c): S1 leads term 8 and
/// has replicated its term-6 entry X (index 7) to S3 and S4, a majority
/// with itself; its own term-8 no-op (index 8) is on S1 only, the
/// appends carrying it to S3 and S4 are held.
fn figure8_until_c() -> Net {
    let mut net = Net::new(5, |c| {
        basic_raft(c);
        // One entry per append, so entries of different terms travel
        // separately as in the figure.
        c.message_bytes_max = 1;
    });
    // Index 6 (the paper's index 1) committed everywhere by S1, term 6.
    net.g_mut(1).campaign().unwrap();
    net.deliver();
    assert!(net.g(1).is_leader());
    net.run(u64::from(Config::default().ticks_heartbeat));
    for id in 1..=5 {
        assert_eq!(net.g(id).commit_index(), 6);
    }

    // (a) S1 leads term 6 (paper: 2) and replicates X at index 7 only to
    // S2, then crashes.
    let x = net.propose(1, "X");
    assert_eq!(x, 7);
    net.deliver_with(|m, _| match m.body {
        MessageBody::Append { .. } if m.from == 1 && m.to != 2 => Fate::Drop,
        _ => Fate::Deliver,
    });
    assert_eq!(net.g(2).log_term(7).unwrap(), 6);
    assert_eq!(net.g(1).commit_index(), 6);
    net.crash(1);

    // (b) S5 is elected for term 7 (paper: 3) by S3, S4 and itself, puts
    // a different entry at index 7 (its no-op), and crashes before
    // sending it anywhere.
    net.g_mut(5).campaign().unwrap();
    net.deliver_with(|m, _| {
        if m.from == 2 || m.to == 2 || matches!(m.body, MessageBody::Append { .. }) {
            Fate::Drop
        } else {
            Fate::Deliver
        }
    });
    assert!(net.g(5).is_leader());
    assert_eq!(net.g(5).term(), 7);
    assert_eq!(net.g(5).log_term(7).unwrap(), 7);
    for id in [3, 4] {
        assert_eq!((net.g(id).term(), net.g(id).status().vote), (7, 5));
        assert_eq!(net.g(id).last_index(), 6);
    }
    net.crash(5);

    // (c) S1 restarts. Its first try (term 7) fails: S3 and S4 already
    // voted in term 7. Its second (term 8, paper: 4) wins with S3 and S4.
    net.restart(1);
    let fate_c = |m: &Message, net: &Net| -> Fate {
        if m.from == 2 || m.to == 2 {
            return Fate::Drop;
        }
        if let MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            ..
        } = &m.body
        {
            let carries_own_term = entries.iter().any(|e| e.term == m.term);
            let would_accept = net.g(m.to).log_term(*prev_index).ok() == Some(*prev_term);
            if carries_own_term && would_accept {
                return Fate::Hold;
            }
        }
        Fate::Deliver
    };
    net.g_mut(1).campaign().unwrap();
    net.deliver_with(fate_c);
    assert_eq!((net.g(1).role(), net.g(1).term()), (Role::Candidate, 7));
    net.g_mut(1).campaign().unwrap();
    net.deliver_with(fate_c);
    assert!(net.g(1).is_leader());
    assert_eq!(net.g(1).term(), 8);
    assert_eq!(net.g(1).log_term(7).unwrap(), 6, "X");
    assert_eq!(net.g(1).log_term(8).unwrap(), 8, "the term-8 no-op");
    for id in [3, 4] {
        assert_eq!(net.g(id).last_index(), 7, "replica {id}");
        assert_eq!(net.g(id).log_term(7).unwrap(), 6, "replica {id} has X");
    }
    let matched: BTreeMap<ReplicaId, Index> = net
        .g(1)
        .status()
        .progress
        .iter()
        .map(|p| (p.id, p.matched))
        .collect();
    assert_eq!((matched[&1], matched[&3], matched[&4]), (8, 7, 7));
    // The heart of Figure 8: S1 knows X is on a majority (S1, S3, S4),
    // but X is of an older term, so it must not count it as committed.
    assert_eq!(
        net.g(1).commit_index(),
        6,
        "Figure 8: S1 committed X (term 6) by counting replicas in term 8"
    );
    assert_eq!(net.held.len(), 2, "the term-8 entry waits for S3 and S4");
    net
}

/// Figure 8 (c) then (d): S1 has X (term 6) on a majority but must not
/// commit it by counting replicas, because S5 can still win term 9 with
/// S2, S3, S4 and overwrite it. Nothing committed is ever lost.
#[test]
fn safety_figure8_previous_term_entry_not_committed_by_counting() {
    let mut net = figure8_until_c();
    assert_eq!(
        net.g(1).commit_index(),
        6,
        "X is on S1, S3, S4 (a majority) but of an older term: not committed"
    );
    assert!(net.applied_payloads(1).is_empty(), "X not applied");
    for id in [3, 4] {
        assert_eq!(net.g(id).commit_index(), 6);
    }

    // (d) S1 crashes; S5 restarts and wins term 9 (paper: 5) with S2, S3,
    // S4, whose last term (6) is older than its own (7).
    net.crash(1);
    net.held.clear();
    net.restart(5);
    net.g_mut(5).campaign().unwrap();
    net.deliver();
    assert!(!net.g(5).is_leader(), "S3 and S4 voted for S1 in term 8");
    net.g_mut(5).campaign().unwrap();
    net.deliver();
    assert!(net.g(5).is_leader());
    assert_eq!(net.g(5).term(), 9);
    // It replicates its term-7 entry over X.
    for id in 2..=5 {
        assert_eq!(net.g(id).log_term(7).unwrap(), 7, "replica {id}");
        assert_eq!(net.g(id).commit_index(), 8, "replica {id}");
    }
    net.restart(1);
    net.run(30);
    let leader_log = net.log(5);
    for id in 1..=5 {
        assert_eq!(net.log(id), leader_log, "replica {id}");
        assert!(
            net.peers[&id].applied.iter().all(|e| e.data != bytes("X")),
            "replica {id} applied X, which was then overwritten"
        );
        // Everything anyone applied is what the log holds at that index.
        for e in &net.peers[&id].applied {
            let now = &leader_log[(e.index - 6) as usize];
            assert_eq!((now.term, &now.data), (e.term, &e.data), "replica {id}");
        }
        assert_eq!(net.g(id).log_term(6).unwrap(), 6, "committed index 6 kept");
    }
}

/// Figure 8 (c) then (e): X becomes committed exactly when S1's term-8
/// entry reaches a majority; afterwards S5 can no longer win, and every
/// later leader has X.
#[test]
fn safety_figure8_commit_through_current_term_entry() {
    let mut net = figure8_until_c();
    assert_eq!(net.g(1).commit_index(), 6);

    // The term-8 entry reaches S3: on 2 of 5, still nothing commits.
    net.release(|m| m.to == 3);
    net.deliver_with(|m, _| {
        if m.from == 2 || m.to == 2 || m.to == 4 {
            Fate::Hold
        } else {
            Fate::Deliver
        }
    });
    assert_eq!(net.g(3).last_index(), 8);
    assert_eq!(net.g(1).commit_index(), 6, "term-8 entry on 2 of 5 only");

    // And S4: a majority holds a term-8 entry; it commits, and X with it.
    net.release(|m| m.to == 4);
    net.deliver_with(|m, _| {
        if m.from == 2 || m.to == 2 {
            Fate::Hold
        } else {
            Fate::Deliver
        }
    });
    assert_eq!(net.g(1).commit_index(), 8);
    assert_eq!(net.applied_payloads(1), vec![(7, bytes("X"))]);

    // S1 crashes; S5 restarts and can never win: S3 and S4 hold a newer
    // last term than its log.
    net.crash(1);
    net.held.clear();
    net.restart(5);
    for _ in 0..5 {
        net.g_mut(5).campaign().unwrap();
        net.deliver();
        assert!(!net.g(5).is_leader(), "S5 must not lead: it lacks X");
    }
    // S3 can, and X survives everywhere.
    net.g_mut(3).campaign().unwrap();
    net.deliver();
    assert!(net.g(3).is_leader());
    net.restart(1);
    net.run(30);
    for id in 1..=5 {
        assert_eq!(net.g(id).log_term(7).unwrap(), 6, "replica {id}");
        assert_eq!(
            net.applied_payloads(id),
            vec![(7, bytes("X"))],
            "replica {id}"
        );
    }
    assert_eq!(
        net.leaders
            .iter()
            .filter(|&&(t, id)| id == 5 && t > 7)
            .count(),
        0,
        "S5 never led after X was committed"
    );
}
