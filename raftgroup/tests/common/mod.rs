//! A deterministic simulator of one Raft group: replicas with their own
//! clocks, a lossy network that can hold messages for several election
//! timeouts, crashes at any point of a Ready that keep only what was
//! durable, pauses, lagging apply, and the invariant checks.
//!
//! Everything random comes from one seeded generator, so a seed replays a
//! run exactly. The simulator never reads a clock: time is simulated real
//! time ([`TICK`] per nominal tick), and each replica's ticks fall where its
//! own clock puts them.
//!
//! Modules: `rng` (the generator), `sm` (the state machine), `net` (the
//! network), `faults` (the fault model and the engine's policies),
//! `invariants` (the checks). This file drives them.

#![allow(dead_code)]

pub mod faults;
pub mod invariants;
pub mod net;
pub mod rng;
pub mod sm;

use std::collections::{BTreeMap, HashMap, VecDeque};

use bytes::Bytes;
use flotilla_raftgroup::{
    ConfChange, ConfState, Config, Entry, EntryKind, HardState, Index, MemStore, Message,
    MessageBody, RaftGroup, ReplicaId, Role, BOOTSTRAP_INDEX,
};

#[allow(unused_imports)]
pub use faults::{lease_interval_max, Clock, CrashPoint, EngineModel, Faults};
pub use invariants::{Checker, Violation};
pub use net::{Network, TICK};
pub use rng::Rng;
pub use sm::{payload, StateMachine};

/// (read id, index): a read confirmed at `index`, served once applied.
pub type ConfirmedRead = (u64, Index);

/// One simulated node hosting one replica of the group.
pub struct Node {
    pub id: ReplicaId,
    /// `None` while crashed.
    pub group: Option<RaftGroup<MemStore>>,
    /// What survived the last crash (while crashed).
    pub stored: Option<MemStore>,
    /// The durable state machine.
    pub sm: StateMachine,
    pub removed: bool,
    pub clock: Clock,
    /// Stopped (no ticks, no messages, no work) until then.
    pub paused_until: Option<u64>,
    /// The engine's tick-gap detector: no lease is trusted before then.
    pub lease_blocked_until: u64,
    /// The hard state as of the last synced write: a crash may lose what
    /// was written after it without a sync.
    pub durable_hard_state: HardState,
    /// Apply lags: committed entries wait here (the engine's held entries).
    pub lag_apply: bool,
    /// Longest wait before the next batch of queued entries applies.
    pub apply_delay_max: u64,
    pub apply_queue: VecDeque<Entry>,
    pub next_apply_at: u64,
    /// Reads confirmed, served once their index is applied.
    pub confirmed_reads: Vec<ConfirmedRead>,
}

impl Node {
    fn running(&self) -> bool {
        self.group.is_some() && !self.removed && self.paused_until.is_none()
    }
}

/// What a run exercised, to show the simulator reaches the hard cases.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub crashes: u64,
    pub crashes_mid_ready: u64,
    pub crashes_torn: u64,
    pub unsynced_lost: u64,
    pub snapshots_installed: u64,
    pub conf_changes_applied: u64,
    pub leaders_elected: u64,
    /// Elections won by a replica whose clock runs faster than the
    /// previous leader's (the direction that threatens a lease).
    pub skewed_elections: u64,
    /// Campaigns started while the candidate had committed entries it had
    /// not applied yet.
    pub lagging_apply_campaigns: u64,
    pub messages_delivered: u64,
    pub messages_dropped: u64,
    pub messages_delayed_long: u64,
    pub quiesces: u64,
    pub pauses: u64,
    pub lease_reads: u64,
    pub read_index_reads: u64,
    pub deferred_applies: u64,
}

impl Stats {
    pub fn add(&mut self, other: &Stats) {
        self.crashes += other.crashes;
        self.crashes_mid_ready += other.crashes_mid_ready;
        self.crashes_torn += other.crashes_torn;
        self.unsynced_lost += other.unsynced_lost;
        self.snapshots_installed += other.snapshots_installed;
        self.conf_changes_applied += other.conf_changes_applied;
        self.leaders_elected += other.leaders_elected;
        self.skewed_elections += other.skewed_elections;
        self.lagging_apply_campaigns += other.lagging_apply_campaigns;
        self.messages_delivered += other.messages_delivered;
        self.messages_dropped += other.messages_dropped;
        self.messages_delayed_long += other.messages_delayed_long;
        self.quiesces += other.quiesces;
        self.pauses += other.pauses;
        self.lease_reads += other.lease_reads;
        self.read_index_reads += other.read_index_reads;
        self.deferred_applies += other.deferred_applies;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadKind {
    Lease,
    ReadIndex,
}

/// A read in progress, and what it must see.
#[derive(Clone, Debug)]
struct ReadRecord {
    kind: ReadKind,
    node: ReplicaId,
    /// The highest commit index anywhere when the read began (in real
    /// time): a linearizable read must return at least this state.
    required: Index,
}

pub struct Sim {
    pub rng: Rng,
    pub seed: u64,
    pub nodes: BTreeMap<ReplicaId, Node>,
    pub net: Network,
    pub faults: Faults,
    pub engine: EngineModel,
    /// Simulated real time.
    pub now: u64,
    pub next_replica_id: ReplicaId,
    next_proposal: u64,
    next_read: u64,
    pub checker: Checker,
    /// proposal id -> (proposer, index).
    proposals: HashMap<u64, (ReplicaId, Index)>,
    /// Highest index of a write acknowledged to its client.
    pub max_acked_index: Index,
    pub acked_writes: u64,
    reads: HashMap<u64, ReadRecord>,
    pub steps: u64,
    pub stats: Stats,
    pub config_template: Config,
    /// Tick interval range of new replicas; `None`: lockstep.
    pub clock_range: Option<(u64, u64)>,
    /// Each replica ticks at one end of `clock_range` exactly.
    pub two_speeds: bool,
    /// Chance that a new replica applies late.
    pub lag_apply_percent: u64,
    /// Leaders quiesce after every tick when idle, as the engine's do.
    pub auto_quiesce: bool,
    /// `EngineModel::SkipsQuiesced`: chance that a peer-down report wakes
    /// a group the lost peer led.
    pub peer_down_wake_percent: u64,
    last_leader: Option<ReplicaId>,
}

impl Sim {
    /// A group of `voters` replicas with ids 1..=voters, lockstep clocks.
    pub fn new(seed: u64, voters: u64, faults: Faults) -> Sim {
        Self::with_config(seed, voters, faults, Config::default())
    }

    pub fn with_config(seed: u64, voters: u64, faults: Faults, config_template: Config) -> Sim {
        let mut sim = Sim {
            rng: Rng::new(seed),
            seed,
            nodes: BTreeMap::new(),
            net: Network::default(),
            faults,
            engine: EngineModel::TicksQuiesced,
            now: 0,
            next_replica_id: voters + 1,
            next_proposal: 1,
            next_read: 1,
            checker: Checker::new(ConfState::with_voters(1..=voters), BOOTSTRAP_INDEX),
            proposals: HashMap::new(),
            max_acked_index: 0,
            acked_writes: 0,
            reads: HashMap::new(),
            steps: 0,
            stats: Stats::default(),
            config_template,
            clock_range: None,
            two_speeds: false,
            lag_apply_percent: 0,
            auto_quiesce: false,
            peer_down_wake_percent: 100,
            last_leader: None,
        };
        for id in 1..=voters {
            let store = MemStore::new_with_voters(1..=voters);
            sim.add_node(id, store);
            if let Some(node) = sim.nodes.get_mut(&id) {
                node.sm.applied = BOOTSTRAP_INDEX;
            }
        }
        sim
    }

    /// Give every replica a clock whose tick interval lies in
    /// `[interval_min, interval_max]`, each out of step with the others.
    pub fn set_clocks(&mut self, interval_min: u64, interval_max: u64) {
        self.clock_range = Some((interval_min, interval_max));
        let ids: Vec<ReplicaId> = self.nodes.keys().copied().collect();
        for id in ids {
            let clock = self.new_clock();
            if let Some(node) = self.nodes.get_mut(&id) {
                node.clock = clock;
            }
        }
    }

    /// Give every replica a clock that ticks exactly every `fast` or every
    /// `slow` (at random): the worst case for a lease is a slow leader
    /// among fast voters.
    pub fn set_clocks_two_speeds(&mut self, fast: u64, slow: u64) {
        self.clock_range = Some((fast, slow));
        self.two_speeds = true;
        let ids: Vec<ReplicaId> = self.nodes.keys().copied().collect();
        for id in ids {
            let clock = self.new_clock();
            if let Some(node) = self.nodes.get_mut(&id) {
                node.clock = clock;
            }
        }
    }

    /// A clock for a new replica: its own rate range inside the sim's.
    fn new_clock(&mut self) -> Clock {
        match self.clock_range {
            None => Clock::lockstep(self.now - self.now % TICK),
            Some((low, high)) if self.two_speeds => {
                let interval = if self.rng.chance(50) { low } else { high };
                Clock::new(interval, interval, self.now, &mut self.rng)
            }
            Some((low, high)) => {
                let a = self.rng.between(low, high);
                let b = self.rng.between(low, high);
                Clock::new(a.min(b), a.max(b), self.now, &mut self.rng)
            }
        }
    }

    /// Make apply lag on every replica (and on those added later).
    pub fn set_lagging_apply(&mut self, percent: u64) {
        self.lag_apply_percent = percent;
        let ids: Vec<ReplicaId> = self.nodes.keys().copied().collect();
        for id in ids {
            let lag = self.rng.chance(percent);
            let delay = self.rng.between(1, 3 * TICK * 20);
            if let Some(node) = self.nodes.get_mut(&id) {
                node.lag_apply = lag;
                node.apply_delay_max = delay;
            }
        }
    }

    fn config_for(&self, id: ReplicaId, applied: Index) -> Config {
        Config {
            id,
            applied,
            seed: self
                .seed
                .wrapping_mul(31)
                .wrapping_add(id)
                .wrapping_add(self.now),
            ..self.config_template.clone()
        }
    }

    fn add_node(&mut self, id: ReplicaId, store: MemStore) {
        let config = self.config_for(id, 0);
        let durable_hard_state = store.hard_state();
        let group = RaftGroup::new(config, store).expect("valid config");
        let clock = self.new_clock();
        let lag_apply = self.rng.chance(self.lag_apply_percent);
        let apply_delay_max = self.rng.between(1, 3 * TICK * 20);
        self.nodes.insert(
            id,
            Node {
                id,
                group: Some(group),
                stored: None,
                sm: StateMachine::default(),
                removed: false,
                clock,
                paused_until: None,
                lease_blocked_until: 0,
                durable_hard_state,
                lag_apply,
                apply_delay_max,
                apply_queue: VecDeque::new(),
                next_apply_at: 0,
                confirmed_reads: Vec::new(),
            },
        );
    }

    /// Replicas that are up (running or paused) and members.
    pub fn live_ids(&self) -> Vec<ReplicaId> {
        self.nodes
            .values()
            .filter(|n| n.group.is_some() && !n.removed)
            .map(|n| n.id)
            .collect()
    }

    /// Live replicas that are not paused.
    pub fn running_ids(&self) -> Vec<ReplicaId> {
        self.nodes
            .values()
            .filter(|n| n.running())
            .map(|n| n.id)
            .collect()
    }

    pub fn crashed_ids(&self) -> Vec<ReplicaId> {
        self.nodes
            .values()
            .filter(|n| n.group.is_none() && !n.removed)
            .map(|n| n.id)
            .collect()
    }

    pub fn paused_ids(&self) -> Vec<ReplicaId> {
        self.nodes
            .values()
            .filter(|n| n.group.is_some() && !n.removed && n.paused_until.is_some())
            .map(|n| n.id)
            .collect()
    }

    fn is_running(&self, id: ReplicaId) -> bool {
        self.nodes.get(&id).is_some_and(|n| n.running())
    }

    pub fn group(&self, id: ReplicaId) -> Option<&RaftGroup<MemStore>> {
        self.nodes.get(&id).and_then(|n| n.group.as_ref())
    }

    pub fn group_mut(&mut self, id: ReplicaId) -> Option<&mut RaftGroup<MemStore>> {
        self.nodes.get_mut(&id).and_then(|n| n.group.as_mut())
    }

    /// The running leader with the highest term, if any.
    pub fn leader(&self) -> Option<ReplicaId> {
        self.running_ids()
            .into_iter()
            .filter_map(|id| {
                self.group(id)
                    .filter(|g| g.is_leader())
                    .map(|g| (g.term(), id))
            })
            .max()
            .map(|(_, id)| id)
    }

    // ------------------------------------------------------------ faults

    /// Quiesce the leader if the group is idle.
    pub fn quiesce_leader(&mut self) -> bool {
        let quiesced = match self.leader() {
            Some(leader) => self.group_mut(leader).is_some_and(|g| g.quiesce()),
            None => false,
        };
        if quiesced {
            self.stats.quiesces += 1;
        }
        quiesced
    }

    /// Wake every replica (a test's hand, not the engine's).
    pub fn wake_all(&mut self) {
        for id in self.live_ids() {
            if let Some(g) = self.group_mut(id) {
                g.wake_up();
            }
        }
    }

    /// The transport reports `down` unreachable. The engine wakes the
    /// groups it led, but the report is lossy (`peer_down_wake_percent`);
    /// under the core's contract nothing is woken from outside.
    pub fn peer_down(&mut self, down: ReplicaId) {
        if self.engine != EngineModel::SkipsQuiesced {
            return;
        }
        for id in self.live_ids() {
            if id == down || !self.rng.chance(self.peer_down_wake_percent) {
                continue;
            }
            if let Some(g) = self.group_mut(id) {
                if g.leader() == down {
                    g.wake_up();
                }
            }
        }
    }

    /// Crash a node: what was not durable is lost (unsynced writes with
    /// `lose_unsynced_percent`), and so are its queued applies and reads.
    pub fn crash(&mut self, id: ReplicaId) {
        let lose = self.rng.chance(self.faults.lose_unsynced_percent);
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        if let Some(group) = node.group.take() {
            self.stats.crashes += 1;
            self.checker.note_commit(group.commit_index());
            let mut store = group.store().clone();
            if lose && store.hard_state() != node.durable_hard_state {
                store.set_hard_state(node.durable_hard_state);
                self.stats.unsynced_lost += 1;
            }
            node.stored = Some(store);
        }
        node.apply_queue.clear();
        node.paused_until = None;
        for (read, _) in std::mem::take(&mut node.confirmed_reads) {
            self.reads.remove(&read);
        }
        self.reads.retain(|_, r| r.node != id);
        // Messages it sent are still in flight (they left the machine);
        // those addressed to it are lost with it, and a snapshot sender
        // learns of the failure (as the transport would tell it).
        for m in self.net.remove_to(id) {
            if matches!(m.body, MessageBody::InstallSnapshot { .. }) {
                if let Some(g) = self.group_mut(m.from) {
                    g.report_snapshot(id, false);
                }
            }
        }
        self.peer_down(id);
    }

    pub fn restart(&mut self, id: ReplicaId) {
        let applied = match self.nodes.get(&id) {
            Some(node) if node.group.is_none() && !node.removed => node.sm.applied,
            _ => return,
        };
        let config = self.config_for(id, applied);
        let now = self.now;
        let node = self.nodes.get_mut(&id).expect("checked above");
        let store = node.stored.take().unwrap_or_default();
        node.durable_hard_state = store.hard_state();
        node.group = Some(RaftGroup::new(config, store).expect("restart from persisted state"));
        node.clock.restart_at(now, &mut self.rng);
        node.lease_blocked_until = 0;
    }

    /// Stop a node (SIGSTOP, a VM pause) for `duration` of real time: no
    /// ticks, no messages handled, no work; it resumes where it was.
    pub fn pause(&mut self, id: ReplicaId, duration: u64) {
        let now = self.now;
        if let Some(node) = self.nodes.get_mut(&id) {
            if node.running() {
                node.paused_until = Some(now + duration.max(1));
                self.stats.pauses += 1;
            }
        }
    }

    fn resume(&mut self, id: ReplicaId) {
        let now = self.now;
        let emax = u64::from(self.config_template.ticks_election_max);
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        node.paused_until = None;
        // The engine's detector: after a gap of more than two ticks, no
        // lease is trusted for an election timeout of real time.
        if now - node.clock.last_tick_at > 2 * TICK {
            node.lease_blocked_until = now + emax * TICK;
        }
        node.clock.restart_at(now, &mut self.rng);
        node.next_apply_at = node.next_apply_at.max(now);
    }

    /// Split the nodes in two random sides; nothing crosses.
    pub fn partition_random(&mut self) {
        let ids: Vec<ReplicaId> = self.nodes.keys().copied().collect();
        self.net.partition_random(&ids, &mut self.rng);
        for id in ids {
            self.peer_down(id);
        }
    }

    /// Cut one direction of one link.
    pub fn cut_one_way(&mut self, from: ReplicaId, to: ReplicaId) {
        self.net.cut.insert((from, to));
    }

    /// Isolate one node in both directions.
    pub fn isolate(&mut self, id: ReplicaId) {
        let ids: Vec<ReplicaId> = self.nodes.keys().copied().collect();
        self.net.isolate(id, &ids);
        self.peer_down(id);
    }

    pub fn heal(&mut self) {
        self.net.heal();
    }

    // ----------------------------------------------------------- actions

    /// Can a client request at `id` reach its Raft group? The engine
    /// answers `NotLeader` on a follower before calling into Raft.
    fn request_reaches(&self, id: ReplicaId) -> bool {
        self.is_running(id)
            && (self.engine != EngineModel::SkipsQuiesced
                || self.group(id).is_some_and(|g| g.is_leader()))
    }

    /// Propose a fresh payload at `id`. Returns its proposal id if accepted.
    pub fn propose(&mut self, id: ReplicaId) -> Option<u64> {
        if !self.request_reaches(id) {
            return None;
        }
        let proposal = self.next_proposal;
        let group = self.group_mut(id)?;
        match group.propose(payload(proposal)) {
            Ok(index) => {
                self.next_proposal += 1;
                self.proposals.insert(proposal, (id, index));
                Some(proposal)
            }
            Err(_) => None,
        }
    }

    /// The highest commit index anywhere, now.
    pub fn max_commit_now(&mut self) -> Index {
        for node in self.nodes.values() {
            if let Some(g) = &node.group {
                self.checker.note_commit(g.commit_index());
            }
        }
        self.checker.max_commit
    }

    /// Start a ReadIndex read at `id`.
    pub fn read(&mut self, id: ReplicaId) -> bool {
        if !self.request_reaches(id) {
            return false;
        }
        let read = self.next_read;
        let required = self.max_commit_now();
        let Some(group) = self.group_mut(id) else {
            return false;
        };
        if group
            .read_index(Bytes::from(read.to_le_bytes().to_vec()))
            .is_ok()
        {
            self.next_read += 1;
            self.reads.insert(
                read,
                ReadRecord {
                    kind: ReadKind::ReadIndex,
                    node: id,
                    required,
                },
            );
            true
        } else {
            false
        }
    }

    /// A read in lease mode at `id`, as the engine serves it: the lease if
    /// the tick-gap detector trusts it and the core grants it, ReadIndex
    /// otherwise. The read must return a state at least as new as every
    /// commit anywhere before it began.
    pub fn lease_read(&mut self, id: ReplicaId) -> Result<bool, Violation> {
        if !self.is_running(id) || !self.group(id).is_some_and(|g| g.is_leader()) {
            return Ok(false);
        }
        let required = self.max_commit_now();
        let now = self.now;
        let node = self.nodes.get_mut(&id).expect("running");
        let group = node.group.as_ref().expect("running");
        let lease = if now >= node.lease_blocked_until {
            group.lease_read_index()
        } else {
            None
        };
        let Some(index) = lease else {
            return Ok(self.read(id));
        };
        if index < required {
            return Err(Violation(format!(
                "lease read on leader {id} (term {}) at index {index}, but index {required} was committed before the read began",
                group.term()
            )));
        }
        let read = self.next_read;
        self.next_read += 1;
        node.confirmed_reads.push((read, index));
        self.reads.insert(
            read,
            ReadRecord {
                kind: ReadKind::Lease,
                node: id,
                required,
            },
        );
        self.serve_reads(id)?;
        Ok(true)
    }

    /// Add a new learner (fresh replica id) through the leader.
    pub fn add_learner(&mut self) -> Option<ReplicaId> {
        let leader = self.leader()?;
        let id = self.next_replica_id;
        self.group_mut(leader)?
            .propose_conf_change(ConfChange::AddLearner(id))
            .ok()?;
        self.next_replica_id += 1;
        // The new replica starts empty: it learns the group from the leader.
        self.add_node(id, MemStore::default());
        Some(id)
    }

    pub fn conf_change(&mut self, change: ConfChange) -> bool {
        let Some(leader) = self.leader() else {
            return false;
        };
        self.group_mut(leader)
            .map(|g| g.propose_conf_change(change).is_ok())
            .unwrap_or(false)
    }

    pub fn transfer(&mut self, target: ReplicaId) -> bool {
        let Some(leader) = self.leader() else {
            return false;
        };
        self.group_mut(leader)
            .map(|g| g.transfer_leader(target).is_ok())
            .unwrap_or(false)
    }

    /// Compact `id`'s log up to what it applied.
    pub fn compact(&mut self, id: ReplicaId) -> Result<(), Violation> {
        self.compact_at(id, false)
    }

    /// Compact `id`'s log, mostly up to what it applied, sometimes to an
    /// earlier index.
    pub fn compact_random(&mut self, id: ReplicaId) -> Result<(), Violation> {
        let earlier = self.rng.chance(30);
        self.compact_at(id, earlier)
    }

    /// Compact up to what `id` applied or (`earlier`) to a random index
    /// before it. The snapshot must carry the configuration of its own
    /// index.
    fn compact_at(&mut self, id: ReplicaId, earlier: bool) -> Result<(), Violation> {
        if !self.is_running(id) {
            return Ok(());
        }
        let node = self.nodes.get_mut(&id).expect("running");
        let applied = node.sm.applied;
        let group = node.group.as_mut().expect("running");
        if applied == 0 || applied != group.applied_index() {
            return Ok(());
        }
        let first = group.first_index();
        let mut index = applied;
        if earlier && applied > first {
            index = first + self.rng.below(applied - first);
        }
        let mut result = group.compact(index, node.sm.at(index).encode());
        if result.is_err() && index != applied {
            result = group.compact(applied, node.sm.encode());
        }
        if result.is_ok() {
            let snapshot = group.store().last_snapshot().clone();
            self.checker.check_snapshot(id, &snapshot)?;
        }
        Ok(())
    }

    // ----------------------------------------------------- time, events

    /// One nominal tick of real time.
    pub fn tick_all(&mut self) -> Result<(), Violation> {
        self.advance_to(self.now + TICK)
    }

    /// Advance real time by `duration`, handling every tick, delivery and
    /// apply in time order, then check every invariant.
    pub fn advance_by(&mut self, duration: u64) -> Result<(), Violation> {
        self.advance_to(self.now + duration)
    }

    pub fn advance_to(&mut self, until: u64) -> Result<(), Violation> {
        loop {
            self.process_readies()?;
            match self.next_event() {
                Some(at) if at <= until => {
                    self.now = self.now.max(at);
                    self.run_events()?;
                    self.process_readies()?;
                    self.check_leaders()?;
                }
                _ => break,
            }
        }
        self.now = self.now.max(until);
        self.check()
    }

    fn next_event(&self) -> Option<u64> {
        let mut next: Option<u64> = None;
        let mut earliest = |t: u64| next = Some(next.map_or(t, |n: u64| n.min(t)));
        for node in self.nodes.values() {
            if node.group.is_none() || node.removed {
                continue;
            }
            if let Some(until) = node.paused_until {
                earliest(until);
                continue;
            }
            earliest(node.clock.next_tick_at);
            if node.lag_apply && !node.apply_queue.is_empty() {
                earliest(node.next_apply_at);
            }
        }
        let nodes = &self.nodes;
        if let Some(t) = self.net.next_due(|to| !is_paused(nodes, to)) {
            earliest(t);
        }
        next
    }

    fn run_events(&mut self) -> Result<(), Violation> {
        let now = self.now;
        let resumed: Vec<ReplicaId> = self
            .nodes
            .values()
            .filter(|n| n.paused_until.is_some_and(|t| t <= now))
            .map(|n| n.id)
            .collect();
        for id in resumed {
            self.resume(id);
        }
        for id in self.running_ids() {
            if self.is_running(id) && self.nodes[&id].clock.next_tick_at <= now {
                self.tick_node(id);
            }
        }
        let nodes = &self.nodes;
        let due = self
            .net
            .take_due(now, |to| !is_paused(nodes, to), &mut self.rng);
        for message in due {
            self.deliver(message)?;
        }
        for id in self.running_ids() {
            let node = &self.nodes[&id];
            if node.running()
                && node.lag_apply
                && !node.apply_queue.is_empty()
                && node.next_apply_at <= now
            {
                self.apply_some(id)?;
            }
        }
        Ok(())
    }

    /// The node's ticker fires: the engine ticks the group (unless its
    /// model skips quiesced groups) and quiesces an idle leader.
    fn tick_node(&mut self, id: ReplicaId) {
        let skip_quiesced = self.engine == EngineModel::SkipsQuiesced;
        let auto_quiesce = self.auto_quiesce;
        let node = self.nodes.get_mut(&id).expect("running");
        node.clock.ticked(&mut self.rng);
        let Some(group) = node.group.as_mut() else {
            return;
        };
        if skip_quiesced && group.is_quiescent() {
            return;
        }
        group.tick();
        if auto_quiesce && group.is_leader() && !group.is_quiescent() && group.quiesce() {
            self.stats.quiesces += 1;
        }
    }

    fn deliver(&mut self, message: Message) -> Result<(), Violation> {
        let (from, to) = (message.from, message.to);
        let is_snapshot = matches!(message.body, MessageBody::InstallSnapshot { .. });
        let lost = self.net.is_cut(from, to)
            || !self.is_running(to)
            || self.rng.chance(self.faults.drop_percent);
        if lost {
            self.stats.messages_dropped += 1;
            if is_snapshot {
                if let Some(g) = self.group_mut(from) {
                    g.report_snapshot(to, false);
                }
            }
            return Ok(());
        }
        self.stats.messages_delivered += 1;
        let group = self.group_mut(to).expect("checked running");
        if let Err(e) = group.step(message) {
            return Err(Violation(format!(
                "replica {to} refused a message from {from}: {e}"
            )));
        }
        if is_snapshot {
            if let Some(g) = self.group_mut(from) {
                g.report_snapshot(to, true);
            }
        }
        Ok(())
    }

    fn enqueue(&mut self, message: Message) {
        let copies = if self.rng.chance(self.faults.duplicate_percent) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = self.faults.delay(&mut self.rng);
            if delay > self.faults.delay_max {
                self.stats.messages_delayed_long += 1;
            }
            self.net.send(message.clone(), self.now + delay);
        }
    }

    /// Handle the Readies of every running node until none has one.
    pub fn process_readies(&mut self) -> Result<(), Violation> {
        for _round in 0..16 {
            let mut any = false;
            for id in self.running_ids() {
                if self.is_running(id) && self.group(id).is_some_and(|g| g.has_ready()) {
                    any = true;
                    self.handle_ready(id)?;
                }
            }
            if !any {
                break;
            }
        }
        Ok(())
    }

    /// The engine's cycle for one group: send the early messages, persist
    /// (snapshot, entries, hard state; sync when the Ready says so), send
    /// the rest, apply or queue the committed entries, advance. A crash
    /// may strike between any two of these.
    fn handle_ready(&mut self, id: ReplicaId) -> Result<(), Violation> {
        let crash_at = if self.rng.chance(self.faults.crash_mid_ready_percent) {
            Some(CrashPoint::random(&mut self.rng))
        } else {
            None
        };
        let crash_here = |point: CrashPoint| crash_at == Some(point);
        let group = self.group_mut(id).expect("running");
        let mut ready = group.ready();
        let lagging = group.applied_index() < group.commit_index();
        let campaigns = ready.elections.campaigns + ready.elections.pre_campaigns;
        if lagging && campaigns > 0 {
            self.stats.lagging_apply_campaigns += u64::from(campaigns);
        }
        if ready.soft_state.is_some_and(|s| s.role == Role::Leader) {
            self.note_new_leader(id);
        }
        for m in std::mem::take(&mut ready.messages) {
            self.enqueue(m);
        }
        if crash_here(CrashPoint::BeforePersist) {
            self.stats.crashes_mid_ready += 1;
            self.crash(id);
            return Ok(());
        }
        if let Some(snapshot) = ready.snapshot.clone() {
            // Entries of earlier Readies go first: the state machine must
            // never go back.
            self.drain_apply_queue(id)?;
            if !self.is_running(id) {
                return Ok(());
            }
            self.stats.snapshots_installed += 1;
            self.checker.check_snapshot(id, &snapshot)?;
            let node = self.nodes.get_mut(&id).expect("running");
            node.sm.install(&snapshot);
            node.group
                .as_mut()
                .expect("running")
                .store_mut()
                .apply_snapshot(snapshot)
                .map_err(|e| Violation(format!("replica {id}: snapshot persist failed: {e}")))?;
        }
        let node = self.nodes.get_mut(&id).expect("running");
        let group = node.group.as_mut().expect("running");
        group
            .store_mut()
            .append(&ready.entries)
            .map_err(|e| Violation(format!("replica {id}: append failed: {e}")))?;
        if crash_here(CrashPoint::EntriesWithoutHardState) {
            self.stats.crashes_mid_ready += 1;
            self.stats.crashes_torn += 1;
            self.crash(id);
            return Ok(());
        }
        if let Some(hs) = ready.hard_state {
            group.store_mut().set_hard_state(hs);
        }
        if ready.must_sync() {
            node.durable_hard_state = group.store().hard_state();
        }
        if crash_here(CrashPoint::PersistedNotSent) {
            self.stats.crashes_mid_ready += 1;
            self.crash(id);
            return Ok(());
        }
        for m in std::mem::take(&mut ready.messages_after_persist) {
            self.enqueue(m);
        }
        for rs in std::mem::take(&mut ready.read_states) {
            let read = u64::from_le_bytes(rs.context[..8].try_into().expect("8-byte read id"));
            let Some(record) = self.reads.get(&read) else {
                continue;
            };
            if rs.index < record.required {
                return Err(Violation(format!(
                    "read {read} at replica {id} confirmed at index {}, but index {} was committed before it began",
                    rs.index, record.required
                )));
            }
            let node = self.nodes.get_mut(&id).expect("running");
            node.confirmed_reads.push((read, rs.index));
        }
        for context in std::mem::take(&mut ready.reads_dropped) {
            let read = u64::from_le_bytes(context[..8].try_into().expect("8-byte read id"));
            self.reads.remove(&read);
        }
        let committed = std::mem::take(&mut ready.committed_entries);
        let now = self.now;
        let node = self.nodes.get_mut(&id).expect("running");
        if node.lag_apply {
            if node.apply_queue.is_empty() && !committed.is_empty() {
                node.next_apply_at = now + self.rng.between(0, node.apply_delay_max);
            }
            self.stats.deferred_applies += committed.len() as u64;
            node.apply_queue.extend(committed);
            node.group.as_mut().expect("running").advance_append(ready);
        } else {
            for entry in committed {
                self.apply(id, &entry)?;
                if !self.is_running(id) {
                    return Ok(());
                }
            }
            if let Some(group) = self.group_mut(id) {
                group.advance(ready);
            }
        }
        if crash_here(CrashPoint::SentNotApplied) {
            self.stats.crashes_mid_ready += 1;
            self.crash(id);
            return Ok(());
        }
        self.serve_reads(id)
    }

    fn note_new_leader(&mut self, id: ReplicaId) {
        self.stats.leaders_elected += 1;
        if let Some(previous) = self.last_leader.filter(|&p| p != id) {
            let mine = self.nodes[&id].clock.mean_interval();
            if self
                .nodes
                .get(&previous)
                .is_some_and(|p| p.clock.mean_interval() > mine)
            {
                self.stats.skewed_elections += 1;
            }
        }
        self.last_leader = Some(id);
    }

    /// Apply some of the queued entries and report them applied.
    fn apply_some(&mut self, id: ReplicaId) -> Result<(), Violation> {
        let queued = self.nodes[&id].apply_queue.len() as u64;
        let count = self.rng.between(1, queued);
        for _ in 0..count {
            let Some(entry) = self
                .nodes
                .get_mut(&id)
                .and_then(|n| n.apply_queue.pop_front())
            else {
                break;
            };
            self.apply(id, &entry)?;
            if !self.is_running(id) {
                return Ok(());
            }
        }
        let now = self.now;
        let node = self.nodes.get_mut(&id).expect("running");
        let applied = node.sm.applied;
        node.next_apply_at = now + self.rng.between(0, node.apply_delay_max);
        if let Some(group) = node.group.as_mut() {
            group.advance_apply_to(applied);
        }
        self.serve_reads(id)
    }

    fn drain_apply_queue(&mut self, id: ReplicaId) -> Result<(), Violation> {
        while let Some(entry) = self
            .nodes
            .get_mut(&id)
            .and_then(|n| n.apply_queue.pop_front())
        {
            self.apply(id, &entry)?;
            if !self.is_running(id) {
                return Ok(());
            }
        }
        let node = self.nodes.get_mut(&id).expect("running");
        let applied = node.sm.applied;
        if let Some(group) = node.group.as_mut() {
            group.advance_apply_to(applied);
        }
        Ok(())
    }

    /// Serve the confirmed reads whose index is applied: each returns a
    /// state no older than every commit before it began.
    fn serve_reads(&mut self, id: ReplicaId) -> Result<(), Violation> {
        let Some(node) = self.nodes.get_mut(&id) else {
            return Ok(());
        };
        let applied = node.sm.applied;
        let (due, waiting): (Vec<ConfirmedRead>, Vec<ConfirmedRead>) =
            std::mem::take(&mut node.confirmed_reads)
                .into_iter()
                .partition(|&(_, index)| index <= applied);
        node.confirmed_reads = waiting;
        for (read, _) in due {
            let Some(record) = self.reads.remove(&read) else {
                continue;
            };
            if applied < record.required {
                return Err(Violation(format!(
                    "{:?} read {read} at replica {id} returned the state at index {applied}, but index {} was committed before it began",
                    record.kind, record.required
                )));
            }
            match record.kind {
                ReadKind::Lease => self.stats.lease_reads += 1,
                ReadKind::ReadIndex => self.stats.read_index_reads += 1,
            }
        }
        Ok(())
    }

    fn apply(&mut self, id: ReplicaId, entry: &Entry) -> Result<(), Violation> {
        let node = self.nodes.get_mut(&id).expect("live");
        if entry.index != node.sm.applied + 1 {
            return Err(Violation(format!(
                "replica {id} applies index {} after {} (gap or repeat)",
                entry.index, node.sm.applied
            )));
        }
        self.checker.check_apply(id, entry)?;
        node.sm.applied = entry.index;
        match entry.kind {
            EntryKind::ConfChange => {
                let change = ConfChange::decode(&entry.data).map_err(|e| {
                    Violation(format!("replica {id}: bad conf change payload: {e}"))
                })?;
                let Some(group) = node.group.as_mut() else {
                    return Err(Violation(format!(
                        "replica {id} applies index {} while down",
                        entry.index
                    )));
                };
                let outcome = group.apply_conf_change(&change).ok();
                self.checker
                    .check_conf_applied(id, entry.index, outcome.as_ref())?;
                let Some(conf) = outcome else {
                    return Ok(());
                };
                self.stats.conf_changes_applied += 1;
                let is_leader = group.is_leader();
                group.store_mut().set_conf_state(conf);
                if let ConfChange::Remove(removed) = change {
                    if removed != id {
                        // The leader-side applier garbage-collects the
                        // removed replica.
                        if is_leader {
                            if let Some(n) = self.nodes.get_mut(&removed) {
                                n.removed = true;
                                n.group = None;
                            }
                            self.net.remove_to(removed);
                        }
                    } else if let Some(n) = self.nodes.get_mut(&id) {
                        n.removed = true;
                    }
                }
            }
            EntryKind::Normal => {
                if !entry.data.is_empty() {
                    node.sm.entries.push((entry.index, entry.data.clone()));
                    let proposal =
                        u64::from_le_bytes(entry.data[..8].try_into().expect("8-byte payload"));
                    if let Some(&(proposer, index)) = self.proposals.get(&proposal) {
                        if proposer == id && index == entry.index {
                            self.proposals.remove(&proposal);
                            self.acked_writes += 1;
                            self.max_acked_index = self.max_acked_index.max(entry.index);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    // -------------------------------------------------------- invariants

    /// At every event: one leader per term, and every lease the engine
    /// would serve covers every commit so far.
    fn check_leaders(&mut self) -> Result<(), Violation> {
        let max_commit = self.max_commit_now();
        let now = self.now;
        for node in self.nodes.values() {
            if !node.running() {
                continue;
            }
            let group = node.group.as_ref().expect("running");
            if !group.is_leader() {
                continue;
            }
            self.checker.check_election_safety(node.id, group.term())?;
            if now < node.lease_blocked_until {
                continue;
            }
            if let Some(index) = group.lease_read_index() {
                if index < max_commit {
                    return Err(Violation(format!(
                        "lease on leader {} (term {}) at index {index} misses index {max_commit}, committed elsewhere",
                        node.id,
                        group.term()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Check every safety property over the current state.
    pub fn check(&mut self) -> Result<(), Violation> {
        self.steps += 1;
        for id in self.live_ids() {
            let node = &self.nodes[&id];
            let group = node.group.as_ref().expect("live");
            self.checker.check_replica(id, group)?;
        }
        self.check_leaders()
    }

    /// Handle whatever is due now, then check.
    pub fn settle(&mut self) -> Result<(), Violation> {
        self.advance_to(self.now)
    }

    /// Run `ticks` nominal ticks with no new faults.
    pub fn run_ticks(&mut self, ticks: u64) -> Result<(), Violation> {
        for _ in 0..ticks {
            self.tick_all()?;
        }
        Ok(())
    }

    /// Run until some replica leads (bounded). Returns it.
    pub fn elect(&mut self, ticks_max: u64) -> Result<Option<ReplicaId>, Violation> {
        for _ in 0..ticks_max {
            if let Some(leader) = self.leader() {
                return Ok(Some(leader));
            }
            self.tick_all()?;
        }
        Ok(self.leader())
    }

    /// The payloads a replica's state machine applied, with their index.
    pub fn applied_payloads(&self, id: ReplicaId) -> Vec<(Index, Bytes)> {
        self.nodes
            .get(&id)
            .map(|n| n.sm.entries.clone())
            .unwrap_or_default()
    }

    pub fn applied_index(&self, id: ReplicaId) -> Index {
        self.nodes.get(&id).map(|n| n.sm.applied).unwrap_or(0)
    }

    pub fn in_flight(&self) -> usize {
        self.net.len()
    }

    /// Is proposal `id` applied at every live replica?
    pub fn committed_everywhere(&self, proposal: u64) -> bool {
        let wanted = payload(proposal);
        self.live_ids()
            .iter()
            .all(|&id| self.applied_payloads(id).iter().any(|(_, p)| *p == wanted))
    }

    /// True if the proposal was applied by its proposer (acknowledged).
    pub fn acknowledged(&self, proposal: u64) -> bool {
        !self.proposals.contains_key(&proposal)
    }
}

fn is_paused(nodes: &BTreeMap<ReplicaId, Node>, id: ReplicaId) -> bool {
    nodes.get(&id).is_some_and(|n| n.paused_until.is_some())
}

/// The state of every replica, for failure messages.
pub fn describe(sim: &Sim) -> String {
    let mut out = String::new();
    for (id, node) in &sim.nodes {
        let clock = format!(
            "clock {}..={}",
            node.clock.interval_min, node.clock.interval_max
        );
        match &node.group {
            Some(g) => {
                let s = g.status();
                out.push_str(&format!(
                    "  replica {id}: {:?} term {} leader {} commit {} applied {} (sm {}, queued {}) log {}..={} voters {:?} learners {:?} quiesced {} {clock}{}{}\n",
                    s.role, s.term, s.leader, s.commit, s.applied, node.sm.applied,
                    node.apply_queue.len(), s.first_index, s.last_index,
                    s.conf_state.voters, s.conf_state.learners, s.quiesced,
                    if node.paused_until.is_some() { " PAUSED" } else { "" },
                    if node.removed { " removed" } else { "" },
                ));
            }
            None => out.push_str(&format!(
                "  replica {id}: down (removed: {}) {clock}\n",
                node.removed
            )),
        }
    }
    out
}

pub fn is_role(sim: &Sim, id: ReplicaId, role: Role) -> bool {
    sim.group(id).is_some_and(|g| g.role() == role)
}
