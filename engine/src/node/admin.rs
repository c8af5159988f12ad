//! Admin commands proposed by this node: split, and the merge protocol
//! (freeze the source, let the target absorb it, or roll back).

use super::*;

impl Node {
    pub(super) fn start_split(&mut self, key: Bytes, reply: Reply) {
        let result = (|| -> Result<(RangeId, u64, u64), Error> {
            let range_id = self.peer_for_key(&key)?;
            let peer = self
                .peers
                .get(&range_id)
                .ok_or_else(|| Error::RangeNotFound(range_id.to_string()))?;
            if !peer.group.is_leader() {
                return Err(peer.not_leader());
            }
            if key == peer.meta.desc.start {
                return Err(Error::AdminRefused(format!(
                    "key {} is already the start of range {range_id}",
                    crate::error::show_key(&key)
                )));
            }
            let replicas = peer.meta.desc.replicas.len() as u64;
            let first = self.store.allocate_ids(1 + replicas)?;
            let node = self.config.node_id;
            let peer = self
                .peers
                .get_mut(&range_id)
                .ok_or_else(|| Error::RangeNotFound(range_id.to_string()))?;
            let command = Command::Split {
                version: peer.meta.desc.epoch.version,
                split_key: key.clone(),
                new_range_id: make_id(first, node),
                new_replica_ids: (1..=replicas).map(|i| make_id(first + i, node)).collect(),
            };
            let term = peer.group.term();
            let index = peer.group.propose(command.encode())?;
            Ok((range_id, index, term))
        })();
        match result {
            Ok((range_id, index, term)) => {
                if let Some(peer) = self.peers.get_mut(&range_id) {
                    peer.proposals.push_back(Proposal::new(index, term, reply));
                }
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    pub(super) fn start_merge(&mut self, left: RangeId, right: RangeId, reply: Reply) {
        let check = (|| -> Result<(), Error> {
            let l = self
                .peers
                .get(&left)
                .ok_or_else(|| Error::RangeNotFound(left.to_string()))?;
            let r = self
                .peers
                .get(&right)
                .ok_or_else(|| Error::RangeNotFound(right.to_string()))?;
            if l.meta.desc.end != r.meta.desc.start || l.meta.desc.end.is_empty() {
                return Err(Error::AdminRefused(format!(
                    "ranges {left} and {right} are not adjacent (left must end where right starts)"
                )));
            }
            let nodes = |p: &Peer| {
                let mut n: Vec<u64> = p.meta.desc.replicas.iter().map(|r| r.node_id).collect();
                n.sort_unstable();
                n
            };
            if nodes(l) != nodes(r) {
                return Err(Error::AdminRefused(format!(
                    "ranges {left} and {right} have different replica sets ({:?} vs {:?}); move replicas first",
                    nodes(l),
                    nodes(r)
                )));
            }
            if l.meta.desc.replicas.len() > 1 {
                // On several nodes, a replica of the target may apply the
                // merge before its local source replica caught up with the
                // freeze; that needs the target's apply to wait for the
                // source, which the admin work (membership/merge issue)
                // brings. Until then: refuse rather than risk it.
                return Err(Error::AdminRefused(format!(
                    "merging replicated ranges ({} replicas) is not supported yet",
                    l.meta.desc.replicas.len()
                )));
            }
            if !l.group.is_leader() {
                return Err(l.not_leader());
            }
            if !r.group.is_leader() {
                return Err(r.not_leader());
            }
            if l.meta.frozen.is_some()
                || r.meta.frozen.is_some()
                || self.merges.contains_key(&right)
            {
                return Err(Error::Busy(
                    "a merge involving these ranges is in progress".into(),
                ));
            }
            Ok(())
        })();
        if let Err(e) = check {
            let _ = reply.send(Err(e));
            return;
        }
        let Some(peer) = self.peers.get_mut(&right) else {
            return;
        };
        let command = Command::PrepareMerge {
            version: peer.meta.desc.epoch.version,
            target: left,
        };
        match peer.group.propose(command.encode()) {
            Ok(_) => {
                self.merges.insert(
                    right,
                    MergeJob {
                        target: left,
                        reply,
                    },
                );
            }
            Err(e) => {
                let _ = reply.send(Err(e.into()));
            }
        }
    }

    /// The source froze: ask the target to absorb it (or roll back).
    pub(super) fn continue_merge(&mut self, source: RangeId, target: RangeId) {
        let Some(job) = self.merges.remove(&source) else {
            return; // Another node started it, or it was abandoned.
        };
        if job.target != target {
            let _ = job
                .reply
                .send(Err(Error::AdminRefused("merge target changed".into())));
            return;
        }
        let source_desc = match self.peers.get(&source) {
            Some(p) => p.meta.desc.clone(),
            None => {
                let _ = job
                    .reply
                    .send(Err(Error::RangeNotFound(source.to_string())));
                return;
            }
        };
        let proposed = match self.peers.get_mut(&target) {
            Some(peer) if peer.group.is_leader() => {
                let command = Command::CommitMerge {
                    version: peer.meta.desc.epoch.version,
                    source: source_desc,
                };
                let term = peer.group.term();
                peer.group
                    .propose(command.encode())
                    .map(|index| (index, term))
                    .map_err(Error::from)
            }
            Some(peer) => Err(peer.not_leader()),
            None => Err(Error::RangeNotFound(target.to_string())),
        };
        match proposed {
            Ok((index, term)) => {
                // The reply resolves when CommitMerge applies; a refusal
                // there triggers the rollback (see `after_apply`).
                if let Some(peer) = self.peers.get_mut(&target) {
                    peer.proposals
                        .push_back(Proposal::new(index, term, job.reply));
                }
            }
            Err(e) => {
                self.rollback_merge(source);
                let _ = job.reply.send(Err(e));
            }
        }
    }

    pub(super) fn rollback_merge(&mut self, source: RangeId) {
        if let Some(peer) = self.peers.get_mut(&source) {
            if peer.meta.frozen.is_some() && peer.group.is_leader() {
                let command = Command::RollbackMerge {
                    version: peer.meta.desc.epoch.version,
                };
                if let Err(e) = peer.group.propose(command.encode()) {
                    tracing::warn!(range_id = source, error = %e, "could not propose merge rollback");
                }
            }
        }
    }
}
