//! A deterministic simulator of one Raft group: replicas, a lossy network,
//! crashes that keep only what was persisted, and invariant checks.
//!
//! Everything random comes from one seeded generator, so a seed replays a
//! run exactly. The simulator never reads a clock: time is the tick count.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use flotilla_raftgroup::{
    ConfChange, Config, Entry, EntryKind, Index, MemStore, Message, MessageBody, RaftGroup,
    ReplicaId, Role, Snapshot, Term,
};

/// SplitMix64: small, seedable, stable forever.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// In `[0, n)`; 0 when n is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        if items.is_empty() {
            None
        } else {
            Some(items[self.below(items.len() as u64) as usize])
        }
    }
}

/// The replicated state machine of a replica: the payloads it applied.
#[derive(Clone, Default, Debug)]
pub struct StateMachine {
    pub applied: Index,
    /// (index, payload) of every non-empty normal entry applied.
    pub entries: Vec<(Index, Bytes)>,
}

impl StateMachine {
    fn encode(&self) -> Bytes {
        let mut out = Vec::new();
        out.extend_from_slice(&self.applied.to_le_bytes());
        for (index, data) in &self.entries {
            out.extend_from_slice(&index.to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(data);
        }
        Bytes::from(out)
    }

    fn decode(data: &[u8]) -> StateMachine {
        let mut sm = StateMachine::default();
        if data.len() < 8 {
            return sm;
        }
        sm.applied = u64::from_le_bytes(data[0..8].try_into().expect("8 bytes"));
        let mut at = 8;
        while at + 12 <= data.len() {
            let index = u64::from_le_bytes(data[at..at + 8].try_into().expect("8 bytes"));
            let len =
                u32::from_le_bytes(data[at + 8..at + 12].try_into().expect("4 bytes")) as usize;
            at += 12;
            sm.entries
                .push((index, Bytes::copy_from_slice(&data[at..at + len])));
            at += len;
        }
        sm
    }
}

/// One simulated replica (one node hosting one replica of the group).
pub struct Node {
    pub id: ReplicaId,
    /// `None` while crashed.
    pub group: Option<RaftGroup<MemStore>>,
    /// What survives a crash: the persisted log store (kept inside the
    /// group while running).
    pub stored: Option<MemStore>,
    pub sm: StateMachine,
    pub removed: bool,
}

#[derive(Clone, Debug)]
struct InFlight {
    deliver_at: u64,
    message: Message,
}

/// Knobs of the fault schedule, in percent per opportunity.
#[derive(Clone, Debug)]
pub struct Faults {
    pub drop_percent: u64,
    pub duplicate_percent: u64,
    /// Extra delivery delay in ticks, uniformly in `[0, delay_ticks_max]`.
    pub delay_ticks_max: u64,
    /// Crash a node in the middle of handling a Ready.
    pub crash_mid_ready_percent: u64,
}

impl Faults {
    pub fn none() -> Self {
        Faults {
            drop_percent: 0,
            duplicate_percent: 0,
            delay_ticks_max: 0,
            crash_mid_ready_percent: 0,
        }
    }
}

/// What a run exercised, to show the simulator reaches the hard cases.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub crashes: u64,
    pub crashes_mid_ready: u64,
    pub snapshots_installed: u64,
    pub conf_changes_applied: u64,
    pub leaders_elected: u64,
    pub messages_delivered: u64,
    pub messages_dropped: u64,
    pub quiesces: u64,
}

impl Stats {
    pub fn add(&mut self, other: &Stats) {
        self.crashes += other.crashes;
        self.crashes_mid_ready += other.crashes_mid_ready;
        self.snapshots_installed += other.snapshots_installed;
        self.conf_changes_applied += other.conf_changes_applied;
        self.leaders_elected += other.leaders_elected;
        self.messages_delivered += other.messages_delivered;
        self.messages_dropped += other.messages_dropped;
        self.quiesces += other.quiesces;
    }
}

/// (index, term, fingerprint) of one entry of a leader's log.
type LogFact = (Index, Term, Bytes);

/// A broken invariant, with enough context to debug it.
#[derive(Debug)]
pub struct Violation(pub String);

pub struct Sim {
    pub rng: Rng,
    pub seed: u64,
    pub nodes: BTreeMap<ReplicaId, Node>,
    network: Vec<InFlight>,
    /// Directed links that drop everything: (from, to).
    pub cut: BTreeSet<(ReplicaId, ReplicaId)>,
    pub faults: Faults,
    pub now: u64,
    pub next_replica_id: ReplicaId,
    next_proposal: u64,
    next_read: u64,

    // ---- invariant bookkeeping ----
    /// term -> leader seen in that term (Election Safety).
    leaders_by_term: HashMap<Term, ReplicaId>,
    /// (leader, term) -> the leader's log (index, term, payload) when last
    /// seen, to check Leader Append-Only.
    leader_logs: HashMap<(ReplicaId, Term), Vec<LogFact>>,
    /// (index, term) -> (payload, previous entry's term) over all logs
    /// (Log Matching, checked inductively).
    entry_facts: HashMap<(Index, Term), (Bytes, Term)>,
    /// index -> (term, payload) of entries known committed, and the term
    /// of the replica that first saw it committed (≥ the commit's term).
    committed: BTreeMap<Index, (Term, Bytes, Term)>,
    /// index -> (kind, payload) applied by anyone (State Machine Safety).
    applied_global: BTreeMap<Index, Bytes>,
    /// proposal id -> (proposer, index).
    proposals: HashMap<u64, (ReplicaId, Index)>,
    /// Highest index of a write acknowledged to its client.
    pub max_acked_index: Index,
    pub acked_writes: u64,
    /// read id -> max_acked_index when the read began.
    reads: HashMap<u64, Index>,
    pub reads_completed: u64,
    pub lease_reads_checked: u64,
    pub steps: u64,
    pub stats: Stats,
    pub config_template: Config,
}

pub fn payload(id: u64) -> Bytes {
    Bytes::from(id.to_le_bytes().to_vec())
}

impl Sim {
    /// A group of `voters` replicas with ids 1..=voters.
    pub fn new(seed: u64, voters: u64, faults: Faults) -> Sim {
        Self::with_config(seed, voters, faults, Config::default())
    }

    pub fn with_config(seed: u64, voters: u64, faults: Faults, config_template: Config) -> Sim {
        let mut sim = Sim {
            rng: Rng::new(seed),
            seed,
            nodes: BTreeMap::new(),
            network: Vec::new(),
            cut: BTreeSet::new(),
            faults,
            now: 0,
            next_replica_id: voters + 1,
            next_proposal: 1,
            next_read: 1,
            leaders_by_term: HashMap::new(),
            leader_logs: HashMap::new(),
            entry_facts: HashMap::new(),
            committed: BTreeMap::new(),
            applied_global: BTreeMap::new(),
            proposals: HashMap::new(),
            max_acked_index: 0,
            acked_writes: 0,
            reads: HashMap::new(),
            reads_completed: 0,
            lease_reads_checked: 0,
            steps: 0,
            stats: Stats::default(),
            config_template,
        };
        for id in 1..=voters {
            let store = MemStore::new_with_voters(1..=voters);
            sim.add_node(id, store);
            if let Some(node) = sim.nodes.get_mut(&id) {
                node.sm.applied = flotilla_raftgroup::BOOTSTRAP_INDEX;
            }
        }
        sim
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
        let group = RaftGroup::new(config, store).expect("valid config");
        self.nodes.insert(
            id,
            Node {
                id,
                group: Some(group),
                stored: None,
                sm: StateMachine::default(),
                removed: false,
            },
        );
    }

    pub fn live_ids(&self) -> Vec<ReplicaId> {
        self.nodes
            .values()
            .filter(|n| n.group.is_some() && !n.removed)
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

    pub fn group(&self, id: ReplicaId) -> Option<&RaftGroup<MemStore>> {
        self.nodes.get(&id).and_then(|n| n.group.as_ref())
    }

    pub fn group_mut(&mut self, id: ReplicaId) -> Option<&mut RaftGroup<MemStore>> {
        self.nodes.get_mut(&id).and_then(|n| n.group.as_mut())
    }

    /// The current leader with the highest term, if any live.
    pub fn leader(&self) -> Option<ReplicaId> {
        self.live_ids()
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

    /// Crash a node: everything not persisted is lost.
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

    /// What the engine does when the transport reports a node down: wake
    /// every replica so a hibernating group can elect a new leader.
    pub fn wake_all(&mut self) {
        for id in self.live_ids() {
            if let Some(g) = self.group_mut(id) {
                g.wake_up();
            }
        }
    }

    pub fn crash(&mut self, id: ReplicaId) {
        if let Some(node) = self.nodes.get_mut(&id) {
            if let Some(group) = node.group.take() {
                self.stats.crashes += 1;
                node.stored = Some(group.store().clone());
            }
        }
        // Messages it sent are still in flight (they left the machine);
        // those addressed to it are lost with it, and a snapshot sender
        // learns of the failure (as the transport would tell it).
        let lost: Vec<InFlight> = self
            .network
            .iter()
            .filter(|f| f.message.to == id)
            .cloned()
            .collect();
        self.network.retain(|f| f.message.to != id);
        for f in lost {
            if matches!(f.message.body, MessageBody::InstallSnapshot { .. }) {
                if let Some(g) = self.group_mut(f.message.from) {
                    g.report_snapshot(id, false);
                }
            }
        }
    }

    pub fn restart(&mut self, id: ReplicaId) {
        let applied = match self.nodes.get(&id) {
            Some(node) if node.group.is_none() && !node.removed => node.sm.applied,
            _ => return,
        };
        let config = self.config_for(id, applied);
        let node = self.nodes.get_mut(&id).expect("checked above");
        let store = node.stored.take().unwrap_or_default();
        node.group = Some(RaftGroup::new(config, store).expect("restart from persisted state"));
    }

    /// Split the live nodes in two random sides; nothing crosses.
    pub fn partition_random(&mut self) {
        let ids: Vec<ReplicaId> = self.nodes.keys().copied().collect();
        let side: BTreeSet<ReplicaId> = ids
            .iter()
            .copied()
            .filter(|_| self.rng.chance(50))
            .collect();
        for &a in &ids {
            for &b in &ids {
                if a != b && side.contains(&a) != side.contains(&b) {
                    self.cut.insert((a, b));
                }
            }
        }
    }

    /// Cut one direction of one link.
    pub fn cut_one_way(&mut self, from: ReplicaId, to: ReplicaId) {
        self.cut.insert((from, to));
    }

    /// Isolate one node in both directions.
    pub fn isolate(&mut self, id: ReplicaId) {
        let ids: Vec<ReplicaId> = self.nodes.keys().copied().collect();
        for other in ids {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    // ----------------------------------------------------------- actions

    /// Propose a fresh payload at `id`. Returns its proposal id if accepted.
    pub fn propose(&mut self, id: ReplicaId) -> Option<u64> {
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

    /// Start a linearizable read at `id`.
    pub fn read(&mut self, id: ReplicaId) -> bool {
        let read = self.next_read;
        let at_start = self.max_acked_index;
        let Some(group) = self.group_mut(id) else {
            return false;
        };
        if group
            .read_index(Bytes::from(read.to_le_bytes().to_vec()))
            .is_ok()
        {
            self.next_read += 1;
            self.reads.insert(read, at_start);
            true
        } else {
            false
        }
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
    pub fn compact(&mut self, id: ReplicaId) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        let sm = node.sm.clone();
        let Some(group) = node.group.as_mut() else {
            return;
        };
        let applied = sm.applied;
        if applied == 0 || applied > group.applied_index() {
            return;
        }
        let _ = group.compact(applied, sm.encode());
    }

    /// One tick for every live node.
    pub fn tick_all(&mut self) {
        self.now += 1;
        for id in self.live_ids() {
            if let Some(g) = self.group_mut(id) {
                g.tick();
            }
        }
    }

    /// Deliver every message due now (random order = reordering).
    pub fn deliver_due(&mut self) -> Result<(), Violation> {
        let now = self.now;
        let mut due: Vec<InFlight> = Vec::new();
        let mut later: Vec<InFlight> = Vec::new();
        for f in self.network.drain(..) {
            if f.deliver_at <= now {
                due.push(f);
            } else {
                later.push(f);
            }
        }
        self.network = later;
        // Shuffle.
        for i in (1..due.len()).rev() {
            let j = self.rng.below(i as u64 + 1) as usize;
            due.swap(i, j);
        }
        for f in due {
            self.deliver(f.message)?;
        }
        Ok(())
    }

    fn deliver(&mut self, message: Message) -> Result<(), Violation> {
        let (from, to) = (message.from, message.to);
        let is_snapshot = matches!(message.body, MessageBody::InstallSnapshot { .. });
        let lost = self.cut.contains(&(from, to))
            || self.group(to).is_none()
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
        let group = self.group_mut(to).expect("checked live");
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
        let delay = 1 + self.rng.below(self.faults.delay_ticks_max + 1);
        let copies = if self.rng.chance(self.faults.duplicate_percent) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            self.network.push(InFlight {
                deliver_at: self.now + delay,
                message: message.clone(),
            });
        }
    }

    /// Handle the Readies of every live node until none has one.
    pub fn process_readies(&mut self) -> Result<(), Violation> {
        for _round in 0..16 {
            let mut any = false;
            for id in self.live_ids() {
                if self.group(id).is_some_and(|g| g.has_ready()) {
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

    fn handle_ready(&mut self, id: ReplicaId) -> Result<(), Violation> {
        let crash_mid = self.rng.chance(self.faults.crash_mid_ready_percent);
        let Some(group) = self.group_mut(id) else {
            return Ok(());
        };
        let mut ready = group.ready();
        // Leader messages may leave before the local persist.
        for m in std::mem::take(&mut ready.messages) {
            self.enqueue(m);
        }
        if crash_mid {
            // Crash before anything of this Ready was persisted.
            self.stats.crashes_mid_ready += 1;
            self.crash(id);
            return Ok(());
        }
        let node = self.nodes.get_mut(&id).expect("live");
        let group = node.group.as_mut().expect("live");
        if let Some(ss) = ready.soft_state {
            if ss.role == Role::Leader {
                self.stats.leaders_elected += 1;
            }
        }
        if let Some(snapshot) = ready.snapshot.clone() {
            self.stats.snapshots_installed += 1;
            install_snapshot(&mut node.sm, &snapshot);
            group
                .store_mut()
                .apply_snapshot(snapshot)
                .map_err(|e| Violation(format!("replica {id}: snapshot persist failed: {e}")))?;
        }
        group
            .store_mut()
            .append(&ready.entries)
            .map_err(|e| Violation(format!("replica {id}: append failed: {e}")))?;
        if let Some(hs) = ready.hard_state {
            group.store_mut().set_hard_state(hs);
        }
        for m in std::mem::take(&mut ready.messages_after_persist) {
            self.enqueue(m);
        }
        // Apply.
        let committed = std::mem::take(&mut ready.committed_entries);
        for entry in committed {
            self.apply(id, &entry)?;
        }
        for rs in std::mem::take(&mut ready.read_states) {
            let read = u64::from_le_bytes(rs.context[..8].try_into().expect("8-byte read id"));
            if let Some(at_start) = self.reads.remove(&read) {
                if rs.index < at_start {
                    return Err(Violation(format!(
                        "read {read} at replica {id} served at index {} but a write at index {at_start} was acknowledged before it began",
                        rs.index
                    )));
                }
                self.reads_completed += 1;
            }
        }
        for context in std::mem::take(&mut ready.reads_dropped) {
            let read = u64::from_le_bytes(context[..8].try_into().expect("8-byte read id"));
            self.reads.remove(&read);
        }
        if let Some(group) = self.group_mut(id) {
            group.advance(ready);
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
        let fingerprint = entry_fingerprint(entry);
        match self.applied_global.get(&entry.index) {
            Some(existing) if *existing != fingerprint => {
                return Err(Violation(format!(
                    "State Machine Safety: replica {id} applied a different entry at index {}",
                    entry.index
                )));
            }
            Some(_) => {}
            None => {
                self.applied_global.insert(entry.index, fingerprint);
            }
        }
        node.sm.applied = entry.index;
        match entry.kind {
            EntryKind::ConfChange => {
                let change = ConfChange::decode(&entry.data).map_err(|e| {
                    Violation(format!("replica {id}: bad conf change payload: {e}"))
                })?;
                let group = node.group.as_mut().expect("live");
                if let Ok(conf) = group.apply_conf_change(&change) {
                    self.stats.conf_changes_applied += 1;
                    group.store_mut().set_conf_state(conf.clone());
                    if let ConfChange::Remove(removed) = change {
                        if removed != id {
                            // The leader-side applier garbage-collects the removed replica.
                            if group.is_leader() {
                                if let Some(n) = self.nodes.get_mut(&removed) {
                                    n.removed = true;
                                    n.group = None;
                                }
                                self.network.retain(|f| f.message.to != removed);
                            }
                        } else if let Some(n) = self.nodes.get_mut(&id) {
                            n.removed = true;
                        }
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

    /// Check every safety property over the current state.
    pub fn check(&mut self) -> Result<(), Violation> {
        self.steps += 1;
        let ids = self.live_ids();
        for &id in &ids {
            let Some(group) = self.group(id) else {
                continue;
            };
            let first = group.first_index();
            let last = group.last_index();
            let commit = group.commit_index();
            let term = group.term();
            let is_leader = group.is_leader();
            let entries = group
                .log_entries(first, last + 1)
                .map_err(|e| Violation(format!("replica {id}: cannot read its log: {e}")))?;
            let before_first_term = group.log_term(first - 1).unwrap_or(0);
            let lease_index = group.lease_read_index();

            // Log Matching, inductively: an (index, term) pair always has
            // the same payload and the same previous term.
            let mut prev_term = before_first_term;
            for e in &entries {
                let fact = (entry_fingerprint(e), prev_term);
                match self.entry_facts.get(&(e.index, e.term)) {
                    Some(existing) if *existing != fact => {
                        return Err(Violation(format!(
                            "Log Matching: replica {id} holds a different entry at index {} term {}",
                            e.index, e.term
                        )));
                    }
                    Some(_) => {}
                    None => {
                        self.entry_facts.insert((e.index, e.term), fact);
                    }
                }
                prev_term = e.term;
            }

            // Committed entries are facts: they never change.
            for e in entries.iter().filter(|e| e.index <= commit) {
                let fact = (e.term, entry_fingerprint(e), term);
                match self.committed.get(&e.index) {
                    Some(existing) if (existing.0, &existing.1) != (fact.0, &fact.1) => {
                        return Err(Violation(format!(
                            "replica {id} commits a different entry at index {} (term {} vs {})",
                            e.index, e.term, existing.0
                        )));
                    }
                    Some(_) => {}
                    None => {
                        self.committed.insert(e.index, fact);
                    }
                }
            }

            if is_leader {
                // Election Safety.
                match self.leaders_by_term.get(&term) {
                    Some(&other) if other != id => {
                        return Err(Violation(format!(
                            "Election Safety: replicas {other} and {id} both lead term {term}"
                        )));
                    }
                    Some(_) => {}
                    None => {
                        self.leaders_by_term.insert(term, id);
                    }
                }
                // Leader Append-Only.
                let now_log: Vec<LogFact> = entries
                    .iter()
                    .map(|e| (e.index, e.term, entry_fingerprint(e)))
                    .collect();
                if let Some(before) = self.leader_logs.get(&(id, term)) {
                    for (index, t, fp) in before {
                        if *index < first {
                            continue;
                        }
                        let now = now_log.get((*index - first) as usize);
                        if now.map(|(_, nt, nfp)| (nt, nfp)) != Some((t, fp)) {
                            return Err(Violation(format!(
                                "Leader Append-Only: leader {id} of term {term} changed or lost its entry at index {index}"
                            )));
                        }
                    }
                }
                // Leader Completeness: every entry committed in an earlier
                // term is in the log.
                for (&index, (t, fp, seen_in)) in self.committed.range(first..) {
                    if *seen_in >= term {
                        continue;
                    }
                    let found = now_log.get((index - first) as usize);
                    if found.map(|(_, nt, nfp)| (nt, nfp)) != Some((t, fp)) {
                        return Err(Violation(format!(
                            "Leader Completeness: leader {id} of term {term} lacks committed entry {index} (term {t})"
                        )));
                    }
                }
                self.leader_logs.insert((id, term), now_log);

                // Lease reads must see every acknowledged write.
                if let Some(index) = lease_index {
                    self.lease_reads_checked += 1;
                    if index < self.max_acked_index {
                        return Err(Violation(format!(
                            "lease read on leader {id} (term {term}) at index {index} misses acknowledged write at index {}",
                            self.max_acked_index
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// One step of the run: deliver, process, check.
    pub fn settle(&mut self) -> Result<(), Violation> {
        self.process_readies()?;
        self.deliver_due()?;
        self.process_readies()?;
        self.check()
    }

    /// Run `ticks` ticks with no new faults, settling after each.
    pub fn run_ticks(&mut self, ticks: u64) -> Result<(), Violation> {
        for _ in 0..ticks {
            self.tick_all();
            self.settle()?;
        }
        Ok(())
    }

    /// Tick until some replica leads (bounded). Returns it.
    pub fn elect(&mut self, ticks_max: u64) -> Result<Option<ReplicaId>, Violation> {
        for _ in 0..ticks_max {
            if let Some(leader) = self.leader() {
                return Ok(Some(leader));
            }
            self.tick_all();
            self.settle()?;
        }
        Ok(self.leader())
    }

    /// The payload a replica's state machine applied at `index`, if any.
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
        self.network.len()
    }

    /// Is proposal `id` applied at a majority of the current voters?
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

fn install_snapshot(sm: &mut StateMachine, snapshot: &Snapshot) {
    let mut restored = StateMachine::decode(&snapshot.data);
    restored.applied = snapshot.meta.index;
    *sm = restored;
}

/// Kind and payload of an entry, as compared across replicas.
fn entry_fingerprint(entry: &Entry) -> Bytes {
    let mut out = Vec::with_capacity(entry.data.len() + 1);
    out.push(entry.kind.to_u8());
    out.extend_from_slice(&entry.data);
    Bytes::from(out)
}

/// The roles of all live replicas, for failure messages.
pub fn describe(sim: &Sim) -> String {
    let mut out = String::new();
    for id in sim.nodes.keys() {
        match sim.group(*id) {
            Some(g) => {
                let s = g.status();
                out.push_str(&format!(
                    "  replica {id}: {:?} term {} leader {} commit {} applied {} log {}..={} voters {:?} learners {:?}\n",
                    s.role, s.term, s.leader, s.commit, s.applied, s.first_index, s.last_index,
                    s.conf_state.voters, s.conf_state.learners
                ));
            }
            None => out.push_str(&format!(
                "  replica {id}: down (removed: {})\n",
                sim.nodes[id].removed
            )),
        }
    }
    out
}

pub fn is_role(sim: &Sim, id: ReplicaId, role: Role) -> bool {
    sim.group(id).is_some_and(|g| g.role() == role)
}
