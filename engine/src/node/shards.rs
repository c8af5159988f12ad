//! Pollers: a node's ranges are shared out among several raft loops
//! ("shards"), one thread each. A loop owns its ranges outright, exactly as
//! the single loop did, so nothing inside a cycle is shared or locked; the
//! loops share only the WAL (whose group commit merges their writes into
//! one fsync), the state store, the range map and the transport.
//!
//! Where a range lives is `home(range)` (a hash of its id) unless a
//! hand-over moved it. Whatever reaches a loop for a range it does not own
//! is forwarded to the owner, so a sender that read an old placement only
//! costs a hop. The one operation that needs two ranges in one loop, a
//! merge, first pulls the source over to the target's loop (`Release` →
//! `Adopt`); the peer moves with everything pending on it.

use super::*;

/// Which loop owns which range.
pub(crate) struct Placement {
    pollers: usize,
    /// Ranges away from their home loop (merge sources and the like).
    moved: RwLock<HashMap<RangeId, usize>>,
}

impl Placement {
    pub(crate) fn new(pollers: usize) -> Placement {
        Placement {
            pollers: pollers.max(1),
            moved: RwLock::new(HashMap::new()),
        }
    }

    /// Where a range starts: ids are `counter << 16 | node`, so the hash
    /// mixes the bits before taking the remainder.
    pub(crate) fn home(&self, range_id: RangeId) -> usize {
        let mut x = range_id.wrapping_add(0x9E37_79B9_7F4A_7C15);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
        (x % self.pollers as u64) as usize
    }

    pub(crate) fn shard_of(&self, range_id: RangeId) -> usize {
        if self.pollers == 1 {
            return 0;
        }
        self.moved
            .read()
            .get(&range_id)
            .copied()
            .unwrap_or_else(|| self.home(range_id))
    }

    pub(crate) fn set(&self, range_id: RangeId, shard: usize) {
        if self.pollers == 1 {
            return;
        }
        let mut moved = self.moved.write();
        if shard == self.home(range_id) {
            moved.remove(&range_id);
        } else {
            moved.insert(range_id, shard);
        }
    }

    pub(crate) fn forget(&self, range_id: RangeId) {
        if self.pollers > 1 {
            self.moved.write().remove(&range_id);
        }
    }
}

/// The loops' mailboxes and what every loop and the API share.
#[derive(Clone)]
pub(crate) struct Shards {
    /// Bounded: requests, Raft messages from other nodes, ticks. A full
    /// one refuses (`Busy`) or drops (Raft retransmits).
    pub inboxes: Vec<Sender<Msg>>,
    /// Unbounded: loop-to-loop messages and reports of background tasks,
    /// which must not be lost and must never block a loop on another.
    pub control: Vec<Sender<Msg>>,
    pub placement: Arc<Placement>,
    /// Every local range (and removed ones, for routing), one map for all.
    pub router: Arc<RwLock<Router>>,
    /// A loop stopped on a storage failure: the node refuses requests.
    pub failed: Arc<std::sync::atomic::AtomicBool>,
}

/// The receiving ends of one loop's mailboxes.
pub(crate) struct Mailbox {
    pub inbox: Receiver<Msg>,
    pub control: Receiver<Msg>,
}

impl Shards {
    pub(crate) fn new(pollers: usize, queued_max: usize) -> (Shards, Vec<Mailbox>) {
        let pollers = pollers.max(1);
        let mut inboxes = Vec::with_capacity(pollers);
        let mut control = Vec::with_capacity(pollers);
        let mut mailboxes = Vec::with_capacity(pollers);
        for _ in 0..pollers {
            // Each loop's share of the node's bound.
            let (tx, rx) = crossbeam_channel::bounded((queued_max / pollers).max(1));
            let (ctx, crx) = crossbeam_channel::unbounded();
            inboxes.push(tx);
            control.push(ctx);
            mailboxes.push(Mailbox {
                inbox: rx,
                control: crx,
            });
        }
        let shards = Shards {
            inboxes,
            control,
            placement: Arc::new(Placement::new(pollers)),
            router: Arc::new(RwLock::new(Router::new(RangeMap::new()))),
            failed: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        };
        (shards, mailboxes)
    }

    pub(crate) fn count(&self) -> usize {
        self.inboxes.len()
    }

    /// The loop that owns the range holding `key` (loop 0 when no range
    /// does: it answers with the error).
    pub(crate) fn shard_for_key(&self, key: &[u8]) -> usize {
        if self.count() == 1 {
            return 0;
        }
        match self.router.read().route(key) {
            Ok(target) => self.placement.shard_of(target.range.id),
            Err(_) => 0,
        }
    }

    /// Reliable delivery to the loop that owns `range_id`.
    pub(crate) fn report(&self, range_id: RangeId, msg: Msg) {
        let shard = self.placement.shard_of(range_id);
        let _ = self.control[shard].send(msg);
    }

    /// Raft messages from another node, split by owning loop. Never
    /// blocks the transport: a full mailbox drops and Raft retransmits.
    pub(crate) fn inbound_raft(&self, from: NodeId, messages: Vec<RaftEnvelope>) {
        let dropped = |n: usize| {
            metrics::counter!("flotilla_engine_inbound_dropped_total").increment(n as u64);
        };
        if self.count() == 1 {
            if self.inboxes[0]
                .try_send(Msg::Raft { from, messages })
                .is_err()
            {
                dropped(1);
            }
            return;
        }
        let mut per_shard: Vec<Vec<RaftEnvelope>> = vec![Vec::new(); self.count()];
        for envelope in messages {
            per_shard[self.placement.shard_of(envelope.range_id)].push(envelope);
        }
        for (shard, messages) in per_shard.into_iter().enumerate() {
            if !messages.is_empty()
                && self.inboxes[shard]
                    .try_send(Msg::Raft { from, messages })
                    .is_err()
            {
                dropped(1);
            }
        }
    }
}

/// Where a message's range is, seen from one loop.
pub(super) enum Whereabouts {
    Here,
    /// Owned by that other loop: forward.
    Elsewhere(usize),
    /// Placed here but not arrived yet: wait for it.
    Arriving(RangeId),
}

/// A range on its way from one loop to another, with everything the old
/// loop kept about it.
pub(crate) struct Adopted {
    peer: Peer,
    frozen_since: Option<Instant>,
    merge: Option<MergeJob>,
    membership: Option<MembershipJob>,
    transfer: Option<TransferJob>,
    /// The old loop's lease blackout (see `lease_clock_ok`).
    lease_blocked_until: Option<Instant>,
}

/// A message waiting until ranges arrive in this loop.
pub(super) struct Parked {
    waiting: Vec<RangeId>,
    since: Instant,
    pub msg: Msg,
}

/// How often a pull is asked for again while it has not arrived.
const PULL_RETRY: std::time::Duration = std::time::Duration::from_millis(500);

/// When a pull that never arrived (its range left the node) is forgotten.
pub(super) const PULL_FORGET: std::time::Duration = std::time::Duration::from_secs(60);

impl Request {
    /// Answer with `error` (requests whose reply carries no error are
    /// dropped: their caller sees the loop gone).
    pub(crate) fn fail(self, error: Error) {
        match self {
            Request::Write { reply, .. }
            | Request::Split { reply, .. }
            | Request::Merge { reply, .. }
            | Request::AddReplica { reply, .. }
            | Request::RemoveReplica { reply, .. }
            | Request::TransferLeader { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Request::Get { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Request::Scan { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Request::Ranges { .. } | Request::Stats { .. } => {}
        }
    }
}

impl Node {
    /// The other loop that owns `range_id`, if it is not this one.
    pub(super) fn owner_elsewhere(&self, range_id: RangeId) -> Option<usize> {
        if self.shards.count() == 1 || self.peers.contains_key(&range_id) {
            return None;
        }
        let shard = self.shards.placement.shard_of(range_id);
        (shard != self.shard).then_some(shard)
    }

    /// Whether some loop of this node holds a replica of `range_id`.
    pub(super) fn on_node(&self, range_id: RangeId) -> bool {
        self.peers.contains_key(&range_id) || self.applied_shared.read().contains_key(&range_id)
    }

    pub(super) fn forward(&self, shard: usize, msg: Msg) {
        let _ = self.shards.control[shard].send(msg);
    }

    /// Where the one range a message is about lives, seen from here.
    pub(super) fn placement_of(&self, msg: &Msg) -> Whereabouts {
        let range_id = match msg {
            Msg::Request(request) => match request {
                Request::Write { ops, .. } => {
                    ops.first().and_then(|op| self.range_for_key(op.key()))
                }
                Request::Get { key, .. } | Request::Split { key, .. } => self.range_for_key(key),
                Request::Merge { left, .. } => Some(*left),
                Request::AddReplica { range_id, .. }
                | Request::RemoveReplica { range_id, .. }
                | Request::TransferLeader { range_id, .. } => Some(*range_id),
                // Must not miss a range on its way here.
                Request::Ranges { .. } => {
                    return match self.arriving().first() {
                        Some(&range_id) => Whereabouts::Arriving(range_id),
                        None => Whereabouts::Here,
                    }
                }
                Request::Scan { .. } | Request::Stats { .. } => None,
            },
            Msg::SnapshotStaged(staged) => Some(staged.meta().range_id),
            Msg::MergeRefused { source } => Some(*source),
            Msg::SnapshotSent { range_id, .. } | Msg::ScanPart { range_id, .. } => Some(*range_id),
            _ => None,
        };
        match range_id {
            Some(range_id) => self.whereabouts(range_id),
            None => Whereabouts::Here,
        }
    }

    /// Where a range lives, seen from this loop. `Here` also for a range
    /// not on the node: this loop then answers for it.
    pub(super) fn whereabouts(&self, range_id: RangeId) -> Whereabouts {
        if let Some(owner) = self.owner_elsewhere(range_id) {
            return Whereabouts::Elsewhere(owner);
        }
        if self.shards.count() > 1 && !self.peers.contains_key(&range_id) && self.on_node(range_id)
        {
            return Whereabouts::Arriving(range_id);
        }
        Whereabouts::Here
    }

    /// Ranges placed in this loop that are not here yet: a split's new
    /// range or a hand-over still in the queue.
    pub(super) fn arriving(&self) -> Vec<RangeId> {
        let applied = self.applied_shared.read();
        applied
            .keys()
            .copied()
            .filter(|id| {
                !self.peers.contains_key(id) && self.shards.placement.shard_of(*id) == self.shard
            })
            .collect()
    }

    fn range_for_key(&self, key: &[u8]) -> Option<RangeId> {
        self.router.read().route(key).ok().map(|t| t.range.id)
    }

    /// Ask the loop holding `range_id` to hand it over to this one.
    pub(super) fn pull(&mut self, range_id: RangeId) {
        let Some(owner) = self.owner_elsewhere(range_id) else {
            return;
        };
        let now = Instant::now();
        if self
            .pulling
            .get(&range_id)
            .is_some_and(|at| now.duration_since(*at) < PULL_RETRY)
        {
            return;
        }
        self.pulling.insert(range_id, now);
        self.forward(
            owner,
            Msg::Release {
                range_id,
                to: self.shard,
            },
        );
    }

    /// Hand `range_id` over to loop `to`. The peer travels with its
    /// pending proposals and reads, held entries and admin jobs.
    pub(super) fn release(&mut self, range_id: RangeId, to: usize) {
        if to == self.shard || to >= self.shards.count() {
            return;
        }
        let Some(peer) = self.peers.get(&range_id) else {
            // Moved on already: pass the request along to the owner.
            if let Some(owner) = self.owner_elsewhere(range_id) {
                if owner != to {
                    self.forward(owner, Msg::Release { range_id, to });
                }
            }
            return;
        };
        // A merge this loop drives needs both its ranges here; a frozen
        // source goes only to its target's loop. The asker's wait ends at
        // a request timeout; the merge's own end settles it sooner.
        let driven_here = self
            .merges
            .iter()
            .any(|(source, job)| *source == range_id || job.target == range_id);
        let frozen_elsewhere = peer
            .meta
            .frozen
            .is_some_and(|f| self.shards.placement.shard_of(f.target) != to);
        if driven_here || frozen_elsewhere {
            tracing::debug!(range_id, to, "range kept: a merge needs it in this loop");
            return;
        }
        let Some(peer) = self.peers.remove(&range_id) else {
            return;
        };
        // A stalled loop's lease blackout goes with its ranges.
        self.note_tick_gap(Instant::now());
        self.auto.forget(range_id);
        self.pulling.remove(&range_id);
        let adopted = Adopted {
            peer,
            frozen_since: self.frozen_since.remove(&range_id),
            merge: self.merges.remove(&range_id),
            membership: self.membership.remove(&range_id),
            transfer: self.transfers.remove(&range_id),
            lease_blocked_until: self.lease_blocked_until,
        };
        // The placement first: from now on the new loop takes the range
        // for arriving (and parks what comes for it) until the peer does.
        self.shards.placement.set(range_id, to);
        self.forward(to, Msg::Adopt(Box::new(adopted)));
        self.stats.handovers += 1;
        metrics::counter!("flotilla_range_handovers_total").increment(1);
        tracing::debug!(range_id, from = self.shard, to, "range handed over");
    }

    pub(super) fn adopt(&mut self, adopted: Adopted) {
        let range_id = adopted.peer.range_id();
        self.pulling.remove(&range_id);
        self.holding |= !adopted.peer.held.is_empty();
        if let Some(since) = adopted.frozen_since {
            self.frozen_since.insert(range_id, since);
        }
        if let Some(job) = adopted.merge {
            self.merges.insert(range_id, job);
        }
        if let Some(job) = adopted.membership {
            self.membership.insert(range_id, job);
        }
        if let Some(job) = adopted.transfer {
            self.transfers.insert(range_id, job);
        }
        if let Some(until) = adopted.lease_blocked_until {
            self.lease_blocked_until =
                Some(self.lease_blocked_until.map_or(until, |u| u.max(until)));
        }
        self.peers.insert(range_id, adopted.peer);
        self.shards.placement.set(range_id, self.shard);
        // Vote requests that came while it was on its way.
        if let Some(early) = self.early_votes.remove(&range_id) {
            for (from, envelope) in early.messages {
                self.step_messages(from, vec![envelope]);
            }
        }
        self.retry_parked(false);
    }

    /// Keep `msg` until every range in `waiting` is in this loop (pulled
    /// here) or gone from the node.
    pub(super) fn park(&mut self, waiting: Vec<RangeId>, msg: Msg) {
        for &range_id in &waiting {
            self.pull(range_id);
        }
        self.parked.push(Parked {
            waiting,
            since: Instant::now(),
            msg,
        });
    }

    /// Run parked messages whose ranges arrived; on a tick, ask again for
    /// the missing ones and give up on those older than a request timeout.
    pub(super) fn retry_parked(&mut self, tick: bool) {
        if self.parked.is_empty() {
            return;
        }
        let now = Instant::now();
        let parked = std::mem::take(&mut self.parked);
        let mut still = Vec::new();
        for p in parked {
            let missing: Vec<RangeId> = p
                .waiting
                .iter()
                .copied()
                .filter(|id| !self.peers.contains_key(id) && self.on_node(*id))
                .collect();
            if missing.is_empty() {
                self.dispatch(p.msg);
            } else if tick && now.duration_since(p.since) >= self.config.request_timeout {
                tracing::warn!(?missing, "ranges were not handed over in time");
                let error = Error::Busy(format!(
                    "ranges {missing:?} are moving between raft loops; retry"
                ));
                match p.msg {
                    // Raft must hear how its snapshot send ended: try again.
                    msg @ Msg::SnapshotSent { .. } => self.dispatch(msg),
                    msg => give_up(msg, error),
                }
            } else {
                if tick {
                    for &range_id in &missing {
                        self.pull(range_id);
                    }
                }
                still.push(p);
            }
        }
        self.parked.append(&mut still);
    }

    /// Local ranges (in any loop) overlapping `desc`, except `desc` itself.
    pub(super) fn local_overlapping(&self, desc: &RangeDescriptor) -> Vec<RangeId> {
        let candidates: Vec<RangeId> = self
            .router
            .read()
            .map()
            .overlapping(&desc.start, &desc.end)
            .map(|r| r.id)
            .filter(|id| *id != desc.id)
            .collect();
        let mut found: Vec<RangeId> = candidates
            .into_iter()
            .filter(|id| self.on_node(*id))
            .collect();
        // This loop's own view is authoritative for its ranges.
        for (id, peer) in &self.peers {
            if *id != desc.id && overlaps(&peer.meta.desc, desc) && !found.contains(id) {
                found.push(*id);
            }
        }
        found
    }
}

/// Answer what waits in a message with `error` (a snapshot that is not
/// installed is sent again by its leader; other messages carry no caller).
pub(super) fn give_up(msg: Msg, error: Error) {
    match msg {
        Msg::Request(request) => request.fail(error),
        Msg::ScanPart { job, .. } => job.fail(error),
        _ => {}
    }
}

/// Whether two key ranges share a key (an empty end is unbounded).
pub(super) fn overlaps(a: &RangeDescriptor, b: &RangeDescriptor) -> bool {
    let starts_before_end =
        |x: &RangeDescriptor, y: &RangeDescriptor| y.end.is_empty() || x.start < y.end;
    starts_before_end(a, b) && starts_before_end(b, a)
}
