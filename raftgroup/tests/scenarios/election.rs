//! Election (Raft §5.2).

use crate::net::*;

/// A follower that hears nothing campaigns after its randomized timeout,
/// drawn in `[ticks_election_min, ticks_election_max)`; with pre-vote it
/// first asks without bumping its term, without it it becomes a
/// candidate of the next term that voted for itself (persisted first).
#[test]
fn election_follower_campaigns_after_randomized_timeout() {
    let defaults = Config::default();
    let (min, max) = (defaults.ticks_election_min, defaults.ticks_election_max);
    for pre_vote in [true, false] {
        let mut timeouts = BTreeSet::new();
        for seed in 0..64 {
            let mut g = lone(1, |c| {
                c.seed = seed;
                c.pre_vote = pre_vote;
            });
            let mut ticks = 0u32;
            let ready = loop {
                g.tick();
                ticks += 1;
                assert!(ticks < max, "seed {seed}: no campaign within {max} ticks");
                let ready = take_ready(&mut g);
                if ready
                    .messages_after_persist
                    .iter()
                    .any(|m| matches!(m.body, MessageBody::RequestVote { .. }))
                {
                    break ready;
                }
                assert!(ready.messages.is_empty() && ready.messages_after_persist.is_empty());
            };
            assert!(
                (min..max).contains(&ticks),
                "seed {seed}: campaigned after {ticks} ticks"
            );
            timeouts.insert(ticks);
            let to: BTreeSet<ReplicaId> =
                ready.messages_after_persist.iter().map(|m| m.to).collect();
            assert_eq!(to, BTreeSet::from([2, 3]), "asks every other voter");
            for m in &ready.messages_after_persist {
                let MessageBody::RequestVote {
                    pre,
                    last_index,
                    last_term,
                    transfer,
                } = m.body
                else {
                    panic!("unexpected {m:?}");
                };
                assert_eq!(pre, pre_vote);
                assert!(!transfer);
                assert_eq!((last_index, last_term), (BOOTSTRAP_INDEX, BOOTSTRAP_TERM));
                assert_eq!(m.term, BOOTSTRAP_TERM + 1, "asks for the next term");
            }
            if pre_vote {
                assert_eq!(g.role(), Role::PreCandidate);
                assert_eq!(g.term(), BOOTSTRAP_TERM, "a pre-vote bumps no term");
                assert!(ready.hard_state.is_none(), "nothing to persist");
            } else {
                assert_eq!(g.role(), Role::Candidate);
                assert_eq!(g.term(), BOOTSTRAP_TERM + 1);
                assert_eq!(
                    ready.hard_state,
                    Some(HardState {
                        term: BOOTSTRAP_TERM + 1,
                        vote: 1,
                        commit: BOOTSTRAP_INDEX
                    }),
                    "votes for itself, persisted before the requests leave"
                );
            }
        }
        assert!(
            timeouts.len() >= 5,
            "timeouts are randomized over seeds: {timeouts:?}"
        );
    }
}

/// A follower that keeps hearing from a leader never campaigns.
#[test]
fn election_follower_hearing_from_leader_never_campaigns() {
    let mut g = lone(1, |_| {});
    for tick in 0..200u64 {
        if tick % 2 == 0 {
            g.step(Message {
                from: 2,
                to: 1,
                term: 6,
                body: MessageBody::Heartbeat {
                    commit: BOOTSTRAP_INDEX,
                    seq: tick + 1,
                    quiesce: false,
                },
            })
            .unwrap();
        }
        g.tick();
        let ready = take_ready(&mut g);
        assert!(
            !ready
                .messages_after_persist
                .iter()
                .any(|m| matches!(m.body, MessageBody::RequestVote { .. })),
            "campaigned at tick {tick} despite a live leader"
        );
    }
    assert_eq!((g.role(), g.leader(), g.term()), (Role::Follower, 2, 6));
}

/// From a cold start, several seeds: exactly one leader emerges and
/// stays, everyone else follows it in the same term, and no term ever
/// has two leaders.
#[test]
fn election_exactly_one_leader() {
    for seed in 0..12u64 {
        let n = if seed % 2 == 0 { 3 } else { 5 };
        let mut net = Net::new(n, |c| c.seed = seed);
        let took = net.run_until(200, |net| !net.leaders_now().is_empty());
        assert!(took >= u64::from(Config::default().ticks_election_min));
        net.run(60);
        let leaders = net.leaders_now();
        assert_eq!(leaders.len(), 1, "seed {seed}: leaders {leaders:?}");
        let leader = leaders[0];
        let term = net.g(leader).term();
        for id in net.live() {
            if id != leader {
                let g = net.g(id);
                assert_eq!(
                    (g.role(), g.leader(), g.term()),
                    (Role::Follower, leader, term),
                    "seed {seed}: replica {id}"
                );
            }
        }
        let mut by_term: BTreeMap<Term, BTreeSet<ReplicaId>> = BTreeMap::new();
        for &(t, id) in &net.leaders {
            by_term.entry(t).or_default().insert(id);
        }
        assert!(
            by_term.values().all(|ids| ids.len() == 1),
            "seed {seed}: two leaders in one term: {by_term:?}"
        );
        assert_eq!(
            net.leaders.len(),
            1,
            "seed {seed}: no re-election when calm"
        );
    }
}

/// The election events a Ready reports add up to what happened, even when
/// the role changes faster than the readies (the metrics rely on it).
#[test]
fn election_events_count_every_campaign_and_win() {
    for seed in 0..8u64 {
        let mut net = Net::new(3, |c| c.seed = seed);
        net.run_until(200, |net| !net.leaders_now().is_empty());
        net.run(60);
        let leader = net.leaders_now()[0];
        let term = net.g(leader).term();
        let total = net
            .peers
            .values()
            .fold(ElectionEvents::default(), |a, p| ElectionEvents {
                pre_campaigns: a.pre_campaigns + p.elections.pre_campaigns,
                campaigns: a.campaigns + p.elections.campaigns,
                won: a.won + p.elections.won,
            });
        assert_eq!(total.won as usize, net.leaders.len(), "seed {seed}");
        assert_eq!(net.peers[&leader].elections.won, 1, "seed {seed}");
        // Every real campaign bumps its replica's term by one.
        assert!(
            total.campaigns as u64 >= term - BOOTSTRAP_TERM,
            "seed {seed}: {total:?}"
        );
        // With pre-vote every real campaign follows a won pre-vote round.
        for (id, p) in &net.peers {
            assert!(
                p.elections.pre_campaigns >= p.elections.campaigns,
                "seed {seed} replica {id}"
            );
        }
    }
    // A single voter goes follower → pre-candidate → candidate → leader
    // within one step: the soft state only shows the end, the events all of it.
    let mut net = Net::new(1, |_| {});
    net.run_until(200, |net| !net.leaders_now().is_empty());
    assert_eq!(
        net.peers[&1].elections,
        ElectionEvents {
            pre_campaigns: 1,
            campaigns: 1,
            won: 1
        }
    );
}

/// A follower holding a committed entry it was never told is committed
/// (the group is retired before the next heartbeat: a merge's source) can
/// be told by the application, and only for that very entry.
#[test]
fn commit_known_commits_an_entry_the_log_holds() {
    let mut net = Net::new(3, |_| {});
    net.elect(1);
    let index = net.propose(1, "frozen");
    let term = net.g(1).term();
    // Replica 2 gets the append of the entry; nothing reaches it afterwards
    // (not the next append, which would carry the new commit index).
    let mut appends_to_2 = 0;
    net.deliver_with(|m, _| match (&m.body, m.to) {
        (MessageBody::Append { .. }, 2) => {
            appends_to_2 += 1;
            if appends_to_2 == 1 {
                Fate::Deliver
            } else {
                Fate::Drop
            }
        }
        (_, 2) => Fate::Drop,
        (MessageBody::AppendResponse { .. }, 1) if m.from == 2 => Fate::Deliver,
        _ => Fate::Drop,
    });
    assert!(net.g(1).commit_index() >= index, "1 and 2 form a quorum");
    assert!(net.g(2).commit_index() < index);
    assert!(!net.g_mut(2).commit_known(index, term + 1), "wrong term");
    assert!(
        !net.g_mut(2).commit_known(index + 1, term),
        "not in the log"
    );
    assert!(net.g(2).commit_index() < index);
    assert!(net.g_mut(2).commit_known(index, term));
    net.pump(2);
    let last = net.peers[&2].applied.last().expect("applied");
    assert_eq!(
        (last.index, last.data.as_ref()),
        (index, b"frozen".as_ref())
    );
}

/// A candidate that a majority rejects steps down to follower (keeping
/// its term and its own vote); a candidate that hears from a leader of
/// its term, or sees a higher term, steps down too. A pre-candidate that
/// loses goes back to follower without having bumped its term.
#[test]
fn election_losing_candidate_steps_down() {
    // Rejected by a majority.
    let mut g = lone(1, basic_raft);
    g.campaign().unwrap();
    take_ready(&mut g);
    assert_eq!((g.role(), g.term()), (Role::Candidate, 6));
    g.step(vote_response(2, 1, 6, true)).unwrap();
    assert_eq!(g.role(), Role::Candidate, "1 for, 1 against: undecided");
    g.step(vote_response(3, 1, 6, true)).unwrap();
    assert_eq!((g.role(), g.term(), g.leader()), (Role::Follower, 6, 0));
    assert_eq!(g.status().vote, 1, "it voted for itself in term 6, once");
    let ready = take_ready(&mut g);
    assert_eq!(ready.soft_state.map(|s| s.role), Some(Role::Follower));

    // A leader of the same term shows up.
    let mut g = lone(1, basic_raft);
    g.campaign().unwrap();
    take_ready(&mut g);
    g.step(Message {
        from: 2,
        to: 1,
        term: 6,
        body: MessageBody::Append {
            prev_index: 5,
            prev_term: 5,
            entries: vec![Entry::new(6, 6, Bytes::new())],
            commit: 5,
        },
    })
    .unwrap();
    assert_eq!((g.role(), g.term(), g.leader()), (Role::Follower, 6, 2));
    assert_eq!(g.last_index(), 6, "and accepts its entries");

    // A higher term in an answer.
    let mut g = lone(1, basic_raft);
    g.campaign().unwrap();
    take_ready(&mut g);
    g.step(vote_response(3, 1, 9, true)).unwrap();
    assert_eq!((g.role(), g.term()), (Role::Follower, 9));

    // A pre-candidate loses without disturbing anyone's term.
    let mut g = lone(1, |_| {});
    g.campaign().unwrap();
    take_ready(&mut g);
    assert_eq!((g.role(), g.term()), (Role::PreCandidate, 5));
    for from in [2, 3] {
        g.step(Message {
            from,
            to: 1,
            term: 5,
            body: MessageBody::RequestVoteResponse {
                pre: true,
                reject: true,
            },
        })
        .unwrap();
    }
    assert_eq!((g.role(), g.term()), (Role::Follower, 5));
}

/// Two candidates split the vote of four voters 2-2 in term 6: neither
/// wins, and randomized timeouts resolve it with one leader in a later
/// term.
#[test]
fn election_split_vote_resolves() {
    for seed in 0..8u64 {
        let mut net = Net::new(4, |c| {
            basic_raft(c);
            c.seed = seed;
        });
        net.g_mut(1).campaign().unwrap();
        net.g_mut(2).campaign().unwrap();
        net.deliver_with(|m, _| match (m.from, m.to, &m.body) {
            (1, 4, MessageBody::RequestVote { .. }) | (2, 3, MessageBody::RequestVote { .. }) => {
                Fate::Drop
            }
            _ => Fate::Deliver,
        });
        for id in [1, 2] {
            assert_eq!((net.g(id).role(), net.g(id).term()), (Role::Candidate, 6));
        }
        assert_eq!(net.g(3).status().vote, 1);
        assert_eq!(net.g(4).status().vote, 2);
        assert!(net.leaders_now().is_empty(), "2 of 4 votes is no majority");

        let took = net.run_until(200, |net| net.leaders_now().len() == 1);
        assert!(took <= 100, "seed {seed}: resolved after {took} ticks");
        let leader = net.leaders_now()[0];
        assert!(net.g(leader).term() >= 7, "a later term");
        net.run(30);
        assert_eq!(net.leaders_now(), vec![leader]);
    }
}

/// A voter grants at most one vote per term (the same candidate may ask
/// again), persists it before answering, and remembers it across a
/// restart; a new term frees its vote.
#[test]
fn election_votes_at_most_once_per_term() {
    let mut g = lone(3, basic_raft);
    let last = (BOOTSTRAP_INDEX, BOOTSTRAP_TERM);

    g.step(vote_request(1, 3, 6, last)).unwrap();
    let ready = take_ready(&mut g);
    assert_eq!(the_vote_answer(&ready), (1, 6, false, false), "granted");
    assert_eq!(
        ready.hard_state,
        Some(HardState {
            term: 6,
            vote: 1,
            commit: BOOTSTRAP_INDEX
        }),
        "the vote is persisted with the answer"
    );

    g.step(vote_request(2, 3, 6, last)).unwrap();
    let ready = take_ready(&mut g);
    assert_eq!(the_vote_answer(&ready), (2, 6, false, true), "refused");
    assert!(ready.hard_state.is_none(), "vote unchanged");

    g.step(vote_request(1, 3, 6, last)).unwrap();
    let ready = take_ready(&mut g);
    assert_eq!(
        the_vote_answer(&ready),
        (1, 6, false, false),
        "the same candidate may ask again (its request may have been lost)"
    );

    // Crash and restart from what was persisted: still voted for 1.
    let store = g.store().clone();
    let mut g = RaftGroup::new(
        {
            let mut c = Config::new(3);
            basic_raft(&mut c);
            c
        },
        store,
    )
    .unwrap();
    assert_eq!((g.term(), g.status().vote), (6, 1));
    g.step(vote_request(2, 3, 6, last)).unwrap();
    assert!(
        the_vote_answer(&take_ready(&mut g)).3,
        "refused after restart"
    );

    // A new term: one new vote.
    g.step(vote_request(2, 3, 7, last)).unwrap();
    let ready = take_ready(&mut g);
    assert_eq!(the_vote_answer(&ready), (2, 7, false, false));
    assert_eq!(ready.hard_state.map(|h| (h.term, h.vote)), Some((7, 2)));
    g.step(vote_request(1, 3, 7, last)).unwrap();
    assert!(the_vote_answer(&take_ready(&mut g)).3);
}

/// M2: a single voter elects itself within one step; nothing it sends in
/// its new term may leave before the term and vote are durable. Its
/// appends to a learner used to go out at once: after a crash before the
/// persist it could lead the same term again and put other entries at the
/// same indexes, which the learner, matching by term, would keep.
#[test]
fn election_m2_a_single_voter_sends_nothing_before_its_term_is_durable() {
    let mut store = MemStore::new_with_voters([1]);
    store.set_conf_state(flotilla_raftgroup::ConfState {
        voters: vec![1],
        learners: vec![2],
    });
    let mut g = RaftGroup::new(Config::new(1), store).unwrap();
    g.campaign().unwrap();
    assert!(g.is_leader(), "a single voter wins at once");
    let ready = g.ready();
    let hs = ready.hard_state.expect("a new term and vote to persist");
    assert_eq!((hs.term, hs.vote), (BOOTSTRAP_TERM + 1, 1));
    assert!(ready.must_sync());
    assert!(
        ready.messages.is_empty(),
        "sent before the persist: {:?}",
        ready.messages
    );
    assert!(ready
        .messages_after_persist
        .iter()
        .any(|m| m.to == 2 && matches!(m.body, MessageBody::Append { .. })));
    g.store_mut().append(&ready.entries).unwrap();
    g.store_mut().set_hard_state(hs);
    g.advance(ready);
    // Once the term is durable, a leader's appends go early again.
    g.step(Message {
        from: 2,
        to: 1,
        term: hs.term,
        body: MessageBody::AppendResponse {
            reject: false,
            index: BOOTSTRAP_INDEX + 1,
            hint_index: 0,
            hint_term: 0,
        },
    })
    .unwrap();
    g.propose(bytes("x")).unwrap();
    let ready = g.ready();
    assert!(ready
        .messages
        .iter()
        .any(|m| m.to == 2 && matches!(m.body, MessageBody::Append { .. })));
}

/// M1: a replica with a committed configuration change it has not applied
/// yet does not campaign (etcd's `hasUnappliedConfChanges`): it would
/// count votes under the configuration before the change, and two such
/// changes back to back can elect a leader that lacks a committed entry.
/// Once the change is applied, it campaigns.
#[test]
fn election_m1_no_campaign_while_a_committed_conf_change_is_unapplied() {
    let mut store = MemStore::new_with_voters([1, 2, 3]);
    store
        .append(&[
            Entry::new(6, 6, Bytes::new()),
            Entry {
                term: 6,
                index: 7,
                kind: EntryKind::ConfChange,
                data: ConfChange::AddVoter(4).encode(),
            },
        ])
        .unwrap();
    store.set_hard_state(HardState {
        term: 6,
        vote: 0,
        commit: 7,
    });
    let config = Config {
        applied: 6,
        pre_vote: false,
        ..Config::new(1)
    };
    let mut g = RaftGroup::new(config, store).unwrap();
    assert_eq!(
        g.campaign(),
        Err(Error::ConfChangePending { index: 7 }),
        "refused"
    );
    // Its election timer fires again and again: still no campaign. The
    // entries to apply are handed out but held (the engine's held
    // entries): advance_append only.
    let ready = g.ready();
    assert_eq!(ready.committed_entries.len(), 1, "index 7 to apply");
    let held = ready.committed_entries.clone();
    g.advance_append(ready);
    for _ in 0..60 {
        g.tick();
        let ready = g.ready();
        assert_eq!(ready.elections, ElectionEvents::default(), "no campaign");
        g.advance(ready);
    }
    assert_eq!(g.role(), Role::Follower);
    // Applied: it campaigns, with four voters.
    let change = ConfChange::decode(&held[0].data).unwrap();
    g.apply_conf_change(&change).unwrap();
    g.advance_apply_to(7);
    g.campaign().unwrap();
    assert_eq!(g.role(), Role::Candidate);
    let ready = g.ready();
    let asked: BTreeSet<ReplicaId> = ready
        .messages_after_persist
        .iter()
        .filter(|m| matches!(m.body, MessageBody::RequestVote { .. }))
        .map(|m| m.to)
        .collect();
    assert_eq!(asked, BTreeSet::from([2, 3, 4]));
}

/// m6: `NotMember` is for the application; Raft ignores it entirely. It
/// used to go through the term rules first, so a higher-term one bumped
/// the term and forgot the vote and the leader.
#[test]
fn election_m6_not_member_changes_no_term() {
    let mut g = lone(2, |_| {});
    let before = (g.term(), g.status().vote, g.leader());
    g.step(Message {
        from: 1,
        to: 2,
        term: before.0 + 4,
        body: MessageBody::NotMember,
    })
    .unwrap();
    assert_eq!((g.term(), g.status().vote, g.leader()), before);
    assert!(!g.has_ready() || g.ready().hard_state.is_none());
}
