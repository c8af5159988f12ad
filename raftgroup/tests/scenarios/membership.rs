//! Single-server membership changes (thesis §4.1).

use crate::net::*;

/// A new leader proposes no configuration change before it committed an
/// entry of its term, and at most one change is pending at a time.
#[test]
fn membership_new_leader_waits_and_one_change_at_a_time() {
    let mut net = Net::new(3, |_| {});
    net.campaign_only(1);
    assert_eq!(
        net.g_mut(1).propose_conf_change(ConfChange::AddLearner(4)),
        Err(Error::LeaderNotReady)
    );
    // Normal proposals are accepted meanwhile.
    net.propose(1, "before");
    net.release(|_| true);
    net.deliver();

    let first = net
        .g_mut(1)
        .propose_conf_change(ConfChange::AddLearner(4))
        .expect("ready now");
    assert_eq!(
        net.g_mut(1).propose_conf_change(ConfChange::AddLearner(5)),
        Err(Error::ConfChangePending { index: first })
    );
    assert!(net.g_mut(1).propose(bytes("during")).is_ok());
    net.deliver();
    for id in 1..=3 {
        assert_eq!(net.g(id).conf_state().learners, vec![4], "replica {id}");
        assert_eq!(net.g(id).conf_state().voters, vec![1, 2, 3]);
    }
    assert_eq!(
        net.g_mut(1).propose_conf_change(ConfChange::AddLearner(4)),
        Err(Error::ConfChange(ConfChangeError::AlreadyMember(4)))
    );
    let second = net
        .g_mut(1)
        .propose_conf_change(ConfChange::AddLearner(5))
        .expect("the first one applied");
    assert!(second > first);
    net.deliver();
    assert_eq!(net.g(2).conf_state().learners, vec![4, 5]);
}

/// A learner added empty catches up (through the bootstrap snapshot and
/// then the log), never campaigns, does not count for commit, and is
/// promoted to voter; it can then lead.
#[test]
fn membership_learner_catches_up_and_is_promoted() {
    let mut sim = Sim::new(4242, 3, Faults::none());
    let leader = sim_elect(&mut sim);
    for _ in 0..20 {
        sim.propose(leader);
        sim_run(&mut sim, 1);
    }
    sim_run(&mut sim, 10);
    let snapshots_before = sim.stats.snapshots_installed;
    let learner = sim.add_learner().expect("leader accepts the learner");
    assert_eq!(learner, 4, "a fresh id");
    sim_run(&mut sim, 5);
    // Writes go on while it joins (an idle group catches it up too: see
    // `membership_idle_leader_catches_up_new_learner`).
    for _ in 0..5 {
        sim.propose(leader).expect("accepted");
        sim_run(&mut sim, 2);
    }
    sim_run(&mut sim, 30);
    assert!(sim.stats.snapshots_installed > snapshots_before);
    {
        let g = sim.group(learner).unwrap();
        assert_eq!(g.conf_state().voters, vec![1, 2, 3]);
        assert_eq!(g.conf_state().learners, vec![4]);
        assert_eq!(g.role(), Role::Follower);
        assert_eq!(g.last_index(), sim.group(leader).unwrap().last_index());
    }
    assert_eq!(sim.applied_payloads(learner), sim.applied_payloads(leader));
    assert_eq!(sim.applied_payloads(learner).len(), 25);

    // A learner never campaigns, however long it hears nothing.
    let term = sim.group(leader).unwrap().term();
    sim.isolate(learner);
    for _ in 0..100 {
        sim_run(&mut sim, 1);
        let g = sim.group(learner).unwrap();
        assert_eq!((g.role(), g.term()), (Role::Follower, term));
    }
    sim.heal();
    sim_run(&mut sim, 10);

    // It does not count for commit: with the two other voters cut off,
    // an entry the learner stores stays uncommitted.
    let others: Vec<ReplicaId> = (1..=3).filter(|&v| v != leader).collect();
    for &v in &others {
        sim.net.cut.insert((leader, v));
        sim.net.cut.insert((v, leader));
    }
    let commit_before = sim.group(leader).unwrap().commit_index();
    sim.propose(leader).expect("accepted");
    sim_run(&mut sim, 3);
    let last = sim.group(leader).unwrap().last_index();
    assert_eq!(sim.group(learner).unwrap().last_index(), last);
    assert_eq!(sim.group(leader).unwrap().commit_index(), commit_before);
    sim.heal();
    // The appends the voters missed are resent (see
    // `idle_leader_resends_lost_append`); a new write makes it quick.
    sim.propose(leader).expect("accepted");
    sim_run(&mut sim, 10);
    assert_eq!(sim.group(leader).unwrap().commit_index(), last + 1);

    // Promote it.
    assert!(sim.conf_change(ConfChange::AddVoter(learner)));
    sim_run(&mut sim, 20);
    for id in 1..=4 {
        let conf = sim.group(id).unwrap().conf_state().clone();
        assert_eq!(conf.voters, vec![1, 2, 3, 4], "replica {id}");
        assert!(conf.learners.is_empty());
    }
    assert!(sim.transfer(learner));
    sim_run(&mut sim, 20);
    assert_eq!(sim.leader(), Some(learner));
    sim.propose(learner).expect("accepted");
    sim_run(&mut sim, 10);
    assert_eq!(sim.applied_payloads(1), sim.applied_payloads(learner));
    assert_eq!(sim.applied_payloads(learner).len(), 28);
}

/// Removing the leader: it steps down once the removal applies, the
/// others elect a leader among themselves and go on committing, and the
/// harness never hands the removed id out again.
#[test]
fn membership_removing_the_leader() {
    for seed in [7u64, 8, 9] {
        let mut sim = Sim::new(seed, 3, Faults::none());
        let old = sim_elect(&mut sim);
        let old_term = sim.group(old).unwrap().term();
        for _ in 0..3 {
            sim.propose(old);
        }
        sim_run(&mut sim, 5);
        // Wait for the leader to be allowed to change membership.
        assert!(sim.conf_change(ConfChange::Remove(old)), "seed {seed}");
        let mut new_leader = None;
        for _ in 0..200 {
            sim_run(&mut sim, 1);
            if let Some(l) = sim.leader().filter(|&l| l != old) {
                new_leader = Some(l);
                break;
            }
        }
        let new_leader =
            new_leader.unwrap_or_else(|| panic!("seed {seed}: no new leader\n{}", describe(&sim)));
        assert!(sim.nodes[&old].removed, "seed {seed}");
        assert!(
            sim.nodes[&old]
                .group
                .as_ref()
                .is_none_or(|g| !g.is_leader()),
            "seed {seed}: the removed leader stepped down"
        );
        assert!(sim.group(new_leader).unwrap().term() > old_term);
        sim_run(&mut sim, 10);
        let survivors: Vec<ReplicaId> = (1..=3).filter(|&v| v != old).collect();
        for &id in &survivors {
            assert_eq!(sim.group(id).unwrap().conf_state().voters, survivors);
        }
        let p = sim.propose(new_leader).expect("accepted");
        sim_run(&mut sim, 10);
        assert!(sim.committed_everywhere(p), "seed {seed}");
        let applied = sim.applied_payloads(survivors[0]);
        assert_eq!(applied, sim.applied_payloads(survivors[1]));
        assert_eq!(applied.len(), 4);

        // Ids are never reused: a new learner gets 4, and after removing
        // it too, the next one gets 5.
        let learner = sim.add_learner().expect("accepted");
        assert_eq!(learner, 4);
        sim_run(&mut sim, 30);
        assert!(sim.conf_change(ConfChange::Remove(learner)));
        sim_run(&mut sim, 10);
        let again = sim.add_learner().expect("accepted");
        assert_eq!(again, 5, "seed {seed}: not {old} nor {learner} again");
    }
}

/// A single voter that has led and committed its no-op, persisted and
/// applied by hand; returns it.
fn single_voter_leader() -> RaftGroup<MemStore> {
    let mut g = RaftGroup::new(Config::new(1), MemStore::new_with_voters([1])).unwrap();
    g.campaign().unwrap();
    persist_and_apply(&mut g);
    assert!(g.is_leader());
    g
}

/// Persist a Ready, apply every committed entry (configuration changes
/// included), advance.
fn persist_and_apply(g: &mut RaftGroup<MemStore>) {
    while g.has_ready() {
        let ready = g.ready();
        if let Some(s) = ready.snapshot.clone() {
            g.store_mut().apply_snapshot(s).unwrap();
        }
        g.store_mut().append(&ready.entries).unwrap();
        if let Some(hs) = ready.hard_state {
            g.store_mut().set_hard_state(hs);
        }
        for e in &ready.committed_entries {
            if e.kind == EntryKind::ConfChange {
                let conf = g
                    .apply_conf_change(&ConfChange::decode(&e.data).unwrap())
                    .unwrap();
                g.store_mut().set_conf_state(conf);
            }
        }
        g.advance(ready);
    }
}

/// m2, the contract the engine needs: committed entries it holds back
/// (advance_append, then advance_apply_to what it really applied) keep
/// the core's applied index where the application is, so the rules that
/// depend on it hold: one configuration change at a time, no quiescence.
#[test]
fn membership_m2_held_entries_keep_the_applied_index_honest() {
    let mut g = single_voter_leader();
    let index = g.propose_conf_change(ConfChange::AddLearner(2)).unwrap();
    let ready = g.ready();
    g.store_mut().append(&ready.entries).unwrap();
    g.advance_append(ready);
    let ready = g.ready();
    assert_eq!(ready.committed_entries.last().map(|e| e.index), Some(index));
    let held = ready.committed_entries.clone();
    g.advance_append(ready);
    assert_eq!(g.applied_index(), index - 1, "held: not applied");
    assert_eq!(
        g.propose_conf_change(ConfChange::AddLearner(3)),
        Err(Error::ConfChangePending { index }),
    );
    assert!(!g.quiesce(), "never quiesce with entries unapplied");
    // The engine applies it later.
    let conf = g
        .apply_conf_change(&ConfChange::decode(&held[0].data).unwrap())
        .unwrap();
    g.store_mut().set_conf_state(conf);
    g.advance_apply_to(index);
    assert_eq!(g.applied_index(), index);
    g.propose_conf_change(ConfChange::AddLearner(3)).unwrap();
}

/// m3: a snapshot does not replace the configuration while entries handed
/// out earlier are still being applied: their changes would then apply on
/// top of the snapshot's later configuration. It is ignored until they
/// are applied.
#[test]
fn membership_m3_no_snapshot_while_entries_are_being_applied() {
    let mut g = lone(2, |c| c.lease_on_start = false);
    let change = Entry {
        term: 6,
        index: 7,
        kind: EntryKind::ConfChange,
        data: ConfChange::AddLearner(4).encode(),
    };
    g.step(Message {
        from: 1,
        to: 2,
        term: 6,
        body: MessageBody::Append {
            prev_index: BOOTSTRAP_INDEX,
            prev_term: BOOTSTRAP_TERM,
            entries: vec![Entry::new(6, 6, Bytes::new()), change],
            commit: 7,
        },
    })
    .unwrap();
    let ready = g.ready();
    g.store_mut().append(&ready.entries).unwrap();
    if let Some(hs) = ready.hard_state {
        g.store_mut().set_hard_state(hs);
    }
    g.advance_append(ready);
    let ready = g.ready();
    assert_eq!(ready.committed_entries.len(), 2, "6 and 7 to apply");
    g.advance_append(ready);

    // A snapshot at 20 whose configuration already removed learner 4.
    let later = flotilla_raftgroup::ConfState {
        voters: vec![1, 2, 3],
        learners: vec![],
    };
    let snapshot = |index| Message {
        from: 1,
        to: 2,
        term: 6,
        body: MessageBody::InstallSnapshot {
            snapshot: flotilla_raftgroup::Snapshot {
                meta: flotilla_raftgroup::SnapshotMeta {
                    index,
                    term: 6,
                    conf_state: later.clone(),
                },
                data: Bytes::new(),
            },
        },
    };
    g.step(snapshot(20)).unwrap();
    let ready = g.ready();
    assert!(ready.snapshot.is_none(), "ignored while 6 and 7 apply");
    g.advance_append(ready);
    // The application applies 6 and 7 (7 adds learner 4), then the
    // snapshot comes again and is taken.
    g.apply_conf_change(&ConfChange::AddLearner(4)).unwrap();
    g.advance_apply_to(7);
    g.step(snapshot(20)).unwrap();
    let ready = g.ready();
    assert_eq!(ready.snapshot.as_ref().map(|s| s.meta.index), Some(20));
    assert_eq!(g.conf_state(), &later);
}

/// m5: compaction of the in-memory log keeps the configuration as of the
/// compaction index; it refuses an index behind a change applied since,
/// whose configuration it no longer knows.
#[test]
fn membership_m5_compaction_keeps_the_configuration_of_its_index() {
    let mut g = single_voter_leader();
    let index = g.propose_conf_change(ConfChange::AddLearner(2)).unwrap();
    persist_and_apply(&mut g);
    assert_eq!(g.applied_index(), index);
    assert_eq!(
        g.compact(index - 1, Bytes::new()),
        Err(Error::CompactAcrossConfChange {
            index: index - 1,
            conf_index: index
        })
    );
    g.compact(index, Bytes::new()).unwrap();
    let snapshot = g.store().last_snapshot();
    assert_eq!(snapshot.meta.index, index);
    assert_eq!(snapshot.meta.conf_state.learners, vec![2]);
}
