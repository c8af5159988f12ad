//! Single-server membership changes (§4.1 of the Raft thesis) with
//! learners, and leadership transfer (§3.10).
//!
//! Rules that avoid the known single-server change bug: a leader proposes
//! no change before it committed an entry of its own term, and at most one
//! change is in flight (proposed but not applied) at a time. A change takes
//! effect on each replica when the application applies it.

use crate::error::Error;
use crate::group::RaftGroup;
use crate::store::LogStore;
use crate::types::{
    ConfChange, ConfState, EntryKind, Index, MessageBody, ReplicaId, Role, NO_REPLICA,
};

impl<S: LogStore> RaftGroup<S> {
    /// Propose a membership change (leader only). Returns its log index.
    pub fn propose_conf_change(&mut self, change: ConfChange) -> Result<Index, Error> {
        self.propose_conf_change_with_context(change, &[])
    }

    /// [`RaftGroup::propose_conf_change`] with application context in the
    /// entry (see [`ConfChange::decode_with_context`]). The application
    /// may refuse the change when it applies it, by not calling
    /// [`RaftGroup::apply_conf_change`]; it must decide the same way on
    /// every replica (from replicated state only).
    pub fn propose_conf_change_with_context(
        &mut self,
        change: ConfChange,
        context: &[u8],
    ) -> Result<Index, Error> {
        self.wake();
        if self.role != Role::Leader {
            return Err(Error::NotLeader {
                leader: self.leader,
            });
        }
        if !self.term_committed() {
            return Err(Error::LeaderNotReady);
        }
        if self.pending_conf_index > self.log.applied {
            return Err(Error::ConfChangePending {
                index: self.pending_conf_index,
            });
        }
        self.check_conf_change(&change)?;
        let index =
            self.propose_entry(EntryKind::ConfChange, change.encode_with_context(context))?;
        self.pending_conf_index = index;
        Ok(index)
    }

    /// Apply a committed configuration change (call it when the entry is
    /// applied, on every replica). Returns the new configuration, which the
    /// caller persists with its applied index. An invalid change is a
    /// no-op everywhere alike and returns the error.
    pub fn apply_conf_change(&mut self, change: &ConfChange) -> Result<ConfState, Error> {
        let next = self.conf.apply(change)?;
        self.set_conf(next.clone());
        if self.role == Role::Leader {
            let members: Vec<(ReplicaId, bool)> = next
                .voters
                .iter()
                .map(|&v| (v, false))
                .chain(next.learners.iter().map(|&l| (l, true)))
                .collect();
            self.progress.retain(|id, _| next.contains(*id));
            for (member, is_learner) in members {
                if let Some(pr) = self.progress.get_mut(&member) {
                    pr.is_learner = is_learner;
                } else {
                    // A new member holds nothing yet: probing back from the
                    // end would take a round trip per rejection (and its
                    // node may have no replica to answer with). Start at
                    // the beginning, which sends a snapshot at once when the
                    // log is compacted, or the whole log when it is not.
                    let pr = self.new_progress(1, is_learner);
                    self.progress.insert(member, pr);
                    // Now: a member whose node has no replica yet answers
                    // no heartbeat, so nothing else would start it.
                    self.send_append(member, true);
                }
            }
            if self.transfer_target != NO_REPLICA && !next.is_voter(self.transfer_target) {
                self.transfer_target = NO_REPLICA;
            }
            if self.maybe_commit() {
                self.broadcast_due = true;
            }
        }
        self.after_conf_change(change);
        Ok(next)
    }

    /// Hand leadership to `target` (leader only). Proposals are refused
    /// until the transfer completes or `ticks_transfer_max` passes.
    pub fn transfer_leader(&mut self, target: ReplicaId) -> Result<(), Error> {
        self.wake();
        if self.role != Role::Leader {
            return Err(Error::NotLeader {
                leader: self.leader,
            });
        }
        if target == self.id {
            return Ok(());
        }
        if !self.conf.is_voter(target) {
            return Err(Error::InvalidTransferTarget(target));
        }
        if self.transfer_target == target {
            return Ok(());
        }
        self.transfer_target = target;
        self.ticks_transfer_elapsed = 0;
        let last = self.log.last_index()?;
        let matched = self.progress.get(&target).map(|p| p.matched).unwrap_or(0);
        if matched == last {
            self.send(target, MessageBody::TimeoutNow);
        } else {
            self.send_append(target, true);
        }
        Ok(())
    }

    /// Whether the replica is quiesced (the engine may stop ticking it).
    pub fn is_quiescent(&self) -> bool {
        self.quiesced
    }

    /// Leader: if the group is idle and every member holds everything,
    /// tell the followers to stop ticking, and stop ticking itself. Returns
    /// whether the group is now quiesced. Any proposal, read, message or
    /// [`RaftGroup::wake`] ends it.
    pub fn quiesce(&mut self) -> bool {
        if self.quiesced {
            return true;
        }
        if self.role != Role::Leader
            || self.transfer_target != NO_REPLICA
            || self.broadcast_due
            || !self.pending_reads.is_empty()
            || !self.messages.is_empty()
            || !self.log.unstable_entries().is_empty()
        {
            return false;
        }
        let Ok(last) = self.log.last_index() else {
            return false;
        };
        if self.log.committed != last
            || self.log.applied != last
            || self.pending_conf_index > self.log.applied
        {
            return false;
        }
        if self.progress.values().any(|pr| pr.matched != last) {
            return false;
        }
        self.broadcast_heartbeat(true);
        self.quiesced = true;
        true
    }

    /// End quiescence (a proposal arrives, or the leader's node was
    /// reported down and this follower must be ready to campaign).
    pub fn wake_up(&mut self) {
        self.wake();
    }
}
