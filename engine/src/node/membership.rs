//! Membership and leadership changes of a range, proposed by its leader:
//! add a replica (a learner that catches up by snapshot, then promoted to
//! voter), remove one, hand leadership over. And the other end: a node
//! creates its new replica from the first snapshot it receives, and
//! destroys a replica that was removed, leaving a tombstone.
//!
//! A membership entry carries, after the 9-byte Raft change, the node that
//! hosts the replica and the descriptor's `conf_version` the proposer saw.
//! Apply refuses the change when that version moved; since every replica
//! applies the same entries to the same descriptor, they all refuse alike,
//! and the Raft configuration never diverges from the descriptor.

use std::time::Duration;

use flotilla_raftgroup::{MessageBody, ProgressStatus};
use flotilla_storage::state::ApplyBatch;

use super::*;

/// Bytes of a membership entry's context.
const CONTEXT_LEN: usize = 16;

/// The context of a membership entry: hosting node, expected conf version.
pub(crate) fn encode_context(node: NodeId, conf_version: u64) -> [u8; CONTEXT_LEN] {
    let mut out = [0u8; CONTEXT_LEN];
    out[..8].copy_from_slice(&node.to_le_bytes());
    out[8..].copy_from_slice(&conf_version.to_le_bytes());
    out
}

fn decode_context(raw: &[u8]) -> Option<(NodeId, u64)> {
    if raw.len() != CONTEXT_LEN {
        return None;
    }
    let mut node = [0u8; 8];
    let mut version = [0u8; 8];
    node.copy_from_slice(&raw[..8]);
    version.copy_from_slice(&raw[8..]);
    Some((u64::from_le_bytes(node), u64::from_le_bytes(version)))
}

/// The descriptor after `change` of a replica hosted on `node`; the
/// configuration version goes up by one. Refuses changes that would put
/// two replicas of a range on one node or that name a replica wrongly.
pub(crate) fn changed_descriptor(
    desc: &RangeDescriptor,
    change: &ConfChange,
    node: NodeId,
) -> Result<RangeDescriptor, String> {
    let mut next = desc.clone();
    let id = change.replica();
    let existing = desc.replica(id).copied();
    let on_node = desc.replica_on(node).copied();
    match (change, existing) {
        (ConfChange::AddLearner(_), Some(_)) => {
            return Err(format!("replica {id} is already a member"))
        }
        (ConfChange::AddLearner(_) | ConfChange::AddVoter(_), None) => {
            if let Some(other) = on_node {
                return Err(format!(
                    "node {node} already holds replica {} of range {}",
                    other.replica_id, desc.id
                ));
            }
            let role = match change {
                ConfChange::AddLearner(_) => ReplicaRole::Learner,
                _ => ReplicaRole::Voter,
            };
            next.replicas.push(ReplicaDescriptor {
                replica_id: id,
                node_id: node,
                role,
            });
        }
        (ConfChange::AddVoter(_), Some(r)) => {
            if r.node_id != node {
                return Err(format!(
                    "replica {id} lives on node {}, not {node}",
                    r.node_id
                ));
            }
            if r.role == ReplicaRole::Voter {
                return Err(format!("replica {id} is already a voter"));
            }
            for replica in next.replicas.iter_mut().filter(|r| r.replica_id == id) {
                replica.role = ReplicaRole::Voter;
            }
        }
        (ConfChange::Remove(_), None) => return Err(format!("replica {id} is not a member")),
        (ConfChange::Remove(_), Some(r)) => {
            if r.node_id != node {
                return Err(format!(
                    "replica {id} lives on node {}, not {node}",
                    r.node_id
                ));
            }
            next.replicas.retain(|r| r.replica_id != id);
        }
    }
    next.epoch.conf_version += 1;
    Ok(next)
}

/// Why a membership entry made for configuration `version` must not
/// apply to `meta`. Replicated state only, so every replica refuses alike.
/// A frozen merge source changes membership never: the propose-time check
/// (`refuse_if_merging`) cannot see a change an earlier leader proposed.
pub(crate) fn refusal_at_apply(meta: &RangeMeta, version: u64) -> Result<(), Error> {
    let range_id = meta.desc.id;
    if let Some(f) = meta.frozen {
        return Err(Error::AdminRefused(format!(
            "range {range_id} is frozen for a merge into range {}: no membership change",
            f.target
        )));
    }
    if version != meta.desc.epoch.conf_version {
        return Err(Error::AdminRefused(format!(
            "range {range_id}: configuration version is {}, the change was made for {version}",
            meta.desc.epoch.conf_version
        )));
    }
    Ok(())
}

/// The Raft configuration a descriptor stands for.
pub(crate) fn conf_of(desc: &RangeDescriptor) -> ConfState {
    let ids = |role: ReplicaRole| {
        let mut ids: Vec<u64> = desc
            .replicas
            .iter()
            .filter(|r| r.role == role)
            .map(|r| r.replica_id)
            .collect();
        ids.sort_unstable();
        ids
    };
    ConfState {
        voters: ids(ReplicaRole::Voter),
        learners: ids(ReplicaRole::Learner),
    }
}

/// Raft's refusals of an admin request, in the engine's terms.
fn admin_error(peer: &Peer, e: flotilla_raftgroup::Error) -> Error {
    match e {
        flotilla_raftgroup::Error::NotLeader { .. } => peer.not_leader(),
        flotilla_raftgroup::Error::ConfChange(c) => Error::AdminRefused(c.to_string()),
        flotilla_raftgroup::Error::InvalidTransferTarget(id) => {
            Error::AdminRefused(format!("replica {id} is not a voter of the range"))
        }
        other => other.into(),
    }
}

/// What a membership job waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The entry adding the learner (at `index`) to apply.
    AddLearner { index: u64 },
    /// The learner to hold everything up to `target`.
    CatchUp { target: u64 },
    /// The promotion (at `index`) to apply.
    Promote { index: u64 },
    /// The removal (at `index`) to apply.
    Remove { index: u64 },
}

/// An add or remove this node leads, answered when it is complete.
pub(super) struct MembershipJob {
    node: NodeId,
    replica: ReplicaId,
    phase: Phase,
    deadline: Instant,
    reply: Reply,
}

/// A leadership transfer this node started.
pub(super) struct TransferJob {
    target: ReplicaId,
    deadline: Instant,
    reply: Reply,
}

impl MembershipJob {
    pub(super) fn fail(self, error: Error) {
        let _ = self.reply.send(Err(error));
    }
}

impl TransferJob {
    pub(super) fn fail(self, error: Error) {
        let _ = self.reply.send(Err(error));
    }
}

impl Node {
    fn leader_peer(&self, range_id: RangeId) -> Result<&Peer, Error> {
        let peer = self
            .peers
            .get(&range_id)
            .ok_or_else(|| Error::RangeNotFound(format!("range {range_id} has no replica here")))?;
        if !peer.group.is_leader() {
            return Err(peer.not_leader());
        }
        Ok(peer)
    }

    fn refuse_if_busy(&self, range_id: RangeId) -> Result<(), Error> {
        if self.membership.contains_key(&range_id) {
            return Err(Error::Busy(format!(
                "range {range_id} has a membership change in progress"
            )));
        }
        Ok(())
    }

    /// A range taking part in a merge takes no membership or leadership
    /// change: a frozen source must keep exactly the replicas that hold
    /// its freeze until the target absorbs it (a replica removed then
    /// would destroy data the target's replica on that node is about to
    /// absorb), and the driver must keep leading both ranges. The freeze
    /// may be applied, proposed here, or proposed by an earlier leader.
    fn refuse_if_merging(&self, range_id: RangeId) -> Result<(), Error> {
        let peer = self
            .peers
            .get(&range_id)
            .ok_or_else(|| Error::RangeNotFound(format!("range {range_id} has no replica here")))?;
        if let Some(f) = peer.meta.frozen {
            return Err(Error::Busy(format!(
                "range {range_id} is frozen for a merge into range {}; retry when the merge is \
                 done or rolled back",
                f.target
            )));
        }
        let driven = self.merges.contains_key(&range_id)
            || self.merges.values().any(|job| job.target == range_id);
        if driven || peer.unapplied()?.prepare_merge {
            return Err(Error::Busy(format!(
                "range {range_id} takes part in a merge in progress; retry when it is done"
            )));
        }
        Ok(())
    }

    /// Answer at once (nothing to do, or refused), or track the change
    /// until it completes.
    fn begin_membership_job(
        &mut self,
        range_id: RangeId,
        node: NodeId,
        started: Result<Option<(ReplicaId, Phase)>, Error>,
        reply: Reply,
    ) {
        match started {
            Ok(None) => {
                let _ = reply.send(Ok(Outcome::Done));
            }
            Ok(Some((replica, phase))) => {
                tracing::info!(range_id, node, replica, ?phase, "membership change started");
                self.membership.insert(
                    range_id,
                    MembershipJob {
                        node,
                        replica,
                        phase,
                        deadline: Instant::now() + self.config.membership_timeout,
                        reply,
                    },
                );
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Add a replica of `range_id` on `node`: a learner first, a voter once
    /// it caught up. Adding a replica the node already has as a learner
    /// resumes its promotion; as a voter, it is already done.
    pub(super) fn start_add_replica(&mut self, range_id: RangeId, node: NodeId, reply: Reply) {
        let result = (|| -> Result<Option<(ReplicaId, Phase)>, Error> {
            self.refuse_if_busy(range_id)?;
            let peer = self.leader_peer(range_id)?;
            self.refuse_if_merging(range_id)?;
            let known = self
                .network
                .as_ref()
                .is_some_and(|n| n.transport.has_peer(node));
            if peer.meta.desc.replica_on(node).is_none() && !known {
                return Err(Error::AdminRefused(format!(
                    "node {node} is not known to node {} (no address for it); add it to the \
                     cluster's nodes first",
                    self.config.node_id
                )));
            }
            match peer.meta.desc.replica_on(node) {
                Some(r) if r.role == ReplicaRole::Voter => return Ok(None),
                Some(r) => {
                    let target = peer.group.commit_index();
                    return Ok(Some((r.replica_id, Phase::CatchUp { target })));
                }
                None => {}
            }
            let version = peer.meta.desc.epoch.conf_version;
            let replica = make_id(self.store.allocate_ids(1)?, self.config.node_id);
            let peer = self
                .peers
                .get_mut(&range_id)
                .ok_or_else(|| Error::RangeNotFound(range_id.to_string()))?;
            let index = peer
                .group
                .propose_conf_change_with_context(
                    ConfChange::AddLearner(replica),
                    &encode_context(node, version),
                )
                .map_err(|e| admin_error(peer, e))?;
            Ok(Some((replica, Phase::AddLearner { index })))
        })();
        self.begin_membership_job(range_id, node, result, reply);
    }

    /// Remove the replica of `range_id` on `node`. Refused for the leader's
    /// own replica (transfer first), below `replication_factor` voters, or
    /// when the remaining voters could not form a quorum now.
    pub(super) fn start_remove_replica(&mut self, range_id: RangeId, node: NodeId, reply: Reply) {
        let result = (|| -> Result<Option<(ReplicaId, Phase)>, Error> {
            self.refuse_if_busy(range_id)?;
            let peer = self.leader_peer(range_id)?;
            let Some(target) = peer.meta.desc.replica_on(node).copied() else {
                return Ok(None); // Already gone.
            };
            self.refuse_if_merging(range_id)?;
            if target.replica_id == peer.replica_id {
                return Err(Error::AdminRefused(format!(
                    "node {node} holds the leader of range {range_id}; transfer leadership \
                     to another replica first"
                )));
            }
            if target.role == ReplicaRole::Voter {
                let status = peer.group.status();
                let remaining: Vec<&ProgressStatus> = status
                    .progress
                    .iter()
                    .filter(|p| !p.is_learner && p.id != target.replica_id)
                    .collect();
                if remaining.len() < self.config.replication_factor {
                    return Err(Error::AdminRefused(format!(
                        "range {range_id} would keep {} voters, fewer than replication_factor \
                         = {}; add a replacement replica first",
                        remaining.len(),
                        self.config.replication_factor
                    )));
                }
                let reachable = remaining
                    .iter()
                    .filter(|p| p.id == peer.replica_id || p.recent_active)
                    .count();
                if reachable <= remaining.len() / 2 {
                    return Err(Error::AdminRefused(format!(
                        "range {range_id} would lose its quorum: only {reachable} of the \
                         {} remaining voters are reachable",
                        remaining.len()
                    )));
                }
            }
            let version = peer.meta.desc.epoch.conf_version;
            let peer = self
                .peers
                .get_mut(&range_id)
                .ok_or_else(|| Error::RangeNotFound(range_id.to_string()))?;
            let index = peer
                .group
                .propose_conf_change_with_context(
                    ConfChange::Remove(target.replica_id),
                    &encode_context(node, version),
                )
                .map_err(|e| admin_error(peer, e))?;
            Ok(Some((target.replica_id, Phase::Remove { index })))
        })();
        self.begin_membership_job(range_id, node, result, reply);
    }

    /// Hand the leadership of `range_id` to its replica on `node`; answered
    /// once that replica leads (or the transfer gave up).
    pub(super) fn start_transfer_leader(&mut self, range_id: RangeId, node: NodeId, reply: Reply) {
        let result = (|| -> Result<Option<ReplicaId>, Error> {
            let peer = self.leader_peer(range_id)?;
            let target = peer.meta.desc.replica_on(node).copied().ok_or_else(|| {
                Error::AdminRefused(format!("range {range_id} has no replica on node {node}"))
            })?;
            if target.role != ReplicaRole::Voter {
                return Err(Error::AdminRefused(format!(
                    "the replica of range {range_id} on node {node} is a learner; only voters lead"
                )));
            }
            if target.replica_id == peer.replica_id {
                return Ok(None);
            }
            // The merge driver must keep leading both ranges until it has
            // proposed the CommitMerge (else the freeze waits for the
            // orphan check to undo it).
            self.refuse_if_merging(range_id)?;
            let peer = self
                .peers
                .get_mut(&range_id)
                .ok_or_else(|| Error::RangeNotFound(range_id.to_string()))?;
            peer.group
                .transfer_leader(target.replica_id)
                .map_err(|e| admin_error(peer, e))?;
            Ok(Some(target.replica_id))
        })();
        match result {
            Ok(None) => {
                let _ = reply.send(Ok(Outcome::Done));
            }
            Ok(Some(target)) => {
                let raft = &self.config.raft;
                let ticks = raft.ticks_transfer_max + raft.ticks_election_max;
                let deadline = Instant::now() + self.config.tick * ticks;
                if let Some(old) = self.transfers.insert(
                    range_id,
                    TransferJob {
                        target,
                        deadline,
                        reply,
                    },
                ) {
                    let _ = old.reply.send(Err(Error::AdminRefused(
                        "superseded by a newer transfer".into(),
                    )));
                }
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Move every membership and transfer job on (called on each tick and
    /// after each cycle).
    pub(super) fn drive_admin_jobs(&mut self) {
        self.drive_merges();
        let now = Instant::now();
        let ranges: Vec<RangeId> = self.transfers.keys().copied().collect();
        for range_id in ranges {
            let Some(peer) = self.peers.get(&range_id) else {
                if let Some(job) = self.transfers.remove(&range_id) {
                    let _ = job
                        .reply
                        .send(Err(Error::RangeNotFound(range_id.to_string())));
                }
                continue;
            };
            let leader = peer.group.leader();
            let outcome = if leader == self.transfers[&range_id].target {
                Some(Ok(Outcome::Done))
            } else if !peer.group.is_leader() && leader != flotilla_raftgroup::NO_REPLICA {
                Some(Err(peer.not_leader()))
            } else if now >= self.transfers[&range_id].deadline {
                Some(Err(Error::AdminRefused(format!(
                    "range {range_id}: leadership did not move in time (the target may be \
                     behind or unreachable); try again"
                ))))
            } else {
                None
            };
            if let Some(outcome) = outcome {
                if let Some(job) = self.transfers.remove(&range_id) {
                    let _ = job.reply.send(outcome);
                }
            }
        }

        let ranges: Vec<RangeId> = self.membership.keys().copied().collect();
        for range_id in ranges {
            let Some(mut job) = self.membership.remove(&range_id) else {
                continue;
            };
            match self.step_membership_job(range_id, &mut job, now) {
                Ok(true) => {
                    let _ = job.reply.send(Ok(Outcome::Done));
                }
                Ok(false) => {
                    self.membership.insert(range_id, job);
                }
                Err(e) => {
                    tracing::warn!(range_id, node = job.node, error = %e, "membership change failed");
                    let _ = job.reply.send(Err(e));
                }
            }
        }
    }

    /// One look at a membership job: `Ok(true)` when complete.
    fn step_membership_job(
        &mut self,
        range_id: RangeId,
        job: &mut MembershipJob,
        now: Instant,
    ) -> Result<bool, Error> {
        let peer = self
            .peers
            .get_mut(&range_id)
            .ok_or_else(|| Error::RangeNotFound(format!("range {range_id} went away")))?;
        if !peer.group.is_leader() {
            return Err(Error::AdminRefused(format!(
                "range {range_id}: this node lost the leadership during the change; it may \
                 have been applied in part (see `ranges`); run it again on the new leader"
            )));
        }
        let applied = peer.applied.0;
        let role = peer
            .meta
            .desc
            .replica(job.replica)
            .filter(|r| r.node_id == job.node)
            .map(|r| r.role);
        let refused = || {
            Error::AdminRefused(format!(
                "range {range_id}: the change was refused when applied (a concurrent change \
                 came first); descriptor is now {:?}",
                peer.meta.desc.replicas
            ))
        };
        match job.phase {
            Phase::AddLearner { index } | Phase::Promote { index } | Phase::Remove { index }
                if applied < index =>
            {
                Ok(false)
            }
            Phase::AddLearner { .. } => {
                if role != Some(ReplicaRole::Learner) {
                    return Err(refused());
                }
                job.phase = Phase::CatchUp {
                    target: peer.group.commit_index(),
                };
                Ok(false)
            }
            Phase::CatchUp { target } => {
                let matched = peer
                    .group
                    .status()
                    .progress
                    .iter()
                    .find(|p| p.id == job.replica)
                    .map(|p| p.matched)
                    .unwrap_or(0);
                if matched < target {
                    if now < job.deadline {
                        return Ok(false);
                    }
                    // Undo: a learner that never catches up only costs.
                    let version = peer.meta.desc.epoch.conf_version;
                    let _ = peer.group.propose_conf_change_with_context(
                        ConfChange::Remove(job.replica),
                        &encode_context(job.node, version),
                    );
                    return Err(Error::AdminRefused(format!(
                        "range {range_id}: the new replica on node {} did not catch up within \
                         {:?} (it holds index {matched} of {target}); it is being removed",
                        job.node, self.config.membership_timeout
                    )));
                }
                let version = peer.meta.desc.epoch.conf_version;
                match peer.group.propose_conf_change_with_context(
                    ConfChange::AddVoter(job.replica),
                    &encode_context(job.node, version),
                ) {
                    Ok(index) => job.phase = Phase::Promote { index },
                    // The leader is not ready yet: try on the next tick.
                    Err(e) if e.is_retryable() => {}
                    Err(e) => return Err(admin_error(peer, e)),
                }
                Ok(false)
            }
            Phase::Promote { .. } => match role {
                Some(ReplicaRole::Voter) => Ok(true),
                _ => Err(refused()),
            },
            Phase::Remove { .. } => match role {
                None => Ok(true),
                Some(_) => Err(refused()),
            },
        }
    }

    /// Apply a committed membership entry of `peer` inside the cycle's
    /// apply batch: the descriptor changes atomically with the applied
    /// index. Returns the new Raft configuration when the change took.
    pub(super) fn apply_membership(
        peer: &mut Peer,
        index: u64,
        data: &Bytes,
        batch: &mut ApplyBatch<'_>,
        effects: &mut Vec<Effect>,
    ) -> Result<ConfState, Error> {
        let range_id = peer.range_id();
        let (change, context) = ConfChange::decode_with_context(data)
            .map_err(|e| Error::InvalidRequest(format!("membership entry: {e}")))?;
        let (node, version) = decode_context(context).ok_or_else(|| {
            Error::InvalidRequest("membership entry without its node context".into())
        })?;
        refusal_at_apply(&peer.meta, version)?;
        let desc =
            changed_descriptor(&peer.meta.desc, &change, node).map_err(Error::AdminRefused)?;
        let tell_removed = match change {
            ConfChange::Remove(id) if peer.group.is_leader() && id != peer.replica_id => peer
                .group
                .status()
                .progress
                .iter()
                .find(|p| p.id == id && p.matched >= index)
                .map(|_| (id, node, index)),
            _ => None,
        };
        let conf = peer
            .group
            .apply_conf_change(&change)
            .map_err(|e| Error::AdminRefused(e.to_string()))?;
        tracing::info!(
            range_id,
            ?change,
            node,
            conf_version = desc.epoch.conf_version,
            "membership change applied"
        );
        peer.meta.desc = desc;
        batch.set_descriptor(range_id, &peer.meta.encode());
        let removed_here = matches!(change, ConfChange::Remove(id) if id == peer.replica_id);
        effects.push(Effect::Reconfigured {
            desc: peer.meta.desc.clone(),
            removed_here,
            tell_removed,
        });
        Ok(conf)
    }

    /// Tell a removed replica that its removal (at `index`, which it holds)
    /// is committed, with a heartbeat of the current term; it then applies
    /// the removal and destroys itself.
    pub(super) fn tell_removed(
        &mut self,
        range_id: RangeId,
        replica: ReplicaId,
        node: NodeId,
        index: u64,
    ) {
        let (Some(peer), Some(network)) = (self.peers.get(&range_id), &self.network) else {
            return;
        };
        if !peer.group.is_leader() {
            return;
        }
        let message = flotilla_raftgroup::Message {
            from: peer.replica_id,
            to: replica,
            term: peer.group.term(),
            body: MessageBody::Heartbeat {
                commit: index,
                seq: 0,
                quiesce: false,
            },
        };
        network
            .transport
            .send(node, RaftEnvelope { range_id, message });
        network.transport.flush();
    }

    /// This node's replica was removed from its range: fail what waits on
    /// it, drop its log, destroy its data and leave a tombstone so that a
    /// late message or snapshot of the old configuration cannot revive it.
    pub(super) fn destroy_replica(&mut self, range_id: RangeId) -> Result<(), Error> {
        let Some(mut peer) = self.peers.remove(&range_id) else {
            return Ok(());
        };
        self.applied_shared.write().remove(&range_id);
        let error = Error::RangeNotFound(format!("range {range_id} was removed from this node"));
        peer.fail_all(&error);
        self.shards.placement.forget(range_id);
        let desc = &peer.meta.desc;
        let mut batch = WriteBatch::new();
        batch.remove_group(range_id);
        self.wal.write(&batch, true)?;
        self.store
            .destroy_replica(range_id, &desc.start, &desc.end, desc.epoch.conf_version)?;
        // Keep routing the range's keys to its replicas elsewhere.
        let _ = self.router.write().map_mut().update(desc.clone());
        self.stats.replicas_destroyed += 1;
        tracing::info!(range_id, "replica removed from this node and destroyed");
        Ok(())
    }

    /// Garbage collection of replicas removed without learning it. Returns
    /// whether the message was handled here (not for Raft):
    /// - `NotMember` to our replica: another member says we are removed;
    ///   destroy the replica.
    /// - A vote request from a replica outside our applied descriptor
    ///   whose log ends at or below our applied index: it cannot be a
    ///   member added after what we applied (its log would hold that
    ///   addition, past our applied index; and a new member is a learner
    ///   until promoted, which never campaigns), so it was removed. Tell it.
    pub(super) fn not_a_member(&mut self, from: NodeId, envelope: &RaftEnvelope) -> bool {
        let range_id = envelope.range_id;
        let message = &envelope.message;
        let Some(peer) = self.peers.get(&range_id) else {
            return false;
        };
        match message.body {
            MessageBody::NotMember => {
                tracing::warn!(
                    range_id,
                    from,
                    "this replica was removed from its range: destroying it"
                );
                if let Err(e) = self.destroy_replica(range_id) {
                    tracing::error!(range_id, error = %e, "cannot destroy a removed replica");
                }
                true
            }
            MessageBody::RequestVote { last_index, .. }
                if peer.meta.desc.replica(message.from).is_none()
                    && last_index <= peer.applied.0 =>
            {
                if let Some(network) = &self.network {
                    let reply = flotilla_raftgroup::Message {
                        from: peer.replica_id,
                        to: message.from,
                        term: message.term,
                        body: MessageBody::NotMember,
                    };
                    network.transport.send(
                        from,
                        RaftEnvelope {
                            range_id,
                            message: reply,
                        },
                    );
                    // Nothing leaves before a flush, and this range may
                    // have no cycle coming.
                    network.transport.flush();
                }
                true
            }
            _ => false,
        }
    }

    /// A message for a range this node has no replica of. If this node
    /// may be about to get one (the range is not in its cool-down), answer an append with a rejection
    /// that points the leader at index 0: the leader then sends a snapshot,
    /// from which the replica is created. Heartbeats are never answered: an
    /// answer would count toward the leader's lease for a replica that does
    /// not exist.
    pub(super) fn answer_unknown(&mut self, from: NodeId, envelope: &RaftEnvelope) {
        let message = &envelope.message;
        let MessageBody::Append { prev_index, .. } = message.body else {
            return;
        };
        if let Some(until) = self.unknown_cooldown.get(&envelope.range_id) {
            if Instant::now() < *until {
                return;
            }
        }
        // A tombstone does not stop the answer: the replica may be added
        // back with a new id. The snapshot that follows is checked against
        // it (`create_from_snapshot`).
        let Some(network) = &self.network else {
            return;
        };
        let reply = flotilla_raftgroup::Message {
            from: message.to,
            to: message.from,
            term: message.term,
            body: MessageBody::AppendResponse {
                reject: true,
                index: prev_index,
                hint_index: 0,
                hint_term: 0,
            },
        };
        network.transport.send(
            from,
            RaftEnvelope {
                range_id: envelope.range_id,
                message: reply,
            },
        );
        network.transport.flush();
        self.stats.unknown_range_probes_answered += 1;
    }

    /// A snapshot arrived for a range with no replica here: create the
    /// replica from it when the snapshot's descriptor lists this node, no
    /// local range overlaps its span (otherwise it is the right half of a
    /// split this node has not applied yet, which will create it), and no
    /// tombstone of a newer configuration forbids it.
    pub(super) fn create_from_snapshot(&mut self, staged: StagedSnapshot) {
        let range_id = staged.meta().range_id;
        let meta = match super::snapshots::staged_meta(&staged) {
            Ok(meta) => meta,
            Err(e) => {
                tracing::warn!(range_id, error = %e, "unreadable snapshot for a new replica");
                return;
            }
        };
        let refuse = |node: &mut Node, why: &str| {
            tracing::info!(
                range_id,
                reason = why,
                "snapshot for an unknown range not used"
            );
            node.unknown_cooldown
                .insert(range_id, Instant::now() + Duration::from_secs(10));
        };
        if meta.desc.replica_on(self.config.node_id).is_none() {
            return refuse(self, "its descriptor has no replica on this node");
        }
        match self.store.tombstone(range_id) {
            Ok(Some(version)) if meta.desc.epoch.conf_version <= version => {
                return refuse(
                    self,
                    "this node's replica was removed at a later configuration",
                )
            }
            Err(e) => {
                tracing::error!(range_id, error = %e, "cannot read the tombstone");
                return;
            }
            _ => {}
        }
        if !self.local_overlapping(&meta.desc).is_empty() {
            return refuse(
                self,
                "it overlaps a local range (a split not yet applied here)",
            );
        }
        let applied = match crate::snapshot::apply_staged(&self.store, &staged) {
            Ok(header) => header.raft,
            Err(e) => {
                tracing::warn!(range_id, error = %e, "snapshot apply for a new replica failed");
                return;
            }
        };
        // The group starts where the snapshot is: its log begins after it.
        let mut batch = WriteBatch::new();
        batch.install_snapshot(range_id, applied.index, applied.term);
        batch.set_conf_state(range_id, applied.conf_state.clone());
        batch.set_hard_state(
            range_id,
            HardState {
                term: applied.term,
                vote: 0,
                commit: applied.index,
            },
        );
        let started = self
            .wal
            .write(&batch, true)
            .map_err(Error::from)
            .and_then(|_| {
                self.router.write().map_mut().remove(range_id);
                self.start_peer(meta, false, false)
            });
        match started {
            Ok(()) => {
                self.unknown_cooldown.remove(&range_id);
                self.stats.snapshots_applied += 1;
                tracing::info!(
                    range_id,
                    index = applied.index,
                    "new replica created from a snapshot"
                );
            }
            Err(e) => tracing::error!(range_id, error = %e, "cannot start the new replica"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_router::range::RangeDescriptor;

    fn desc() -> RangeDescriptor {
        let replicas = (1..=3)
            .map(|n| ReplicaDescriptor {
                replica_id: n,
                node_id: n,
                role: ReplicaRole::Voter,
            })
            .collect();
        RangeDescriptor::whole_key_space(1, replicas)
    }

    #[test]
    fn add_promote_remove_change_the_descriptor_and_bump_its_version() {
        let d0 = desc();
        let d1 = changed_descriptor(&d0, &ConfChange::AddLearner(70), 4).unwrap();
        assert_eq!(d1.epoch.conf_version, d0.epoch.conf_version + 1);
        assert_eq!(d1.replica(70).unwrap().role, ReplicaRole::Learner);
        assert_eq!(conf_of(&d1).learners, vec![70]);
        let d2 = changed_descriptor(&d1, &ConfChange::AddVoter(70), 4).unwrap();
        assert_eq!(conf_of(&d2).voters, vec![1, 2, 3, 70]);
        assert!(conf_of(&d2).learners.is_empty());
        let d3 = changed_descriptor(&d2, &ConfChange::Remove(1), 1).unwrap();
        assert_eq!(conf_of(&d3).voters, vec![2, 3, 70]);
        assert_eq!(d3.epoch.conf_version, d0.epoch.conf_version + 3);
        assert_eq!(
            d3.epoch.version, d0.epoch.version,
            "membership is not a split"
        );
    }

    #[test]
    fn impossible_changes_are_refused() {
        let d = desc();
        // Two replicas of a range on one node.
        assert!(changed_descriptor(&d, &ConfChange::AddLearner(9), 2).is_err());
        // An id already used.
        assert!(changed_descriptor(&d, &ConfChange::AddLearner(2), 5).is_err());
        // Promote a voter; remove a stranger; a replica named on the wrong node.
        assert!(changed_descriptor(&d, &ConfChange::AddVoter(2), 2).is_err());
        assert!(changed_descriptor(&d, &ConfChange::Remove(9), 9).is_err());
        assert!(changed_descriptor(&d, &ConfChange::Remove(2), 3).is_err());
    }

    #[test]
    fn a_frozen_merge_source_refuses_membership_changes_at_apply() {
        let mut meta = RangeMeta {
            desc: desc(),
            frozen: None,
        };
        let version = meta.desc.epoch.conf_version;
        assert!(refusal_at_apply(&meta, version).is_ok());
        assert!(refusal_at_apply(&meta, version + 1).is_err());
        meta.frozen = Some(crate::meta::Frozen {
            target: 9,
            index: 30,
        });
        let err = refusal_at_apply(&meta, version).unwrap_err();
        assert!(err.to_string().contains("frozen"), "{err}");
    }

    #[test]
    fn context_round_trips_and_rejects_bad_lengths() {
        let raw = encode_context(7, 42);
        assert_eq!(decode_context(&raw), Some((7, 42)));
        assert_eq!(decode_context(&raw[..15]), None);
        assert_eq!(decode_context(&[]), None);
    }
}
