//! [`RaftGroup`]: one replica of one group, its public API, and the
//! Ready/advance cycle. The protocol itself lives in the sibling modules:
//! `election` (roles, votes, ticks), `replication` (appends, heartbeats,
//! snapshots, commit), `reads` (ReadIndex and lease) and `membership`
//! (configuration changes and leadership transfer).

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use crate::config::Config;
use crate::error::Error;
use crate::log::RaftLog;
pub use crate::progress::ProgressState;
use crate::progress::{Inflights, Progress};
use crate::rng::SplitMix64;
use crate::store::{LogStore, StoreError};
use crate::types::{
    ConfChange, ConfState, ElectionEvents, Entry, EntryKind, HardState, Index, Message,
    MessageBody, ReadState, ReplicaId, Role, Snapshot, SoftState, Term, NO_REPLICA,
};

/// A read waiting for a quorum to confirm leadership (or for the leader to
/// commit an entry of its term).
#[derive(Debug, Clone)]
pub(crate) struct PendingRead {
    pub(crate) context: Bytes,
    /// Who asked: this replica or a follower that forwarded it.
    pub(crate) from: ReplicaId,
    /// Commit index when the read's heartbeat round started; the read is
    /// served at it.
    pub(crate) index: Index,
    /// Heartbeat round that must be acknowledged by a quorum; 0 until the
    /// read is assigned to a round.
    pub(crate) seq: u64,
}

/// One replica of one Raft group.
pub struct RaftGroup<S: LogStore> {
    pub(crate) id: ReplicaId,
    pub(crate) config: Config,
    pub(crate) log: RaftLog<S>,
    pub(crate) term: Term,
    pub(crate) vote: ReplicaId,
    pub(crate) role: Role,
    pub(crate) leader: ReplicaId,
    pub(crate) conf: ConfState,
    /// Leader only: every member's progress, this replica's included.
    pub(crate) progress: BTreeMap<ReplicaId, Progress>,
    /// Candidate / pre-candidate: votes received.
    pub(crate) votes: BTreeMap<ReplicaId, bool>,

    pub(crate) ticks_election_elapsed: u32,
    pub(crate) ticks_heartbeat_elapsed: u32,
    pub(crate) ticks_election_randomized: u32,
    /// Ticks since creation; only used to time the leader lease.
    pub(crate) tick_now: u64,
    /// Ticks since a leader was last heard from (or since start, with
    /// `lease_on_start`): while below `ticks_election_min`, this voter may
    /// have acknowledged a lease and refuses votes. Kept apart from
    /// `leader` and the election timer, which other events reset.
    pub(crate) ticks_since_leader: u32,
    /// Quiesced: ticks since the last quiesce heartbeat (sent by a leader,
    /// received by a follower).
    pub(crate) ticks_quiesced_elapsed: u32,
    /// Leader: a TimeoutNow went out in this term. Its target may campaign
    /// at any later time, even after the transfer was abandoned, and the
    /// voters grant a transfer vote despite their lease: no lease again.
    pub(crate) lease_revoked: bool,
    /// The first error the log store returned on a path that cannot
    /// return it (a tick, a step's side effect, a Ready).
    pub(crate) store_error: Option<StoreError>,
    pub(crate) rng: SplitMix64,

    /// Messages that may be sent at once.
    pub(crate) messages: Vec<Message>,
    /// Messages that must wait until this Ready's state is persisted.
    pub(crate) messages_after_persist: Vec<Message>,
    /// A broadcast of appends is due (deferred to `ready` so that many
    /// proposals share one message per follower).
    pub(crate) broadcast_due: bool,

    /// Index of the last configuration change proposed (leader).
    pub(crate) pending_conf_index: Index,
    pub(crate) uncommitted_bytes: u64,
    pub(crate) transfer_target: ReplicaId,
    pub(crate) ticks_transfer_elapsed: u32,

    /// Leader: current heartbeat round and the tick each recent one began.
    pub(crate) heartbeat_seq: u64,
    pub(crate) heartbeat_seq_ticks: VecDeque<(u64, u64)>,
    pub(crate) pending_reads: VecDeque<PendingRead>,
    pub(crate) read_states: Vec<ReadState>,
    pub(crate) reads_dropped: Vec<Bytes>,

    pub(crate) quiesced: bool,
    pub(crate) election_events: ElectionEvents,
    prev_soft: SoftState,
    prev_hard: HardState,
}

/// What the caller must do after stepping a group, in this order:
/// persist `snapshot`, `entries` and `hard_state` (atomically, or at least
/// the hard state last); send `messages` (may go before persisting);
/// send `messages_after_persist` (only after persisting); apply `snapshot`
/// then `committed_entries`; answer `read_states`; then call
/// [`RaftGroup::advance`].
#[derive(Debug, Default)]
pub struct Ready {
    pub soft_state: Option<SoftState>,
    pub hard_state: Option<HardState>,
    /// A snapshot received from the leader, to persist and install.
    pub snapshot: Option<Snapshot>,
    /// Entries to append to the log (overwriting from the first one's index).
    pub entries: Vec<Entry>,
    pub messages: Vec<Message>,
    pub messages_after_persist: Vec<Message>,
    /// Committed entries to apply, in order.
    pub committed_entries: Vec<Entry>,
    /// Reads that are now safe once `index` is applied.
    pub read_states: Vec<ReadState>,
    /// Contexts of reads that will never complete here (leadership lost):
    /// the caller should retry them elsewhere.
    pub reads_dropped: Vec<Bytes>,
    /// Elections started and won since the last ready (metrics only).
    pub elections: ElectionEvents,
    persist_to: Option<(Index, Term)>,
    snapshot_index: Option<Index>,
    /// Entries, a snapshot, or a new term or vote: the persist must be
    /// durable before `messages_after_persist` go out.
    sync: bool,
    apply_to: Option<Index>,
}

impl Ready {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.soft_state.is_none()
            && self.hard_state.is_none()
            && self.snapshot.is_none()
            && self.entries.is_empty()
            && self.messages.is_empty()
            && self.messages_after_persist.is_empty()
            && self.committed_entries.is_empty()
            && self.read_states.is_empty()
            && self.reads_dropped.is_empty()
            && self.elections.is_empty()
    }

    /// Whether anything must reach stable storage before
    /// `messages_after_persist` go out.
    pub fn must_persist(&self) -> bool {
        self.hard_state.is_some() || self.snapshot.is_some() || !self.entries.is_empty()
    }

    /// Whether the persist must be synced (fsync). Not when only the
    /// commit index moved: a commit index lost in a crash is learned again
    /// (from the leader, or by committing anew; never below what was
    /// applied, see `RaftLog::new`), while entries, term and vote must
    /// survive what this replica told others about them.
    pub fn must_sync(&self) -> bool {
        self.sync
    }
}

/// A member's replication progress, as reported by [`RaftGroup::status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgressStatus {
    pub id: ReplicaId,
    pub matched: Index,
    pub next: Index,
    pub state: ProgressState,
    pub is_learner: bool,
    /// Heard from in the current or the previous check-quorum round (an
    /// election timeout or two): reachable, for admin decisions.
    pub recent_active: bool,
}

/// A snapshot of a replica's state for observers (status pages, tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub id: ReplicaId,
    pub role: Role,
    pub term: Term,
    pub vote: ReplicaId,
    pub leader: ReplicaId,
    pub commit: Index,
    pub applied: Index,
    pub first_index: Index,
    pub last_index: Index,
    pub conf_state: ConfState,
    /// Leader only.
    pub progress: Vec<ProgressStatus>,
    pub transfer_target: ReplicaId,
    pub quiesced: bool,
}

impl RaftGroup<crate::store::MemStore> {
    /// Compact the in-memory log up to `index`, keeping `data` as the
    /// snapshot of the state machine at `index`. Refuses to drop entries
    /// that are not applied yet.
    pub fn compact(&mut self, index: Index, data: Bytes) -> Result<(), Error> {
        if index > self.log.applied {
            return Err(Error::CompactBeyondApplied {
                index,
                applied: self.log.applied,
            });
        }
        // The snapshot must carry the configuration as of `index`; only the
        // one as of `applied` is known, so no change may lie in between.
        let between = self
            .log
            .entries(index + 1, self.log.applied + 1, u64::MAX)?;
        if let Some(change) = between.iter().find(|e| e.kind == EntryKind::ConfChange) {
            return Err(Error::CompactAcrossConfChange {
                index,
                conf_index: change.index,
            });
        }
        let conf = self.conf.clone();
        self.log.store.compact(index, conf, data)?;
        Ok(())
    }
}

impl<S: LogStore> RaftGroup<S> {
    /// Starts (or restarts) a replica from what `store` holds. The
    /// configuration is validated; a replica always starts as a follower.
    pub fn new(config: Config, store: S) -> Result<Self, Error> {
        config.validate()?;
        let (hard_state, conf) = store.initial_state()?;
        let log = RaftLog::new(store, hard_state.commit, config.applied)?;
        let prev_hard = HardState {
            term: hard_state.term,
            vote: hard_state.vote,
            commit: log.committed,
        };
        let mut group = RaftGroup {
            id: config.id,
            rng: SplitMix64::new(config.seed ^ config.id.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            config,
            log,
            term: hard_state.term,
            vote: hard_state.vote,
            role: Role::Follower,
            leader: NO_REPLICA,
            conf,
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            ticks_election_elapsed: 0,
            ticks_heartbeat_elapsed: 0,
            ticks_election_randomized: 0,
            tick_now: 0,
            ticks_since_leader: 0,
            ticks_quiesced_elapsed: 0,
            lease_revoked: false,
            store_error: None,
            messages: Vec::new(),
            messages_after_persist: Vec::new(),
            broadcast_due: false,
            pending_conf_index: 0,
            uncommitted_bytes: 0,
            transfer_target: NO_REPLICA,
            ticks_transfer_elapsed: 0,
            heartbeat_seq: 0,
            heartbeat_seq_ticks: VecDeque::new(),
            pending_reads: VecDeque::new(),
            read_states: Vec::new(),
            reads_dropped: Vec::new(),
            quiesced: false,
            election_events: ElectionEvents::default(),
            prev_soft: SoftState {
                role: Role::Follower,
                leader: NO_REPLICA,
                term: hard_state.term,
            },
            prev_hard,
        };
        group.become_follower(hard_state.term, NO_REPLICA);
        // A replica that restarts may have acknowledged a lease just before
        // it stopped: it sits one out, as if it had just heard a leader.
        group.ticks_since_leader = if group.config.lease_on_start {
            0
        } else {
            group.config.ticks_election_min
        };
        Ok(group)
    }

    /// This replica's id.
    pub fn id(&self) -> ReplicaId {
        self.id
    }

    /// The log store (the persisted log).
    pub fn store(&self) -> &S {
        &self.log.store
    }

    /// Mutable access to the log store, for persisting what a Ready hands
    /// out and for compaction.
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.log.store
    }

    /// The current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Is this replica the leader?
    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }

    /// The known leader, or [`NO_REPLICA`].
    pub fn leader(&self) -> ReplicaId {
        self.leader
    }

    /// The current term.
    pub fn term(&self) -> Term {
        self.term
    }

    /// The commit index.
    pub fn commit_index(&self) -> Index {
        self.log.committed
    }

    /// The application learned from outside this group that the entry at
    /// `index` with `term` is committed (a merge: the target's log commits
    /// only after the source's freeze entry committed), while this replica
    /// may never hear the group's commit index again because the group is
    /// about to be retired. Commits up to `index` when the local log holds
    /// that very entry; returns whether `index` is now committed here.
    /// Safe because Raft never removes a committed entry from any log.
    pub fn commit_known(&mut self, index: Index, term: Term) -> bool {
        if self.log.committed >= index {
            return true;
        }
        match self.log.term(index) {
            Ok(t) if t == term => {
                self.log.commit_to(index);
                true
            }
            _ => false,
        }
    }

    /// The index the application confirmed applied.
    pub fn applied_index(&self) -> Index {
        self.log.applied
    }

    /// First index still in the log (persisted or not).
    pub fn first_index(&self) -> Index {
        self.log.first_index().unwrap_or(0)
    }

    /// Last index in the log (persisted or not).
    pub fn last_index(&self) -> Index {
        self.log.last_index().unwrap_or(0)
    }

    /// Entries in `[low, high)` from the whole log, persisted or not (for
    /// inspection and tests; the engine reads its store directly).
    pub fn log_entries(&self, low: Index, high: Index) -> Result<Vec<Entry>, Error> {
        Ok(self.log.entries(low, high, u64::MAX)?)
    }

    /// Term of the entry at `index` in the whole log.
    pub fn log_term(&self, index: Index) -> Result<Term, Error> {
        Ok(self.log.term(index)?)
    }

    /// The current configuration (as of the applied index).
    pub fn conf_state(&self) -> &ConfState {
        &self.conf
    }

    /// Propose an application command. Returns its log index; it is
    /// committed when it appears in a Ready's `committed_entries` with the
    /// same index and this term.
    pub fn propose(&mut self, data: Bytes) -> Result<Index, Error> {
        self.propose_entry(EntryKind::Normal, data)
    }

    pub(crate) fn propose_entry(&mut self, kind: EntryKind, data: Bytes) -> Result<Index, Error> {
        self.wake();
        if self.role != Role::Leader {
            return Err(Error::NotLeader {
                leader: self.leader,
            });
        }
        if self.transfer_target != NO_REPLICA {
            return Err(Error::TransferInProgress {
                target: self.transfer_target,
            });
        }
        let size = data.len() as u64;
        if self.uncommitted_bytes > 0
            && self.uncommitted_bytes + size > self.config.uncommitted_bytes_max
        {
            return Err(Error::Busy {
                uncommitted_bytes: self.uncommitted_bytes,
                limit: self.config.uncommitted_bytes_max,
            });
        }
        let index = self.log.last_index()? + 1;
        self.log.append(&[Entry {
            term: self.term,
            index,
            kind,
            data,
        }]);
        self.uncommitted_bytes += size;
        self.broadcast_due = true;
        Ok(index)
    }

    /// Is there anything for [`RaftGroup::ready`] to hand out?
    pub fn has_ready(&self) -> bool {
        self.broadcast_due
            || self.soft_state() != self.prev_soft
            || self.hard_state() != self.prev_hard
            || self.log.unstable_snapshot().is_some()
            || !self.log.unstable_entries().is_empty()
            || !self.messages.is_empty()
            || !self.messages_after_persist.is_empty()
            || self.log.has_next_committed()
            || !self.read_states.is_empty()
            || !self.reads_dropped.is_empty()
            || !self.election_events.is_empty()
            || self
                .pending_reads
                .iter()
                .any(|r| r.seq == 0 && self.term_committed())
    }

    pub(crate) fn soft_state(&self) -> SoftState {
        SoftState {
            role: self.role,
            leader: self.leader,
            term: self.term,
        }
    }

    pub(crate) fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed,
        }
    }

    /// Takes everything there is to persist, send and apply.
    pub fn ready(&mut self) -> Ready {
        if self.broadcast_due {
            self.broadcast_due = false;
            self.broadcast_append();
        }
        self.start_read_round();
        let mut ready = Ready::default();
        let soft = self.soft_state();
        if soft != self.prev_soft {
            ready.soft_state = Some(soft);
            self.prev_soft = soft;
        }
        let hard = self.hard_state();
        let term_or_vote_changed =
            hard.term != self.prev_hard.term || hard.vote != self.prev_hard.vote;
        if hard != self.prev_hard {
            ready.sync |= term_or_vote_changed;
            ready.hard_state = Some(hard);
            self.prev_hard = hard;
        }
        if let Some(snapshot) = self.log.unstable_snapshot() {
            ready.snapshot_index = Some(snapshot.meta.index);
            ready.snapshot = Some(snapshot.clone());
        }
        ready.entries = self.log.unstable_entries().to_vec();
        ready.sync |= !ready.entries.is_empty() || ready.snapshot.is_some();
        if let Some(last) = ready.entries.last() {
            ready.persist_to = Some((last.index, last.term));
        }
        ready.messages = std::mem::take(&mut self.messages);
        ready.messages_after_persist = std::mem::take(&mut self.messages_after_persist);
        if term_or_vote_changed && !ready.messages.is_empty() {
            // Nothing this replica says in a new term or after a new vote
            // may leave before they are durable. A single voter elects
            // itself within one step and would otherwise send appends of a
            // term it may forget in a crash, then reuse it with other
            // entries at the same indexes.
            let mut early = std::mem::take(&mut ready.messages);
            early.append(&mut ready.messages_after_persist);
            ready.messages_after_persist = early;
        }
        // A committed, persisted entry that cannot be read means the store
        // is broken: hand out nothing and keep the error for
        // `store_error()`.
        match self
            .log
            .next_committed_entries(self.config.committed_bytes_per_ready_max)
        {
            Ok(entries) => {
                if let Some(last) = entries.last() {
                    ready.apply_to = Some(last.index);
                    self.log.applying = last.index;
                }
                if self.role == Role::Leader {
                    let bytes: u64 = entries.iter().map(|e| e.data.len() as u64).sum();
                    self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(bytes);
                }
                ready.committed_entries = entries;
            }
            Err(e) => self.note_store_error(e),
        }
        ready.read_states = std::mem::take(&mut self.read_states);
        ready.reads_dropped = std::mem::take(&mut self.reads_dropped);
        ready.elections = std::mem::take(&mut self.election_events);
        ready
    }

    /// The caller persisted and applied everything in `ready`. An engine
    /// that holds some committed entries back must not call this: it calls
    /// [`RaftGroup::advance_append`], then
    /// [`RaftGroup::advance_apply_to`] with the index it really applied,
    /// since the core decides on the applied index (no campaign while a
    /// committed configuration change is unapplied, one change at a time,
    /// quiescence).
    pub fn advance(&mut self, ready: Ready) {
        let apply_to = ready.apply_to;
        self.advance_append(ready);
        if let Some(index) = apply_to {
            self.advance_apply_to(index);
        }
    }

    /// The caller persisted `ready`'s snapshot, entries and hard state (and
    /// installed the snapshot in its state machine); committed entries are
    /// still being applied (report with [`RaftGroup::advance_apply_to`]).
    /// Later Readies hand out the entries after these, so the caller may
    /// apply them in order at its own pace.
    pub fn advance_append(&mut self, ready: Ready) {
        if let Some(index) = ready.snapshot_index {
            self.log.stable_snapshot_to(index);
            self.log.applying = self.log.applying.max(index);
            self.log.applied = self.log.applied.max(index);
        }
        if let Some((index, term)) = ready.persist_to {
            self.log.stable_to(index, term);
        }
        assert!(
            self.log.applied <= self.log.applying && self.log.applying <= self.log.committed,
            "replica {}: applied {} <= applying {} <= committed {} broke in advance_append",
            self.id,
            self.log.applied,
            self.log.applying,
            self.log.committed
        );
        if self.role == Role::Leader {
            let persisted = self.log.persisted_index();
            let id = self.id;
            let updated = match self.progress.get_mut(&id) {
                Some(pr) => pr.maybe_update(persisted),
                None => false,
            };
            if updated && self.maybe_commit() {
                self.broadcast_due = true;
            }
        }
    }

    /// The application applied every entry up to `index` (entries handed
    /// out in Readies; an index beyond them, e.g. a state store that a
    /// staged snapshot put ahead, counts only as far as they go).
    pub fn advance_apply_to(&mut self, index: Index) {
        if index > self.log.applied {
            self.log.applied = index.min(self.log.applying.max(self.log.applied));
        }
        assert!(
            self.log.applied <= self.log.applying && self.log.applying <= self.log.committed,
            "replica {}: applied {} <= applying {} <= committed {} broke in advance_apply_to({index})",
            self.id,
            self.log.applied,
            self.log.applying,
            self.log.committed
        );
    }

    /// The first error the log store returned on a path that could not
    /// return it (a tick, a message's side effects, a Ready). The core
    /// never guesses past such an error (no leadership with an unknown last
    /// index, no entries handed out); the engine should stop the replica.
    pub fn store_error(&self) -> Option<&StoreError> {
        self.store_error.as_ref()
    }

    pub(crate) fn note_store_error(&mut self, error: StoreError) {
        if self.store_error.is_none() {
            self.store_error = Some(error);
        }
    }

    /// The outcome of sending a snapshot to `to` (leader only).
    pub fn report_snapshot(&mut self, to: ReplicaId, success: bool) {
        if let Some(pr) = self.progress.get_mut(&to) {
            if pr.state == ProgressState::Snapshot {
                if !success {
                    pr.pending_snapshot = 0;
                }
                pr.become_probe();
                // Wait for the follower's answer (or a heartbeat) before
                // probing, so a failed snapshot is not resent in a loop.
                pr.probe_sent = true;
            }
        }
    }

    /// The transport could not reach `to` (leader only): stop streaming to
    /// it and probe again.
    pub fn report_unreachable(&mut self, to: ReplicaId) {
        if let Some(pr) = self.progress.get_mut(&to) {
            if pr.state == ProgressState::Replicate {
                pr.become_probe();
            }
        }
    }

    /// The state of this replica.
    pub fn status(&self) -> Status {
        let progress = if self.role == Role::Leader {
            self.progress
                .iter()
                .map(|(&id, pr)| ProgressStatus {
                    id,
                    matched: pr.matched,
                    next: pr.next,
                    state: pr.state,
                    is_learner: pr.is_learner,
                    recent_active: pr.recent_active || pr.was_active,
                })
                .collect()
        } else {
            Vec::new()
        };
        Status {
            id: self.id,
            role: self.role,
            term: self.term,
            vote: self.vote,
            leader: self.leader,
            commit: self.log.committed,
            applied: self.log.applied,
            first_index: self.log.first_index().unwrap_or(0),
            last_index: self.log.last_index().unwrap_or(0),
            conf_state: self.conf.clone(),
            progress,
            transfer_target: self.transfer_target,
            quiesced: self.quiesced,
        }
    }

    /// Queue a message. Leaders' messages may leave before the local
    /// persist (their disk write and the followers' run in parallel); all
    /// others answer or request based on state that must be durable first.
    pub(crate) fn send(&mut self, to: ReplicaId, body: MessageBody) {
        if self.role == Role::Leader && matches!(body, MessageBody::TimeoutNow) {
            self.lease_revoked = true;
        }
        let message = Message {
            from: self.id,
            to,
            term: self.term,
            body,
        };
        if self.role == Role::Leader {
            self.messages.push(message);
        } else {
            self.messages_after_persist.push(message);
        }
    }

    /// Like [`Self::send`] with an explicit term (vote answers).
    pub(crate) fn send_with_term(&mut self, to: ReplicaId, term: Term, body: MessageBody) {
        self.messages_after_persist.push(Message {
            from: self.id,
            to,
            term,
            body,
        });
    }

    pub(crate) fn new_progress(&self, next: Index, is_learner: bool) -> Progress {
        Progress::new(
            next,
            Inflights::new(
                self.config.inflight_messages_max,
                self.config.inflight_bytes_max,
            ),
            is_learner,
        )
    }

    /// Has the leader committed an entry of its own term? Until then it
    /// may not know the full commit index (§8), so it serves no reads and
    /// proposes no configuration change.
    pub(crate) fn term_committed(&self) -> bool {
        matches!(self.log.term(self.log.committed), Ok(t) if t == self.term)
    }

    /// Any activity ends quiescence. A leader starts over: no lease from a
    /// round before it quiesced (its ticks may have stopped meanwhile),
    /// and a full check-quorum round in which every follower must answer.
    pub(crate) fn wake(&mut self) {
        if self.quiesced {
            self.quiesced = false;
            self.ticks_election_elapsed = 0;
            self.ticks_heartbeat_elapsed = 0;
            self.ticks_quiesced_elapsed = 0;
            self.heartbeat_seq_ticks.clear();
            let id = self.id;
            for (&member, pr) in self.progress.iter_mut() {
                pr.recent_active = member == id;
            }
        }
    }

    /// Used by `membership`: change in place once an entry applies.
    pub(crate) fn set_conf(&mut self, conf: ConfState) {
        self.conf = conf;
    }

    /// Is `change` proposable now? (membership rules; see `membership`.)
    pub(crate) fn check_conf_change(&self, change: &ConfChange) -> Result<(), Error> {
        self.conf.apply(change)?;
        Ok(())
    }
}
