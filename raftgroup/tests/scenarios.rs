//! Scenario tests that walk the Raft paper (and the thesis' extensions)
//! case by case, each asserting concrete outcomes: roles, terms, commit
//! indexes, log contents and applied payloads.
//!
//! Two harnesses are used:
//! - [`Net`], defined here: replicas wired by an in-memory network where
//!   the test decides the fate of every message (deliver, drop, or hold
//!   for later) and delivery is instantaneous. It is for scenarios that
//!   must be scripted message by message (Figure 8, fast backtracking,
//!   read batching, leader transfer).
//! - `Sim` from `tests/common`, the seeded simulator, whose invariant
//!   checks run after every step; used for the longer scenarios
//!   (membership, pre-vote, check-quorum, snapshots).
//!
//! Every initial replica starts from the bootstrap snapshot at index 5,
//! term 5 ([`BOOTSTRAP_INDEX`]): the first leader is elected in term 6
//! and its no-op is at index 6.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use common::{describe, Faults, Sim};
use flotilla_raftgroup::{
    ConfChange, ConfChangeError, Config, ElectionEvents, Entry, EntryKind, Error, HardState, Index,
    LogStore, MemStore, Message, MessageBody, RaftGroup, ReadState, ReplicaId, Role, Term,
    BOOTSTRAP_INDEX, BOOTSTRAP_TERM,
};

// ====================================================================
// Net: a scripted in-memory network
// ====================================================================

/// What happens to one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Deliver,
    Drop,
    /// Keep it aside; [`Net::release`] puts it back on the wire.
    Hold,
}

struct Peer {
    group: Option<RaftGroup<MemStore>>,
    /// The persisted store while crashed.
    stored: Option<MemStore>,
    config: Config,
    /// The state machine: every entry applied, in order (kept on crash,
    /// as a durable state machine would be).
    applied: Vec<Entry>,
    applied_index: Index,
    snapshots_installed: u64,
    read_states: Vec<ReadState>,
    reads_dropped: Vec<Bytes>,
    /// Election events summed over every Ready.
    elections: ElectionEvents,
    /// The hard state of the last Ready that carried one.
    last_hard_state: HardState,
}

struct Net {
    peers: BTreeMap<ReplicaId, Peer>,
    queue: Vec<Message>,
    held: Vec<Message>,
    /// Directed links that drop everything.
    cut: BTreeSet<(ReplicaId, ReplicaId)>,
    /// Every message stepped into a replica, in order.
    delivered: Vec<Message>,
    /// (term, replica) each time a replica became leader.
    leaders: Vec<(Term, ReplicaId)>,
}

impl Net {
    /// Replicas 1..=n, all voters, default config adjusted by `tweak`.
    fn new(n: u64, tweak: impl Fn(&mut Config)) -> Net {
        let mut peers = BTreeMap::new();
        for id in 1..=n {
            let mut config = Config {
                id,
                seed: 0xF10_7111A,
                ..Config::default()
            };
            tweak(&mut config);
            let group = RaftGroup::new(config.clone(), MemStore::new_with_voters(1..=n))
                .expect("valid config");
            let (last_hard_state, _) = group.store().initial_state().expect("initial state");
            peers.insert(
                id,
                Peer {
                    group: Some(group),
                    stored: None,
                    config,
                    applied: Vec::new(),
                    applied_index: BOOTSTRAP_INDEX,
                    snapshots_installed: 0,
                    read_states: Vec::new(),
                    reads_dropped: Vec::new(),
                    elections: ElectionEvents::default(),
                    last_hard_state,
                },
            );
        }
        Net {
            peers,
            queue: Vec::new(),
            held: Vec::new(),
            cut: BTreeSet::new(),
            delivered: Vec::new(),
            leaders: Vec::new(),
        }
    }

    fn is_live(&self, id: ReplicaId) -> bool {
        self.peers.get(&id).is_some_and(|p| p.group.is_some())
    }

    fn live(&self) -> Vec<ReplicaId> {
        self.peers
            .iter()
            .filter(|(_, p)| p.group.is_some())
            .map(|(&id, _)| id)
            .collect()
    }

    fn g(&self, id: ReplicaId) -> &RaftGroup<MemStore> {
        self.peers[&id].group.as_ref().expect("replica is live")
    }

    fn g_mut(&mut self, id: ReplicaId) -> &mut RaftGroup<MemStore> {
        self.peers
            .get_mut(&id)
            .and_then(|p| p.group.as_mut())
            .expect("replica is live")
    }

    /// Handle every Ready of `id`: persist, queue messages, apply.
    fn pump(&mut self, id: ReplicaId) {
        let peer = self.peers.get_mut(&id).expect("known replica");
        let Some(group) = peer.group.as_mut() else {
            return;
        };
        let mut rounds = 0;
        while group.has_ready() {
            rounds += 1;
            assert!(rounds < 100, "replica {id} never runs out of Ready");
            let mut ready = group.ready();
            // Sync exactly when entries, a snapshot, the term or the vote
            // are new (a commit-only change needs no fsync), every ready
            // of every scenario.
            let hs = ready.hard_state.unwrap_or(peer.last_hard_state);
            let expect_sync = !ready.entries.is_empty()
                || ready.snapshot.is_some()
                || hs.term != peer.last_hard_state.term
                || hs.vote != peer.last_hard_state.vote;
            assert_eq!(ready.must_sync(), expect_sync, "replica {id}: {ready:?}");
            peer.last_hard_state = hs;
            peer.elections.pre_campaigns += ready.elections.pre_campaigns;
            peer.elections.campaigns += ready.elections.campaigns;
            peer.elections.won += ready.elections.won;
            if let Some(ss) = ready.soft_state {
                if ss.role == Role::Leader {
                    self.leaders.push((ss.term, id));
                }
            }
            if let Some(snapshot) = ready.snapshot.clone() {
                peer.applied_index = snapshot.meta.index;
                peer.snapshots_installed += 1;
                group.store_mut().apply_snapshot(snapshot).expect("install");
            }
            group.store_mut().append(&ready.entries).expect("append");
            if let Some(hs) = ready.hard_state {
                group.store_mut().set_hard_state(hs);
            }
            self.queue.append(&mut ready.messages);
            self.queue.append(&mut ready.messages_after_persist);
            for entry in std::mem::take(&mut ready.committed_entries) {
                assert_eq!(
                    entry.index,
                    peer.applied_index + 1,
                    "replica {id} applies out of order"
                );
                peer.applied_index = entry.index;
                if entry.kind == EntryKind::ConfChange {
                    let change = ConfChange::decode(&entry.data).expect("conf change payload");
                    if let Ok(conf) = group.apply_conf_change(&change) {
                        group.store_mut().set_conf_state(conf);
                    }
                }
                peer.applied.push(entry);
            }
            peer.read_states.append(&mut ready.read_states);
            peer.reads_dropped.append(&mut ready.reads_dropped);
            group.advance(ready);
        }
    }

    fn pump_all(&mut self) {
        for id in self.live() {
            self.pump(id);
        }
    }

    /// Step every queued message once (no pumping).
    fn step_queue(&mut self, fate: &mut impl FnMut(&Message, &Net) -> Fate) {
        for message in std::mem::take(&mut self.queue) {
            let verdict =
                if self.cut.contains(&(message.from, message.to)) || !self.is_live(message.to) {
                    Fate::Drop
                } else {
                    fate(&message, self)
                };
            match verdict {
                Fate::Drop => {}
                Fate::Hold => self.held.push(message),
                Fate::Deliver => {
                    let (from, to) = (message.from, message.to);
                    let is_snapshot = matches!(message.body, MessageBody::InstallSnapshot { .. });
                    self.delivered.push(message.clone());
                    self.g_mut(to).step(message).expect("step");
                    if is_snapshot && self.is_live(from) {
                        self.g_mut(from).report_snapshot(to, true);
                    }
                }
            }
        }
    }

    /// Pump and deliver until the network is quiet, asking `fate` about
    /// every message.
    fn deliver_with(&mut self, mut fate: impl FnMut(&Message, &Net) -> Fate) {
        for _ in 0..10_000 {
            self.pump_all();
            if self.queue.is_empty() {
                return;
            }
            self.step_queue(&mut fate);
        }
        panic!("the network never went quiet");
    }

    fn deliver(&mut self) {
        self.deliver_with(|_, _| Fate::Deliver);
    }

    /// Put held messages matching `which` back on the wire.
    fn release(&mut self, which: impl Fn(&Message) -> bool) {
        let (back, keep): (Vec<Message>, Vec<Message>) =
            std::mem::take(&mut self.held).into_iter().partition(which);
        self.held = keep;
        self.queue.extend(back);
    }

    fn tick_all(&mut self) {
        for id in self.live() {
            self.g_mut(id).tick();
        }
    }

    /// `ticks` ticks of every live replica, delivering everything.
    fn run(&mut self, ticks: u64) {
        for _ in 0..ticks {
            self.tick_all();
            self.deliver();
        }
    }

    /// Tick (delivering everything) until `done` holds; returns the ticks
    /// it took, or panics after `ticks_max`.
    fn run_until(&mut self, ticks_max: u64, done: impl Fn(&Net) -> bool) -> u64 {
        for t in 0..=ticks_max {
            if done(self) {
                return t;
            }
            self.tick_all();
            self.deliver();
        }
        panic!("condition not reached within {ticks_max} ticks");
    }

    /// Let every clock run past the "just started" lease (a replica
    /// refuses votes for `ticks_election_min` ticks after it starts, with
    /// check-quorum), throwing away whatever campaigns that causes, then
    /// make `id` campaign and deliver only the election traffic; other
    /// messages are held. `id` is then leader with its no-op uncommitted.
    fn campaign_only(&mut self, id: ReplicaId) {
        let warm_up = self.peers[&id].config.ticks_election_min;
        for _ in 0..warm_up {
            self.tick_all();
        }
        self.pump_all();
        self.queue.clear();
        self.g_mut(id).campaign().expect("voter");
        self.deliver_with(|m, _| match m.body {
            MessageBody::RequestVote { .. } | MessageBody::RequestVoteResponse { .. } => {
                Fate::Deliver
            }
            _ => Fate::Hold,
        });
        assert!(self.g(id).is_leader(), "replica {id} won its election");
    }

    /// Elect `id` and commit its no-op everywhere.
    fn elect(&mut self, id: ReplicaId) {
        self.campaign_only(id);
        self.release(|_| true);
        self.deliver();
        let noop = self.g(id).last_index();
        assert_eq!(self.g(id).commit_index(), noop);
        // Followers learn the commit index with the next heartbeat.
        self.run_until(u64::from(self.peers[&id].config.ticks_heartbeat), |net| {
            net.live().iter().all(|&o| net.g(o).commit_index() == noop)
        });
        assert!(self.g(id).is_leader());
    }

    fn propose(&mut self, id: ReplicaId, data: &str) -> Index {
        self.g_mut(id)
            .propose(Bytes::copy_from_slice(data.as_bytes()))
            .expect("proposal accepted")
    }

    fn crash(&mut self, id: ReplicaId) {
        let peer = self.peers.get_mut(&id).expect("known replica");
        if let Some(group) = peer.group.take() {
            peer.stored = Some(group.store().clone());
        }
        self.queue.retain(|m| m.to != id);
        self.held.retain(|m| m.to != id);
    }

    fn restart(&mut self, id: ReplicaId) {
        let peer = self.peers.get_mut(&id).expect("known replica");
        assert!(peer.group.is_none(), "replica {id} is running");
        let config = Config {
            applied: peer.applied_index,
            ..peer.config.clone()
        };
        let store = peer.stored.take().expect("persisted store");
        peer.group = Some(RaftGroup::new(config, store).expect("restart"));
    }

    fn isolate(&mut self, id: ReplicaId) {
        for &other in self.peers.keys() {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
    }

    fn heal(&mut self) {
        self.cut.clear();
    }

    /// The live leaders.
    fn leaders_now(&self) -> Vec<ReplicaId> {
        self.live()
            .into_iter()
            .filter(|&id| self.g(id).is_leader())
            .collect()
    }

    /// The whole log of `id` after the bootstrap snapshot.
    fn log(&self, id: ReplicaId) -> Vec<Entry> {
        let g = self.g(id);
        g.log_entries(g.first_index(), g.last_index() + 1)
            .expect("log readable")
    }

    /// Payloads of the normal entries `id` applied, with their index.
    fn applied_payloads(&self, id: ReplicaId) -> Vec<(Index, Bytes)> {
        self.peers[&id]
            .applied
            .iter()
            .filter(|e| e.kind == EntryKind::Normal && !e.data.is_empty())
            .map(|e| (e.index, e.data.clone()))
            .collect()
    }

    /// Messages delivered since `mark` (an earlier `delivered.len()`).
    fn delivered_since(&self, mark: usize) -> &[Message] {
        &self.delivered[mark..]
    }
}

fn bytes(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn is_append_rejection(m: &Message) -> bool {
    matches!(m.body, MessageBody::AppendResponse { reject: true, .. })
}

fn basic_raft(config: &mut Config) {
    // The paper's algorithm, without the thesis' pre-vote and
    // check-quorum: elections are driven by hand with `campaign`.
    config.pre_vote = false;
    config.check_quorum = false;
}

/// A lone replica of a 3-voter group, driven by hand.
fn lone(id: ReplicaId, tweak: impl Fn(&mut Config)) -> RaftGroup<MemStore> {
    let mut config = Config::new(id);
    tweak(&mut config);
    RaftGroup::new(config, MemStore::new_with_voters([1, 2, 3])).expect("valid")
}

/// What a test inspects of a Ready after it was handled.
struct Seen {
    soft_state: Option<flotilla_raftgroup::SoftState>,
    hard_state: Option<HardState>,
    messages: Vec<Message>,
    messages_after_persist: Vec<Message>,
}

/// Take a Ready, persist it in the group's own store, and advance.
fn take_ready(g: &mut RaftGroup<MemStore>) -> Seen {
    let ready = g.ready();
    g.store_mut().append(&ready.entries).expect("append");
    if let Some(hs) = ready.hard_state {
        g.store_mut().set_hard_state(hs);
    }
    let seen = Seen {
        soft_state: ready.soft_state,
        hard_state: ready.hard_state,
        messages: ready.messages.clone(),
        messages_after_persist: ready.messages_after_persist.clone(),
    };
    g.advance(ready);
    seen
}

fn vote_request(from: ReplicaId, to: ReplicaId, term: Term, last: (Index, Term)) -> Message {
    Message {
        from,
        to,
        term,
        body: MessageBody::RequestVote {
            pre: false,
            last_index: last.0,
            last_term: last.1,
            transfer: false,
        },
    }
}

fn pre_vote_request(from: ReplicaId, to: ReplicaId, term: Term, last: (Index, Term)) -> Message {
    Message {
        body: MessageBody::RequestVote {
            pre: true,
            last_index: last.0,
            last_term: last.1,
            transfer: false,
        },
        ..vote_request(from, to, term, last)
    }
}

fn vote_response(from: ReplicaId, to: ReplicaId, term: Term, reject: bool) -> Message {
    Message {
        from,
        to,
        term,
        body: MessageBody::RequestVoteResponse { pre: false, reject },
    }
}

/// The single vote answer in a Ready: (to, term, pre, reject).
fn the_vote_answer(ready: &Seen) -> (ReplicaId, Term, bool, bool) {
    assert!(
        ready.messages.is_empty(),
        "a voter's answer waits for persistence"
    );
    let answers: Vec<_> = ready
        .messages_after_persist
        .iter()
        .filter_map(|m| match m.body {
            MessageBody::RequestVoteResponse { pre, reject } => Some((m.to, m.term, pre, reject)),
            _ => None,
        })
        .collect();
    assert_eq!(answers.len(), 1, "one answer: {answers:?}");
    answers[0]
}

fn sim_run(sim: &mut Sim, ticks: u64) {
    if let Err(v) = sim.run_ticks(ticks) {
        panic!("seed {}: {}\n{}", sim.seed, v.0, describe(sim));
    }
}

fn sim_elect(sim: &mut Sim) -> ReplicaId {
    match sim.elect(500) {
        Ok(Some(leader)) => leader,
        Ok(None) => panic!("seed {}: no leader\n{}", sim.seed, describe(sim)),
        Err(v) => panic!("seed {}: {}\n{}", sim.seed, v.0, describe(sim)),
    }
}

// ====================================================================
// 1. Election (§5.2)
// ====================================================================

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

// ====================================================================
// 2. Log replication (§5.3)
// ====================================================================

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

// ====================================================================
// 3. Safety (§5.4)
// ====================================================================

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

// ====================================================================
// 4. Membership changes (single-server, thesis §4.1)
// ====================================================================

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
        sim.cut.insert((leader, v));
        sim.cut.insert((v, leader));
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

// ====================================================================
// 5. Pre-vote: a rejoining replica does not disrupt the leader
// ====================================================================

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

// ====================================================================
// 6. Check-quorum: an isolated leader steps down, its lease ends first
// ====================================================================

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

// ====================================================================
// 7. Snapshots for followers behind the compaction point
// ====================================================================

#[test]
fn snapshot_catches_up_follower_behind_compaction() {
    let mut sim = Sim::new(77, 3, Faults::none());
    let leader = sim_elect(&mut sim);
    sim_run(&mut sim, 5);
    let lagging = (1..=3).find(|&id| id != leader).unwrap();
    sim.isolate(lagging);
    for _ in 0..30 {
        sim.propose(leader);
        sim_run(&mut sim, 1);
    }
    sim_run(&mut sim, 5);
    let lagging_last = sim.group(lagging).unwrap().last_index();
    sim.compact(leader);
    let compacted_to = sim.group(leader).unwrap().first_index() - 1;
    assert_eq!(compacted_to, sim.applied_index(leader));
    assert!(
        compacted_to > lagging_last + 1,
        "the lagging follower needs compacted entries ({lagging_last} vs {compacted_to})"
    );

    let snapshots_before = sim.stats.snapshots_installed;
    sim.heal();
    // The leader keeps taking writes (an idle leader would not catch the
    // follower up at all: see `bug_idle_leader_never_catches_up_rejoined_follower`).
    sim.propose(leader).expect("accepted");
    sim_run(&mut sim, 30);
    assert_eq!(sim.stats.snapshots_installed, snapshots_before + 1);
    let g = sim.group(lagging).unwrap();
    assert_eq!(g.first_index(), compacted_to + 1, "installed the snapshot");
    assert_eq!(g.last_index(), sim.group(leader).unwrap().last_index());
    assert_eq!(sim.applied_payloads(lagging), sim.applied_payloads(leader));
    assert_eq!(sim.applied_payloads(lagging).len(), 31);

    // Then it catches up by log: no further snapshot.
    for _ in 0..5 {
        sim.propose(leader);
        sim_run(&mut sim, 2);
    }
    sim_run(&mut sim, 10);
    let g = sim.group(lagging).unwrap();
    assert_eq!(sim.stats.snapshots_installed, snapshots_before + 1);
    assert_eq!(g.first_index(), compacted_to + 1);
    assert_eq!(g.last_index(), sim.group(leader).unwrap().last_index());
    assert_eq!(sim.applied_payloads(lagging), sim.applied_payloads(leader));
    assert_eq!(sim.applied_payloads(lagging).len(), 36);
}

// ====================================================================
// 8. Leadership transfer (thesis §3.10)
// ====================================================================

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

// ====================================================================
// 9. ReadIndex (thesis §6.4)
// ====================================================================

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

// ====================================================================
// 10. Quiescence
// ====================================================================

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

// ====================================================================
// Known bug: an idle leader does not catch a follower up
// ====================================================================

/// A follower cut off while the leader streamed entries (Replicate state,
/// `next` advanced optimistically over lost appends) rejoins an idle
/// group: heartbeats flow both ways, yet it is never caught up.
#[test]
fn idle_leader_catches_up_rejoined_follower() {
    let mut sim = Sim::new(77, 3, Faults::none());
    let leader = sim_elect(&mut sim);
    sim_run(&mut sim, 5);
    let lagging = (1..=3).find(|&id| id != leader).unwrap();
    sim.isolate(lagging);
    for _ in 0..10 {
        sim.propose(leader);
        sim_run(&mut sim, 1);
    }
    sim_run(&mut sim, 5);
    sim.heal();
    // Ten election timeouts, no new proposal.
    sim_run(&mut sim, 200);
    assert_eq!(
        sim.group(lagging).unwrap().last_index(),
        sim.group(leader).unwrap().last_index()
    );
    assert_eq!(sim.applied_payloads(lagging), sim.applied_payloads(leader));
}

/// A learner added to an idle group: the leader's progress for it starts
/// at `next = last_index + 1` (Probe), so the heartbeat answers trigger no
/// probe, the leader never learns it needs a snapshot, and it never
/// catches up.
#[test]
fn idle_leader_catches_up_new_learner() {
    let mut sim = Sim::new(4242, 3, Faults::none());
    let leader = sim_elect(&mut sim);
    for _ in 0..5 {
        sim.propose(leader);
        sim_run(&mut sim, 1);
    }
    sim_run(&mut sim, 10);
    let learner = sim.add_learner().expect("accepted");
    sim_run(&mut sim, 200);
    assert_eq!(
        sim.group(learner).unwrap().conf_state().learners,
        vec![learner]
    );
    assert_eq!(sim.applied_payloads(learner), sim.applied_payloads(leader));
}
