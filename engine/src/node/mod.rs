//! A raft loop: one thread that owns its share of the node's ranges (a
//! node runs `pollers` of them, see `shards`), takes requests from a
//! bounded mailbox, and runs the batched cycle of
//! DESIGN.md: all ready groups' entries and hard states in ONE WAL write
//! (one fsync), then all their committed entries in ONE state store batch,
//! then the callers' replies.
//!
//! A group with nothing to do costs nothing: only groups that have a Ready
//! are visited in a cycle (ticks excepted).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use flotilla_raftgroup::{
    ConfChange, ConfState, EntryKind, HardState, RaftGroup, ReplicaId, Role, BOOTSTRAP_INDEX,
    BOOTSTRAP_TERM,
};
use flotilla_raftgroup::{Snapshot, SnapshotMeta};
use flotilla_router::range::{RangeDescriptor, RangeMap, ReplicaDescriptor, ReplicaRole, Router};
use flotilla_router::snapshot::{SnapshotRequest, StagedSnapshot};
use flotilla_router::{NodeId, RaftEnvelope, RangeId};
use flotilla_storage::state::StateStore;
use flotilla_storage::wal::{Wal, WriteBatch};
use parking_lot::RwLock;
use tokio::sync::oneshot;

use crate::apply::{absorbing_merge, apply_entry, write_command, Effect, LocalView};
use crate::command::{Command, WriteOp};
use crate::config::{EngineConfig, ReadMode};
use crate::error::Error;
use crate::meta::{Frozen, RangeMeta};
use crate::network::Network;
use crate::peer::{ApplyTiming, Outcome, Peer, Proposal, ReadWaiter, Reply};
use crate::stats::NodeStats;

mod admin;
mod autosplit;
mod cycle;
mod membership;
mod merge;
mod open;
mod reads;
mod requests;
mod shards;
mod snapshots;

use autosplit::{AutoSplit, Measured};
use membership::{MembershipJob, TransferJob};
pub(crate) use merge::replica_nodes;
use merge::{merge_must_wait, MergeJob, MergeReadiness};
use shards::{overlaps, Parked, Whereabouts};
pub(crate) use shards::{Adopted, Mailbox, Shards};

/// Read consistency of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// Linearizable (ReadIndex, or the lease when configured).
    Linearizable,
    /// Whatever the local replica has applied: may be stale.
    Stale,
}

/// Requests the API sends to the raft loop.
pub(crate) enum Request {
    Write {
        ops: Vec<WriteOp>,
        reply: Reply,
    },
    Get {
        key: Bytes,
        consistency: Consistency,
        reply: oneshot::Sender<Result<Option<Bytes>, Error>>,
    },
    Scan {
        start: Bytes,
        end: Bytes,
        limit: usize,
        consistency: Consistency,
        reply: oneshot::Sender<Result<Vec<(Bytes, Bytes)>, Error>>,
    },
    Split {
        key: Bytes,
        reply: Reply,
    },
    Merge {
        left: RangeId,
        right: RangeId,
        reply: Reply,
    },
    AddReplica {
        range_id: RangeId,
        node: NodeId,
        reply: Reply,
    },
    RemoveReplica {
        range_id: RangeId,
        node: NodeId,
        reply: Reply,
    },
    TransferLeader {
        range_id: RangeId,
        node: NodeId,
        reply: Reply,
    },
    Ranges {
        reply: oneshot::Sender<Vec<RangeInfo>>,
    },
    Stats {
        reply: oneshot::Sender<NodeStats>,
    },
}

/// Mailbox messages of the raft loop.
pub(crate) enum Msg {
    Request(Request),
    Tick,
    /// Raft messages from another node.
    Raft {
        from: NodeId,
        messages: Vec<RaftEnvelope>,
    },
    /// A snapshot for a local range arrived and is staged on disk.
    SnapshotStaged(Box<StagedSnapshot>),
    /// A snapshot this node sent finished (or failed).
    SnapshotSent {
        range_id: RangeId,
        to: ReplicaId,
        meta: SnapshotMeta,
        ok: bool,
    },
    /// The transport gave up reaching a node.
    PeerDown(NodeId),
    /// A background size check of a range finished.
    Measured(Measured),
    /// Start a range made by a split in another loop (this is its home).
    StartPeer {
        meta: RangeMeta,
        campaign: bool,
        /// Check its size soon (its parent was split for size).
        remeasure: bool,
    },
    /// Hand the range over to loop `to` (it needs it for a merge).
    Release {
        range_id: RangeId,
        to: usize,
    },
    /// A range handed over by another loop.
    Adopt(Box<Adopted>),
    /// The target refused the merge of `source`, which this loop holds.
    MergeRefused {
        source: RangeId,
    },
    /// One range's share of a scan started by another loop.
    ScanPart {
        range_id: RangeId,
        consistency: Consistency,
        job: Arc<ScanJob>,
    },
    Shutdown(oneshot::Sender<Result<(), Error>>),
}

/// A range as reported by [`crate::Engine::ranges`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeInfo {
    pub descriptor: RangeDescriptor,
    pub role: Role,
    pub term: u64,
    pub applied_index: u64,
    pub merging_into: Option<RangeId>,
}

type ScanReply = oneshot::Sender<Result<Vec<(Bytes, Bytes)>, Error>>;

/// A scan waiting for its ranges' reads to be confirmed; shared by the
/// loops that own those ranges: the last confirmation runs it.
pub(crate) struct ScanJob {
    start: Bytes,
    end: Bytes,
    limit: usize,
    waiting: std::sync::atomic::AtomicUsize,
    reply: parking_lot::Mutex<Option<ScanReply>>,
}

impl ScanJob {
    /// Answer with an error unless already answered.
    pub(crate) fn fail(&self, error: Error) {
        if let Some(reply) = self.reply.lock().take() {
            let _ = reply.send(Err(error));
        }
    }
}

/// Vote requests that arrived for a range before this node created it.
struct EarlyVotes {
    since: Instant,
    messages: Vec<(NodeId, RaftEnvelope)>,
}

/// Bounds of the early vote buffer: ranges, messages per range, age.
const EARLY_VOTE_RANGES_MAX: usize = 4096;
const EARLY_VOTES_PER_RANGE_MAX: usize = 8;
const EARLY_VOTE_AGE_MAX: std::time::Duration = std::time::Duration::from_secs(2);

pub(crate) struct Node {
    config: EngineConfig,
    store: StateStore,
    wal: Arc<Wal>,
    peers: BTreeMap<RangeId, Peer>,
    /// Which of the node's raft loops this is, and how to reach the others.
    shard: usize,
    shards: Shards,
    /// The node's range map, shared by its loops.
    router: Arc<RwLock<Router>>,
    /// Messages waiting for ranges to be handed over to this loop.
    parked: Vec<Parked>,
    /// A failure outside a cycle that must stop the node (checked by the
    /// loop after handling its messages).
    fatal: Option<Error>,
    /// Hand-overs asked for, and when.
    pulling: HashMap<RangeId, Instant>,
    merges: HashMap<RangeId, MergeJob>,
    /// Merge sources frozen here, since when (the orphan check).
    frozen_since: HashMap<RangeId, Instant>,
    /// Load and size tracking for automatic splits and merges.
    auto: AutoSplit,
    /// Some range of this loop may hold committed entries it could not
    /// apply yet (`Peer::held`): cycles must look again. Cleared by the
    /// cycle that finds none.
    holding: bool,
    /// The last round of cycles stopped while still finding work.
    cycle_pending: bool,
    membership: HashMap<RangeId, MembershipJob>,
    transfers: HashMap<RangeId, TransferJob>,
    /// Unknown ranges whose snapshot could not create a replica here (a
    /// split not applied yet): no probe answers until the instant passes.
    unknown_cooldown: HashMap<RangeId, Instant>,
    /// Vote requests for ranges not (yet) here, kept briefly.
    early_votes: HashMap<RangeId, EarlyVotes>,
    next_context: u64,
    stats: NodeStats,
    started: Instant,
    network: Option<Arc<Network>>,
    ticks: u64,
    /// When the loop last handled a tick, and until when leases are not
    /// trusted after a gap (see `lease_clock_ok`).
    last_tick_at: Instant,
    lease_blocked_until: Option<Instant>,
    /// Applied index per local range, read by the snapshot receiver.
    applied_shared: Arc<RwLock<HashMap<RangeId, u64>>>,
}

/// Cluster-unique ids: a node-local counter in the high bits, the node id
/// in the low 16 bits. Two nodes never make the same id, and a node never
/// makes one twice (the counter is persisted and only grows).
fn make_id(counter: u64, node_id: u64) -> u64 {
    (counter << 16) | (node_id & 0xFFFF)
}

impl Node {
    /// The loop. Returns when shut down or when storage fails.
    pub(crate) fn run(mut self, mailbox: Mailbox) {
        let mut shutdown: Option<oneshot::Sender<Result<(), Error>>> = None;
        // Loop-to-loop messages first: a hand-over or a forwarded message
        // is older than what the API sent after it.
        let next_msg = |mailbox: &Mailbox| {
            mailbox
                .control
                .try_recv()
                .or_else(|_| mailbox.inbox.try_recv())
                .ok()
        };
        while shutdown.is_none() {
            let first = match next_msg(&mailbox) {
                Some(msg) => msg,
                None => {
                    let received = crossbeam_channel::select_biased! {
                        recv(mailbox.control) -> msg => msg,
                        recv(mailbox.inbox) -> msg => msg,
                    };
                    // The API's side closed: the engine is gone.
                    let Ok(msg) = received else { break };
                    msg
                }
            };
            let mut next = Some(first);
            let mut handled = 0;
            // Anything but a tick may give a group a ready; a tick only
            // when it ticked an awake group or ran a job (see `tick`).
            let mut busy = self.cycle_pending || self.holding;
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Tick => busy |= self.tick(),
                    Msg::Shutdown(reply) => {
                        shutdown = Some(reply);
                        break;
                    }
                    msg => {
                        busy = true;
                        self.dispatch(msg);
                    }
                }
                handled += 1;
                if handled < 4096 {
                    next = next_msg(&mailbox);
                }
            }
            // A cycle's persist can make entries committable (a single
            // voter commits on its own persist): run again at once rather
            // than wait for the next message.
            let mut result = match self.fatal.take() {
                Some(e) => Err(e),
                None => Ok(false),
            };
            if busy && result.is_ok() {
                result = Ok(true);
                for _ in 0..8 {
                    result = self.cycle();
                    if !matches!(result, Ok(true)) {
                        break;
                    }
                }
            }
            // Eight busy cycles in a row: there may be more; do not wait
            // for a message that does not come.
            self.cycle_pending = matches!(result, Ok(true));
            if result.is_ok()
                && !(self.membership.is_empty()
                    && self.transfers.is_empty()
                    && self.merges.is_empty())
            {
                self.drive_admin_jobs();
            }
            if let Err(e) = result {
                tracing::error!(error = %e, shard = self.shard, "storage failure: stopping the node");
                // The whole node stops, as one loop did: a loop left
                // running could wait forever on a range the failed one held.
                self.shards
                    .failed
                    .store(true, std::sync::atomic::Ordering::Release);
                for (shard, control) in self.shards.control.iter().enumerate() {
                    if shard != self.shard {
                        let (reply, _ignored) = oneshot::channel();
                        let _ = control.send(Msg::Shutdown(reply));
                    }
                }
                self.fail_everything(&e);
                if let Some(reply) = shutdown.take() {
                    let _ = reply.send(Err(e));
                }
                return;
            }
        }
        // Refuse what is still queued, flush, stop.
        while let Some(msg) = next_msg(&mailbox) {
            match msg {
                Msg::Shutdown(reply) => {
                    let _ = reply.send(Ok(()));
                }
                Msg::Request(request) => request.fail(Error::Closed),
                _ => {}
            }
        }
        self.fail_everything(&Error::Closed);
        let result = self.store.sync().map_err(Error::from);
        tracing::info!(
            node_id = self.config.node_id,
            shard = self.shard,
            "raft loop stopped"
        );
        if let Some(reply) = shutdown {
            let _ = reply.send(result);
        }
    }

    /// Everything but ticks and shutdown.
    fn dispatch(&mut self, msg: Msg) {
        if self.shards.count() > 1 {
            match self.placement_of(&msg) {
                Whereabouts::Here => {}
                Whereabouts::Elsewhere(owner) => return self.forward(owner, msg),
                Whereabouts::Arriving(range_id) => return self.park(vec![range_id], msg),
            }
        }
        match msg {
            Msg::Request(request) => self.handle_request(request),
            Msg::Raft { from, messages } => self.step_messages(from, messages),
            Msg::SnapshotStaged(staged) => self.install_staged(*staged),
            Msg::SnapshotSent {
                range_id,
                to,
                meta,
                ok,
            } => self.snapshot_sent(range_id, to, meta, ok),
            Msg::PeerDown(node) => self.peer_down(node),
            Msg::Measured(measured) => self.measured(measured),
            Msg::StartPeer {
                meta,
                campaign,
                remeasure,
            } => {
                let range_id = meta.desc.id;
                if let Err(e) = self.start_peer(meta, campaign, true) {
                    // Its split is committed: the node cannot go on without it.
                    tracing::error!(range_id, error = %e, "cannot start a range made by a split");
                    self.fatal = Some(e);
                    return;
                }
                if remeasure {
                    self.auto.measure_soon(range_id);
                }
                self.retry_parked(false);
            }
            Msg::Release { range_id, to } => self.release(range_id, to),
            Msg::MergeRefused { source } => self.merge_refused(source),
            Msg::Adopt(adopted) => self.adopt(*adopted),
            Msg::ScanPart {
                range_id,
                consistency,
                job,
            } => self.start_read(range_id, consistency, ReadWaiter::Scan { job }),
            Msg::Tick | Msg::Shutdown(_) => {}
        }
    }

    /// A read context unique across the node's loops (a range keeps its
    /// pending reads when it moves to another loop).
    pub(super) fn next_context(&mut self) -> u64 {
        let context = (self.next_context << 8) | self.shard as u64;
        self.next_context += 1;
        context
    }

    fn fail_everything(&mut self, error: &Error) {
        for peer in self.peers.values_mut() {
            peer.fail_all(error);
        }
        for parked in std::mem::take(&mut self.parked) {
            shards::give_up(parked.msg, error.clone());
        }
        for (_, job) in self.merges.drain() {
            let _ = job.reply.send(Err(error.clone()));
        }
        for (_, job) in self.membership.drain() {
            job.fail(error.clone());
        }
        for (_, job) in self.transfers.drain() {
            job.fail(error.clone());
        }
    }

    fn step_messages(&mut self, from: NodeId, messages: Vec<RaftEnvelope>) {
        let mut elsewhere: Vec<(usize, RaftEnvelope)> = Vec::new();
        for envelope in messages {
            match self.whereabouts(envelope.range_id) {
                Whereabouts::Here => {}
                Whereabouts::Elsewhere(owner) => {
                    elsewhere.push((owner, envelope));
                    continue;
                }
                // On its way to this loop: Raft sends it again; a vote
                // request is kept, as for a range not started yet.
                Whereabouts::Arriving(_) => {
                    self.keep_early_vote(from, envelope);
                    continue;
                }
            }
            let Some(peer) = self.peers.get_mut(&envelope.range_id) else {
                // Unknown here: a range whose split this node has not
                // applied yet, one it no longer holds, or one it is being
                // added to. Never creates an empty replica that could
                // conflict with a split: at most it asks for a snapshot,
                // which creates the replica only if nothing overlaps it.
                self.stats.messages_dropped_unknown_range += 1;
                self.answer_unknown(from, &envelope);
                self.keep_early_vote(from, envelope);
                continue;
            };
            if envelope.message.to != peer.replica_id {
                // For another replica of this range on this node: ours is
                // stale (removed without knowing). Make sure it ticks, so it
                // campaigns and learns that it is no member (see below).
                peer.group.wake_up();
                self.stats.messages_dropped_unknown_range += 1;
                continue;
            }
            if self.not_a_member(from, &envelope) {
                continue;
            }
            let Some(peer) = self.peers.get_mut(&envelope.range_id) else {
                continue;
            };
            if let flotilla_raftgroup::MessageBody::InstallSnapshot { snapshot } =
                &envelope.message.body
            {
                // Only once the data is in the state store: Raft must never
                // restore to an index whose state is missing here.
                if snapshot.meta.index > peer.applied.0 {
                    self.stats.messages_dropped_unknown_range += 1;
                    continue;
                }
            }
            if let Err(e) = peer.group.step(envelope.message) {
                tracing::debug!(range_id = envelope.range_id, from, error = %e, "message refused");
            }
        }
        // Ranges that moved to another loop since the sender looked (rare:
        // one message each).
        for (owner, envelope) in elsewhere {
            self.forward(
                owner,
                Msg::Raft {
                    from,
                    messages: vec![envelope],
                },
            );
        }
    }

    /// Keep a vote request for a range this node does not hold, in case a
    /// split is about to create it here (bounded; see `EARLY_VOTE_*`).
    fn keep_early_vote(&mut self, from: NodeId, envelope: RaftEnvelope) {
        if !matches!(
            envelope.message.body,
            flotilla_raftgroup::MessageBody::RequestVote { .. }
        ) {
            return;
        }
        let now = Instant::now();
        if self.early_votes.len() >= EARLY_VOTE_RANGES_MAX {
            self.early_votes
                .retain(|_, e| now.duration_since(e.since) < EARLY_VOTE_AGE_MAX);
            if self.early_votes.len() >= EARLY_VOTE_RANGES_MAX {
                return;
            }
        }
        let entry = self
            .early_votes
            .entry(envelope.range_id)
            .or_insert_with(|| EarlyVotes {
                since: now,
                messages: Vec::new(),
            });
        if entry.messages.len() < EARLY_VOTES_PER_RANGE_MAX {
            entry.messages.push((from, envelope));
        }
    }

    /// Wake every group led from `node` so it can elect a new leader.
    fn peer_down(&mut self, node: NodeId) {
        for peer in self.peers.values_mut() {
            if peer.leader_hint().is_some_and(|l| l.node_id == node) {
                peer.group.wake_up();
            }
        }
    }

    /// Hand messages to the transport, grouped per node by the transport
    /// until the flush at the end of the cycle.
    fn send_messages(&mut self, range_id: RangeId, messages: Vec<flotilla_raftgroup::Message>) {
        if messages.is_empty() {
            return;
        }
        let Some(peer) = self.peers.get_mut(&range_id) else {
            return;
        };
        for message in messages {
            if let flotilla_raftgroup::MessageBody::InstallSnapshot { .. } = message.body {
                // The data goes first, through the snapshot scheduler; the
                // Raft message follows when it is durable on the follower.
                let to = message.to;
                let node = peer.meta.desc.replica(to).map(|r| r.node_id);
                let source = crate::snapshot::RangeSnapshotSource::open(
                    &self.store,
                    range_id,
                    &peer.meta.desc.start,
                    &peer.meta.desc.end,
                    peer.group.conf_state().clone(),
                );
                match (node, source, &self.network) {
                    (Some(node), Ok((source, meta)), Some(network)) => {
                        let request = SnapshotRequest {
                            to: node,
                            range_id,
                            index: meta.index,
                            term: meta.term,
                            size_hint_bytes: 0,
                        };
                        let service = network.snapshots.clone();
                        let shards = self.shards.clone();
                        self.stats.snapshots_sent += 1;
                        network.spawn(async move {
                            let outcome = service.send(request, source).await;
                            if let Err(e) = &outcome {
                                tracing::warn!(range_id, to, error = %e, "snapshot send failed");
                            }
                            shards.report(
                                range_id,
                                Msg::SnapshotSent {
                                    range_id,
                                    to,
                                    meta,
                                    ok: outcome.is_ok(),
                                },
                            );
                        });
                    }
                    (_, Err(e), _) => {
                        tracing::warn!(range_id, to, error = %e, "cannot read a snapshot of the range");
                        peer.group.report_snapshot(to, false);
                    }
                    _ => peer.group.report_snapshot(to, false),
                }
                continue;
            }
            let Some(node) = peer.meta.desc.replica(message.to).map(|r| r.node_id) else {
                continue;
            };
            match &self.network {
                Some(network) => network
                    .transport
                    .send(node, RaftEnvelope { range_id, message }),
                None => self.stats.messages_dropped_unknown_range += 1,
            }
        }
    }

    /// One timer tick. Hibernating groups are skipped; an idle leader whose
    /// followers hold everything tells them to hibernate too (no more ticks
    /// or heartbeats until a proposal, a message or a node failure).
    /// One timer tick for the awake groups and the node's periodic jobs.
    /// Returns whether a cycle may have work: an idle node whose groups all
    /// hibernate must not scan every group for a ready on every tick.
    fn tick(&mut self) -> bool {
        let now = Instant::now();
        self.note_tick_gap(now);
        self.last_tick_at = now;
        let mut hibernating = 0;
        let mut ticked = 0;
        for peer in self.peers.values_mut() {
            if peer.group.is_quiescent() {
                hibernating += 1;
                continue;
            }
            ticked += 1;
            peer.group.tick();
            if peer.group.is_leader()
                && peer.proposals.is_empty()
                && peer.reads_unconfirmed.is_empty()
                && peer.reads_confirmed.is_empty()
                && peer.group.quiesce()
            {
                hibernating += 1;
            }
        }
        self.stats.ranges_hibernating = hibernating;
        let jobs = !(self.membership.is_empty()
            && self.transfers.is_empty()
            && self.merges.is_empty()
            && self.frozen_since.is_empty());
        self.drive_admin_jobs();
        self.check_orphaned_merges(now);
        let parked = !self.parked.is_empty();
        self.retry_parked(true);
        if !self.pulling.is_empty() {
            // Asks for ranges that never came (gone from the node).
            self.pulling
                .retain(|_, at| now.duration_since(*at) < shards::PULL_FORGET);
        }
        let auto_split = self.check_auto_split(now);
        // The time half of the compaction policy, checked about once a
        // minute of ticks for every range (busy ranges are also checked
        // after each cycle that applied something).
        if !self.unknown_cooldown.is_empty() {
            self.unknown_cooldown.retain(|_, until| *until > now);
        }
        if !self.early_votes.is_empty() {
            self.early_votes
                .retain(|_, e| now.duration_since(e.since) < EARLY_VOTE_AGE_MAX);
        }
        self.ticks += 1;
        let compaction_round = self.ticks % 600 == 0;
        if compaction_round {
            let all: Vec<RangeId> = self.peers.keys().copied().collect();
            if let Err(e) = self.maybe_compact(&all) {
                tracing::error!(error = %e, "log compaction failed");
            }
        }
        metrics::gauge!("flotilla_ranges_hibernating").set(hibernating as f64);
        ticked > 0 || jobs || auto_split || compaction_round || parked
    }

    /// Compaction policy of DESIGN.md: every `log_compact_entries` applied
    /// entries or every `log_compact_interval`, whichever comes first. The
    /// truncated state is synced in the state store first, which also makes
    /// every earlier apply durable: no entry is dropped before its effect is.
    fn maybe_compact(&mut self, ranges: &[RangeId]) -> Result<(), Error> {
        let mut batch = WriteBatch::new();
        let now = Instant::now();
        let threshold = self.config.log_compact_entries;
        for range_id in ranges {
            let Some(peer) = self.peers.get_mut(range_id) else {
                continue;
            };
            let range_id = *range_id;
            let first = peer.group.first_index();
            let (applied, applied_term) = peer.applied;
            if applied < first {
                continue;
            }
            let due = applied + 1 - first >= threshold
                || now.duration_since(peer.compacted_at) >= self.config.log_compact_interval;
            if !due {
                continue;
            }
            // A leader keeps what its active followers still need, so a
            // follower a little behind catches up by log rather than by a
            // snapshot, but the log never grows past about 4x the threshold.
            let mut index = applied;
            if peer.group.is_leader() {
                let needed = peer
                    .group
                    .status()
                    .progress
                    .iter()
                    .filter(|p| p.id != peer.replica_id && p.recent_active)
                    .map(|p| p.matched)
                    .min();
                if let Some(needed) = needed {
                    index = index.min(needed.max(applied.saturating_sub(3 * threshold)));
                }
            }
            if index < first {
                continue;
            }
            let term = if index == applied {
                applied_term
            } else {
                match peer.group.log_term(index) {
                    Ok(term) => term,
                    Err(_) => continue,
                }
            };
            self.store.set_truncated_state(range_id, index, term)?;
            batch.compact(range_id, index, term);
            peer.compacted_at = now;
            self.stats.compactions += 1;
        }
        if !batch.is_empty() {
            self.wal.write(&batch, false)?;
            self.wal.purge()?;
        }
        Ok(())
    }
}
