//! The merge protocol, driven by the node that leads both ranges:
//!
//! 1. `PrepareMerge` on the source freezes it (no more writes, splits or
//!    membership changes) at log index F.
//! 2. The driver waits until every source replica has F in its log (the
//!    source leader's progress: `matched >= F`), or gives up at a deadline
//!    and rolls back (safe: nothing was proposed to the target yet).
//! 3. `CommitMerge` on the target carries the source's descriptor and F.
//!    A target replica applying it first lets its local source replica
//!    apply up to F: it may have F in its log without knowing F is
//!    committed (and may never hear it, since the source group is retired
//!    next), so it is told (`commit_known`) and the target's apply holds
//!    until the source applied F. Then the target widens and the source's
//!    metadata is retired; its data stays where it is (raw keys).
//! 4. A target refusal (`CommitMerge` failing its checks, or ordered after
//!    an `AbortMerge`) is decided by the target's log, identically on every
//!    replica; only then may the source's leader unfreeze it (`RollbackMerge`).
//!
//! A source left frozen (the driver crashed or lost leadership) is found by
//! the node leading the target after `request_timeout`: it proposes
//! `AbortMerge` on the target, whose apply bumps the target's version (so a
//! late `CommitMerge` fails) and has the source's leader roll back.

use super::*;

/// A merge this node started.
pub(super) struct MergeJob {
    pub target: RangeId,
    pub reply: Reply,
    /// The freeze entry (index, term), once the source applied it here.
    pub freeze: Option<(u64, u64)>,
    /// Give up (and roll back) if the source replicas have not caught up.
    pub deadline: Instant,
}

impl Node {
    pub(super) fn start_merge(&mut self, left: RangeId, right: RangeId, reply: Reply) {
        // Both ranges must be in this loop: pull the right one over first,
        // once the checks that need no peer pass (no pointless moves).
        if self.peers.contains_key(&left) && !self.peers.contains_key(&right) && self.on_node(right)
        {
            if let Err(e) = self.precheck_merge(left, right) {
                let _ = reply.send(Err(e));
                return;
            }
            let request = Request::Merge { left, right, reply };
            self.park(vec![right], Msg::Request(request));
            return;
        }
        let check = (|| -> Result<(), Error> {
            let l = self
                .peers
                .get(&left)
                .ok_or_else(|| Error::RangeNotFound(left.to_string()))?;
            let r = self
                .peers
                .get(&right)
                .ok_or_else(|| Error::RangeNotFound(right.to_string()))?;
            mergeable(&l.meta.desc, &r.meta.desc)?;
            if !l.group.is_leader() {
                return Err(l.not_leader());
            }
            if !r.group.is_leader() {
                // The hint's command form is what the server follows.
                let me = self.config.node_id;
                return Err(Error::AdminRefused(format!(
                    "range {right} is led by another node than range {left}; transfer one \
                     leadership so that one node leads both, then merge (hint: \
                     FLOTILLA.TRANSFERLEADER {right} {me})"
                )));
            }
            for p in [l, r] {
                if let Some(f) = p.meta.frozen {
                    return Err(Error::Busy(format!(
                        "range {} is frozen for a merge into range {} (applied {}, frozen at {})",
                        p.range_id(),
                        f.target,
                        p.applied.0,
                        f.index
                    )));
                }
            }
            if self.merges.contains_key(&right) {
                return Err(Error::Busy(format!(
                    "a merge of range {right} is in progress"
                )));
            }
            // A membership change still in the log would apply after the
            // freeze (and be refused there) or move the replica sets under
            // the merge: let it finish first.
            for p in [l, r] {
                let id = p.range_id();
                if self.membership.contains_key(&id) || p.unapplied()?.conf_change {
                    return Err(Error::Busy(format!(
                        "range {id} has a membership change in progress; merge when it is done"
                    )));
                }
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
                        freeze: None,
                        deadline: Instant::now() + self.config.request_timeout / 2,
                    },
                );
            }
            Err(e) => {
                let _ = reply.send(Err(e.into()));
            }
        }
    }

    /// What a merge needs of the two descriptors, checked on the range
    /// map's copies: the right range may be in another loop.
    fn precheck_merge(&self, left: RangeId, right: RangeId) -> Result<(), Error> {
        let router = self.router.read();
        let l = router
            .map()
            .get(left)
            .ok_or_else(|| Error::RangeNotFound(left.to_string()))?;
        let r = router
            .map()
            .get(right)
            .ok_or_else(|| Error::RangeNotFound(right.to_string()))?;
        mergeable(l, r)
    }

    /// The source froze at (`index`, `term`): every node notes when, for
    /// the orphan check; the driver goes on.
    pub(super) fn source_frozen(
        &mut self,
        source: RangeId,
        target: RangeId,
        index: u64,
        term: u64,
    ) {
        self.frozen_since.insert(source, Instant::now());
        let Some(job) = self.merges.get_mut(&source) else {
            return; // Another node started it.
        };
        if job.target != target {
            if let Some(job) = self.merges.remove(&source) {
                let _ = job
                    .reply
                    .send(Err(Error::AdminRefused("merge target changed".into())));
            }
            return;
        }
        job.freeze = Some((index, term));
        self.try_commit_merge(source);
    }

    /// Every running merge: propose `CommitMerge` once all source replicas
    /// hold the freeze entry, or give up at the deadline.
    pub(super) fn drive_merges(&mut self) {
        let sources: Vec<RangeId> = self.merges.keys().copied().collect();
        for source in sources {
            self.try_commit_merge(source);
        }
    }

    fn try_commit_merge(&mut self, source: RangeId) {
        let Some(job) = self.merges.get(&source) else {
            return;
        };
        let target = job.target;
        let expired = Instant::now() >= job.deadline;
        let Some((freeze_index, freeze_term)) = job.freeze else {
            if expired {
                // The freeze may still apply later: the orphan check
                // unfreezes it then.
                self.fail_merge(
                    source,
                    Error::AdminRefused(format!(
                        "range {source} did not freeze in time; try the merge again"
                    )),
                );
            }
            return;
        };
        let Some(src) = self.peers.get(&source) else {
            self.fail_merge(source, Error::RangeNotFound(source.to_string()));
            return;
        };
        if !src.group.is_leader() {
            // Whoever leads the source now cannot know whether we proposed
            // to the target; the orphan check settles it through the target.
            self.fail_merge(
                source,
                Error::AdminRefused(format!(
                    "lost the leadership of range {source} during the merge; it is unfrozen \
                     automatically, try again"
                )),
            );
            return;
        }
        let progress = src.group.status().progress;
        let lagging: Vec<u64> = src
            .meta
            .desc
            .replicas
            .iter()
            .filter(|r| {
                !progress
                    .iter()
                    .any(|p| p.id == r.replica_id && p.matched >= freeze_index)
            })
            .map(|r| r.node_id)
            .collect();
        if !lagging.is_empty() {
            if expired {
                self.rollback_merge(source);
                self.fail_merge(
                    source,
                    Error::AdminRefused(format!(
                        "the replicas of range {source} on nodes {lagging:?} did not catch up with \
                         the freeze in time; merge abandoned and the source unfrozen"
                    )),
                );
            }
            return;
        }
        let source_desc = src.meta.desc.clone();
        let proposed = match self.peers.get_mut(&target) {
            Some(peer) if peer.group.is_leader() => {
                let command = Command::CommitMerge {
                    version: peer.meta.desc.epoch.version,
                    source: source_desc,
                    freeze_index,
                    freeze_term,
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
        let Some(job) = self.merges.remove(&source) else {
            return;
        };
        match proposed {
            Ok((index, term)) => {
                // Resolves when CommitMerge applies (or is refused there,
                // which also unfreezes the source: `merge_refused`).
                if let Some(peer) = self.peers.get_mut(&target) {
                    peer.proposals
                        .push_back(Proposal::new(index, term, job.reply));
                }
            }
            Err(e) => {
                // Nothing reached the target's log: unfreezing is safe.
                self.rollback_merge(source);
                let _ = job.reply.send(Err(e));
            }
        }
    }

    fn fail_merge(&mut self, source: RangeId, error: Error) {
        if let Some(job) = self.merges.remove(&source) {
            let _ = job.reply.send(Err(error));
        }
    }

    /// Propose unfreezing `source` if it is frozen and led here.
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

    /// The target's log refused the merge of `source` (every replica
    /// applies the same refusal): the source may be unfrozen.
    pub(super) fn merge_refused(&mut self, source: RangeId) {
        if !self.peers.contains_key(&source) && self.on_node(source) {
            // The source (and the job that froze it) is in another loop.
            return self.dispatch(Msg::MergeRefused { source });
        }
        tracing::info!(range_id = source, "merge refused by the target; unfreezing");
        self.fail_merge(
            source,
            Error::AdminRefused(format!("the merge of range {source} was aborted")),
        );
        self.rollback_merge(source);
    }

    /// Sources frozen for longer than `request_timeout` with no merge
    /// job here: if this node leads the target, abort through its log.
    pub(super) fn check_orphaned_merges(&mut self, now: Instant) {
        if self.frozen_since.is_empty() {
            return;
        }
        // The driver's own deadline is half of this: by then no live driver
        // proposes a CommitMerge any more (and were one still in flight,
        // the target's log orders it against the abort; no harm either way).
        let after = self.config.request_timeout;
        let overdue: Vec<RangeId> = self
            .frozen_since
            .iter()
            .filter(|(id, since)| {
                now.duration_since(**since) >= after && !self.merges.contains_key(id)
            })
            .map(|(id, _)| *id)
            .collect();
        for source in overdue {
            let target = match self.peers.get(&source).and_then(|p| p.meta.frozen) {
                Some(f) => f.target,
                None => {
                    self.frozen_since.remove(&source);
                    continue;
                }
            };
            self.frozen_since.insert(source, now);
            if let Some(owner) = self
                .owner_elsewhere(target)
                .filter(|_| self.on_node(target))
            {
                // Settled where the target is: go there.
                self.release(source, owner);
                continue;
            }
            let Some(peer) = self.peers.get_mut(&target) else {
                continue;
            };
            if !peer.group.is_leader() {
                continue;
            }
            let command = Command::AbortMerge {
                version: peer.meta.desc.epoch.version,
                source,
            };
            match peer.group.propose(command.encode()) {
                Ok(_) => tracing::warn!(
                    range_id = target,
                    source,
                    "source frozen with no merge in progress here: aborting the merge"
                ),
                Err(e) => {
                    tracing::warn!(range_id = target, error = %e, "could not propose a merge abort")
                }
            }
        }
    }
}

/// Whether `l` and `r` may merge as far as their descriptors tell:
/// adjacent, on the same nodes.
fn mergeable(l: &RangeDescriptor, r: &RangeDescriptor) -> Result<(), Error> {
    let (left, right) = (l.id, r.id);
    if l.end != r.start || l.end.is_empty() {
        return Err(Error::AdminRefused(format!(
            "ranges {left} and {right} are not adjacent (left must end where right starts)"
        )));
    }
    if replica_nodes(l) != replica_nodes(r) {
        return Err(Error::AdminRefused(format!(
            "ranges {left} and {right} have different replica sets ({:?} vs {:?}); move replicas first",
            replica_nodes(l),
            replica_nodes(r)
        )));
    }
    Ok(())
}

/// The nodes holding a range's replicas, sorted.
pub(crate) fn replica_nodes(desc: &RangeDescriptor) -> Vec<u64> {
    let mut nodes: Vec<u64> = desc.replicas.iter().map(|r| r.node_id).collect();
    nodes.sort_unstable();
    nodes
}

impl Node {
    /// Whether `source` is on this node but in another loop: a
    /// `CommitMerge` waits while it is pulled over.
    pub(super) fn merge_source_elsewhere(&self, source: RangeId) -> bool {
        self.shards.count() > 1 && !self.peers.contains_key(&source) && self.on_node(source)
    }
}

/// What a target replica may do with a `CommitMerge` it will absorb,
/// judged from its local source replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum MergeReadiness {
    /// The local source is frozen for this merge and applied its freeze.
    Ready,
    /// The local source has not applied its freeze yet.
    Wait,
    /// The local source can never get there (missing, frozen for another
    /// merge, changed): the protocol was broken somewhere. The target must
    /// hold the entry, not absorb a span whose data is not here.
    Stuck(String),
}

/// The local source replica as `merge_readiness` sees it.
pub(super) struct LocalSource<'a> {
    pub frozen: Option<Frozen>,
    pub applied: u64,
    pub desc: &'a RangeDescriptor,
}

/// Decide on a `CommitMerge` of `source` (frozen at `freeze_index`) into
/// `target`, from this node's replica of the source, if any.
pub(super) fn merge_readiness(
    target: RangeId,
    source: &RangeDescriptor,
    freeze_index: u64,
    local: Option<LocalSource<'_>>,
) -> MergeReadiness {
    let Some(local) = local else {
        return MergeReadiness::Stuck(format!(
            "no replica of the source range {} on this node",
            source.id
        ));
    };
    let expected = Frozen {
        target,
        index: freeze_index,
    };
    if local.applied < freeze_index {
        return match local.frozen {
            None => MergeReadiness::Wait,
            Some(f) => MergeReadiness::Stuck(format!(
                "the source replica here is frozen at {} for range {}, not at {freeze_index} for \
                 range {target}",
                f.index, f.target
            )),
        };
    }
    if local.frozen != Some(expected) {
        return MergeReadiness::Stuck(format!(
            "the source replica here applied {} but is frozen as {:?}, not for this merge",
            local.applied, local.frozen
        ));
    }
    if local.desc != source {
        return MergeReadiness::Stuck(format!(
            "the source replica here has descriptor {:?}, the merge carries {:?}",
            local.desc, source
        ));
    }
    MergeReadiness::Ready
}

/// `merge_readiness` against the loop's peers; while it waits, tells the
/// local source the freeze is committed so that it can apply it.
pub(super) fn merge_must_wait(
    peers: &mut BTreeMap<RangeId, Peer>,
    target: RangeId,
    source: &RangeDescriptor,
    freeze_index: u64,
    freeze_term: u64,
) -> MergeReadiness {
    let local = peers.get(&source.id).map(|p| LocalSource {
        frozen: p.meta.frozen,
        applied: p.applied.0,
        desc: &p.meta.desc,
    });
    let readiness = merge_readiness(target, source, freeze_index, local);
    if readiness == MergeReadiness::Wait {
        if let Some(local) = peers.get_mut(&source.id) {
            if !local.group.commit_known(freeze_index, freeze_term) {
                tracing::debug!(
                    range_id = source.id,
                    freeze_index,
                    "merge waits: the source replica here does not hold the freeze entry yet"
                );
            }
        }
    }
    readiness
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(id: RangeId, start: &'static str, end: &'static str) -> RangeDescriptor {
        let mut d = RangeDescriptor::whole_key_space(id, vec![]);
        d.start = Bytes::from_static(start.as_bytes());
        d.end = Bytes::from_static(end.as_bytes());
        d
    }

    #[test]
    fn a_commit_merge_without_its_local_source_holds_instead_of_absorbing() {
        let source = desc(7, "m", "");
        let frozen = Some(Frozen {
            target: 1,
            index: 40,
        });
        let at = |frozen, applied, desc| LocalSource {
            frozen,
            applied,
            desc,
        };
        assert_eq!(
            merge_readiness(1, &source, 40, Some(at(frozen, 40, &source))),
            MergeReadiness::Ready
        );
        assert_eq!(
            merge_readiness(1, &source, 40, Some(at(None, 39, &source))),
            MergeReadiness::Wait
        );
        // Missing (destroyed by a removal, lost to a crash): hold, never absorb.
        assert!(matches!(
            merge_readiness(1, &source, 40, None),
            MergeReadiness::Stuck(_)
        ));
        // Frozen for another merge, or unfrozen past the freeze.
        let other = Some(Frozen {
            target: 3,
            index: 12,
        });
        assert!(matches!(
            merge_readiness(1, &source, 40, Some(at(other, 12, &source))),
            MergeReadiness::Stuck(_)
        ));
        assert!(matches!(
            merge_readiness(1, &source, 40, Some(at(None, 45, &source))),
            MergeReadiness::Stuck(_)
        ));
        // A descriptor that changed after the freeze (a membership change).
        let mut changed = source.clone();
        changed.epoch.conf_version += 1;
        assert!(matches!(
            merge_readiness(1, &source, 40, Some(at(frozen, 41, &changed))),
            MergeReadiness::Stuck(_)
        ));
    }
}
