//! The harness shared by the scenario modules: [`Net`], a scripted
//! in-memory network, small message builders, and helpers over the
//! seeded simulator of `tests/common`. The imports every scenario needs
//! are re-exported, so a module starts with `use crate::net::*;`.

pub use std::collections::{BTreeMap, BTreeSet};

pub use crate::common::{describe, Faults, Sim};
pub use bytes::Bytes;
pub use flotilla_raftgroup::{
    ConfChange, ConfChangeError, Config, ElectionEvents, Entry, EntryKind, Error, HardState, Index,
    LogStore, MemStore, Message, MessageBody, RaftGroup, ReadState, ReplicaId, Role, Term,
    BOOTSTRAP_INDEX, BOOTSTRAP_TERM,
};

// ====================================================================
// Net: a scripted in-memory network
// ====================================================================

/// What happens to one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Deliver,
    Drop,
    /// Keep it aside; [`Net::release`] puts it back on the wire.
    Hold,
}

pub struct Peer {
    pub group: Option<RaftGroup<MemStore>>,
    /// The persisted store while crashed.
    pub stored: Option<MemStore>,
    pub config: Config,
    /// The state machine: every entry applied, in order (kept on crash,
    /// as a durable state machine would be).
    pub applied: Vec<Entry>,
    pub applied_index: Index,
    pub snapshots_installed: u64,
    pub read_states: Vec<ReadState>,
    pub reads_dropped: Vec<Bytes>,
    /// Election events summed over every Ready.
    pub elections: ElectionEvents,
    /// The hard state of the last Ready that carried one.
    pub last_hard_state: HardState,
}

pub struct Net {
    pub peers: BTreeMap<ReplicaId, Peer>,
    pub queue: Vec<Message>,
    pub held: Vec<Message>,
    /// Directed links that drop everything.
    pub cut: BTreeSet<(ReplicaId, ReplicaId)>,
    /// Every message stepped into a replica, in order.
    pub delivered: Vec<Message>,
    /// (term, replica) each time a replica became leader.
    pub leaders: Vec<(Term, ReplicaId)>,
}

impl Net {
    /// Replicas 1..=n, all voters, default config adjusted by `tweak`.
    pub fn new(n: u64, tweak: impl Fn(&mut Config)) -> Net {
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

    pub fn is_live(&self, id: ReplicaId) -> bool {
        self.peers.get(&id).is_some_and(|p| p.group.is_some())
    }

    pub fn live(&self) -> Vec<ReplicaId> {
        self.peers
            .iter()
            .filter(|(_, p)| p.group.is_some())
            .map(|(&id, _)| id)
            .collect()
    }

    pub fn g(&self, id: ReplicaId) -> &RaftGroup<MemStore> {
        self.peers[&id].group.as_ref().expect("replica is live")
    }

    pub fn g_mut(&mut self, id: ReplicaId) -> &mut RaftGroup<MemStore> {
        self.peers
            .get_mut(&id)
            .and_then(|p| p.group.as_mut())
            .expect("replica is live")
    }

    /// Handle every Ready of `id`: persist, queue messages, apply.
    pub fn pump(&mut self, id: ReplicaId) {
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

    pub fn pump_all(&mut self) {
        for id in self.live() {
            self.pump(id);
        }
    }

    /// Step every queued message once (no pumping).
    pub fn step_queue(&mut self, fate: &mut impl FnMut(&Message, &Net) -> Fate) {
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
    pub fn deliver_with(&mut self, mut fate: impl FnMut(&Message, &Net) -> Fate) {
        for _ in 0..10_000 {
            self.pump_all();
            if self.queue.is_empty() {
                return;
            }
            self.step_queue(&mut fate);
        }
        panic!("the network never went quiet");
    }

    pub fn deliver(&mut self) {
        self.deliver_with(|_, _| Fate::Deliver);
    }

    /// Put held messages matching `which` back on the wire.
    pub fn release(&mut self, which: impl Fn(&Message) -> bool) {
        let (back, keep): (Vec<Message>, Vec<Message>) =
            std::mem::take(&mut self.held).into_iter().partition(which);
        self.held = keep;
        self.queue.extend(back);
    }

    pub fn tick_all(&mut self) {
        for id in self.live() {
            self.g_mut(id).tick();
        }
    }

    /// `ticks` ticks of every live replica, delivering everything.
    pub fn run(&mut self, ticks: u64) {
        for _ in 0..ticks {
            self.tick_all();
            self.deliver();
        }
    }

    /// Tick (delivering everything) until `done` holds; returns the ticks
    /// it took, or panics after `ticks_max`.
    pub fn run_until(&mut self, ticks_max: u64, done: impl Fn(&Net) -> bool) -> u64 {
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
    pub fn campaign_only(&mut self, id: ReplicaId) {
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
    pub fn elect(&mut self, id: ReplicaId) {
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

    pub fn propose(&mut self, id: ReplicaId, data: &str) -> Index {
        self.g_mut(id)
            .propose(Bytes::copy_from_slice(data.as_bytes()))
            .expect("proposal accepted")
    }

    pub fn crash(&mut self, id: ReplicaId) {
        let peer = self.peers.get_mut(&id).expect("known replica");
        if let Some(group) = peer.group.take() {
            peer.stored = Some(group.store().clone());
        }
        self.queue.retain(|m| m.to != id);
        self.held.retain(|m| m.to != id);
    }

    pub fn restart(&mut self, id: ReplicaId) {
        let peer = self.peers.get_mut(&id).expect("known replica");
        assert!(peer.group.is_none(), "replica {id} is running");
        let config = Config {
            applied: peer.applied_index,
            ..peer.config.clone()
        };
        let store = peer.stored.take().expect("persisted store");
        peer.group = Some(RaftGroup::new(config, store).expect("restart"));
    }

    pub fn isolate(&mut self, id: ReplicaId) {
        for &other in self.peers.keys() {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// The live leaders.
    pub fn leaders_now(&self) -> Vec<ReplicaId> {
        self.live()
            .into_iter()
            .filter(|&id| self.g(id).is_leader())
            .collect()
    }

    /// The whole log of `id` after the bootstrap snapshot.
    pub fn log(&self, id: ReplicaId) -> Vec<Entry> {
        let g = self.g(id);
        g.log_entries(g.first_index(), g.last_index() + 1)
            .expect("log readable")
    }

    /// Payloads of the normal entries `id` applied, with their index.
    pub fn applied_payloads(&self, id: ReplicaId) -> Vec<(Index, Bytes)> {
        self.peers[&id]
            .applied
            .iter()
            .filter(|e| e.kind == EntryKind::Normal && !e.data.is_empty())
            .map(|e| (e.index, e.data.clone()))
            .collect()
    }

    /// Messages delivered since `mark` (an earlier `delivered.len()`).
    pub fn delivered_since(&self, mark: usize) -> &[Message] {
        &self.delivered[mark..]
    }
}

pub fn bytes(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

pub fn is_append_rejection(m: &Message) -> bool {
    matches!(m.body, MessageBody::AppendResponse { reject: true, .. })
}

pub fn basic_raft(config: &mut Config) {
    // The paper's algorithm, without the thesis' pre-vote and
    // check-quorum: elections are driven by hand with `campaign`.
    config.pre_vote = false;
    config.check_quorum = false;
}

/// A lone replica of a 3-voter group, driven by hand.
pub fn lone(id: ReplicaId, tweak: impl Fn(&mut Config)) -> RaftGroup<MemStore> {
    let mut config = Config::new(id);
    tweak(&mut config);
    RaftGroup::new(config, MemStore::new_with_voters([1, 2, 3])).expect("valid")
}

/// What a test inspects of a Ready after it was handled.
pub struct Seen {
    pub soft_state: Option<flotilla_raftgroup::SoftState>,
    pub hard_state: Option<HardState>,
    pub messages: Vec<Message>,
    pub messages_after_persist: Vec<Message>,
}

/// Take a Ready, persist it in the group's own store, and advance.
pub fn take_ready(g: &mut RaftGroup<MemStore>) -> Seen {
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

pub fn vote_request(from: ReplicaId, to: ReplicaId, term: Term, last: (Index, Term)) -> Message {
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

pub fn pre_vote_request(
    from: ReplicaId,
    to: ReplicaId,
    term: Term,
    last: (Index, Term),
) -> Message {
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

pub fn vote_response(from: ReplicaId, to: ReplicaId, term: Term, reject: bool) -> Message {
    Message {
        from,
        to,
        term,
        body: MessageBody::RequestVoteResponse { pre: false, reject },
    }
}

/// The single vote answer in a Ready: (to, term, pre, reject).
pub fn the_vote_answer(ready: &Seen) -> (ReplicaId, Term, bool, bool) {
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

pub fn sim_run(sim: &mut Sim, ticks: u64) {
    if let Err(v) = sim.run_ticks(ticks) {
        panic!("seed {}: {}\n{}", sim.seed, v.0, describe(sim));
    }
}

pub fn sim_elect(sim: &mut Sim) -> ReplicaId {
    match sim.elect(500) {
        Ok(Some(leader)) => leader,
        Ok(None) => panic!("seed {}: no leader\n{}", sim.seed, describe(sim)),
        Err(v) => panic!("seed {}: {}\n{}", sim.seed, v.0, describe(sim)),
    }
}
