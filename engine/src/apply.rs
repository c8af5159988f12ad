//! Applying committed commands of a range to the state store batch, and the
//! effects (new ranges, retired ranges, merge steps) that follow once the
//! batch is durable.
//!
//! Apply is deterministic: every replica applies the same commands to the
//! same descriptors and reaches the same decisions, so checks made here
//! (epoch, key in range, frozen) hold on all of them alike.

use std::collections::BTreeMap;

use bytes::Bytes;
use flotilla_raftgroup::Entry;
use flotilla_router::range::{RangeDescriptor, ReplicaDescriptor};
use flotilla_router::RangeId;
use flotilla_storage::state::ApplyBatch;

use crate::command::{Command, WriteOp};
use crate::error::Error;
use crate::meta::{Frozen, RangeMeta};
use crate::node::replica_nodes;
use crate::peer::{Outcome, Peer};

/// What must happen after the apply batch is committed.
pub(crate) enum Effect {
    /// A split created `right`; `left` is the parent's new descriptor.
    Split {
        left: RangeDescriptor,
        right: RangeMeta,
        parent_leader: bool,
    },
    /// A range was frozen for a merge into `target` by its entry
    /// (`index`, `term`).
    Frozen {
        source: RangeId,
        target: RangeId,
        index: u64,
        term: u64,
    },
    /// The target's log refused (or aborted) merging `source`: the source
    /// may be unfrozen.
    MergeRefused {
        source: RangeId,
        target: RangeDescriptor,
    },
    /// `target` absorbed `source`.
    Merged {
        target: RangeDescriptor,
        source: RangeId,
    },
    /// A merge was rolled back.
    Unfrozen { source: RangeDescriptor },
    /// A membership change applied; `removed_here` when it removed this
    /// node's replica.
    Reconfigured {
        desc: RangeDescriptor,
        removed_here: bool,
        /// Leader only: a removed replica that holds the removal entry, to
        /// be told it is committed (replica, node, index); it would never
        /// hear otherwise, since the leader stops talking to non-members.
        tell_removed: Option<(u64, u64, u64)>,
    },
}

/// What the apply of one entry needs to see of other local ranges.
pub(crate) struct LocalView<'a> {
    /// The ranges of the applying loop.
    pub peers: &'a BTreeMap<RangeId, Peer>,
    /// Every range on the node (any loop), with its applied index.
    pub on_node: &'a parking_lot::RwLock<std::collections::HashMap<RangeId, u64>>,
}

fn mismatch(meta: &RangeMeta) -> Error {
    Error::EpochMismatch {
        range_id: meta.desc.id,
        current: vec![meta.desc.clone()],
    }
}

/// Apply one committed normal entry of `meta`'s range.
pub(crate) fn apply_entry(
    meta: &mut RangeMeta,
    is_leader: bool,
    entry: &Entry,
    view: &LocalView<'_>,
    batch: &mut ApplyBatch<'_>,
    effects: &mut Vec<Effect>,
) -> Result<Outcome, Error> {
    let range_id = meta.desc.id;
    let command = match Command::decode(&entry.data) {
        Ok(c) => c,
        // Every replica sees the same bytes and skips them alike.
        Err(e) => {
            tracing::error!(range_id, index = entry.index, error = %e, "skipping undecodable command");
            return Err(Error::InvalidRequest(e.to_string()));
        }
    };
    if command.version() != meta.desc.epoch.version {
        if !matches!(command, Command::Write { .. }) {
            tracing::debug!(
                range_id,
                index = entry.index,
                command_version = command.version(),
                version = meta.desc.epoch.version,
                "admin command refused: epoch changed"
            );
        }
        if let Command::CommitMerge { source, .. } = &command {
            effects.push(Effect::MergeRefused {
                source: source.id,
                target: meta.desc.clone(),
            });
        }
        return Err(mismatch(meta));
    }
    match command {
        Command::Write { ops, .. } => {
            if meta.frozen.is_some() {
                return Err(mismatch(meta));
            }
            if ops.iter().any(|op| !meta.desc.contains_key(op.key())) {
                return Err(mismatch(meta));
            }
            for op in &ops {
                match op {
                    WriteOp::Put { key, value } => batch.put(range_id, key, value),
                    WriteOp::Delete { key } => batch.delete(range_id, key),
                }
            }
            Ok(Outcome::Done)
        }
        Command::Split {
            split_key,
            new_range_id,
            new_replica_ids,
            ..
        } => {
            let inside = split_key > meta.desc.start
                && (meta.desc.end.is_empty() || split_key < meta.desc.end);
            if meta.frozen.is_some() || !inside || new_replica_ids.len() != meta.desc.replicas.len()
            {
                return Err(Error::AdminRefused(format!(
                    "split of range {range_id} at {:?} is not possible now",
                    crate::error::show_key(&split_key)
                )));
            }
            if view.peers.contains_key(&new_range_id)
                || view.on_node.read().contains_key(&new_range_id)
            {
                return Err(Error::AdminRefused(format!(
                    "range id {new_range_id} already exists"
                )));
            }
            let version = meta.desc.epoch.version + 1;
            let mut right = meta.desc.clone();
            right.id = new_range_id;
            right.start = split_key.clone();
            right.epoch.version = version;
            right.replicas = meta
                .desc
                .replicas
                .iter()
                .zip(&new_replica_ids)
                .map(|(r, &id)| ReplicaDescriptor {
                    replica_id: id,
                    ..*r
                })
                .collect();
            meta.desc.end = split_key;
            meta.desc.epoch.version = version;
            let right = RangeMeta {
                desc: right,
                frozen: None,
            };
            batch.set_descriptor(range_id, &meta.encode());
            batch.set_descriptor(new_range_id, &right.encode());
            batch.set_applied(
                new_range_id,
                flotilla_raftgroup::BOOTSTRAP_INDEX,
                flotilla_raftgroup::BOOTSTRAP_TERM,
            );
            effects.push(Effect::Split {
                left: meta.desc.clone(),
                right,
                parent_leader: is_leader,
            });
            Ok(Outcome::Split { new_range_id })
        }
        Command::PrepareMerge { target, .. } => {
            if meta.frozen.is_some() {
                return Err(Error::AdminRefused(format!(
                    "range {range_id} is already merging"
                )));
            }
            meta.frozen = Some(Frozen {
                target,
                index: entry.index,
            });
            meta.desc.epoch.version += 1;
            batch.set_descriptor(range_id, &meta.encode());
            effects.push(Effect::Frozen {
                source: range_id,
                target,
                index: entry.index,
                term: entry.term,
            });
            Ok(Outcome::Done)
        }
        Command::CommitMerge {
            source,
            freeze_index,
            ..
        } => {
            // Checks on the target's own state only: every replica decides
            // alike.
            if let Some(why) = commit_merge_refusal(meta, &source) {
                effects.push(Effect::MergeRefused {
                    source: source.id,
                    target: meta.desc.clone(),
                });
                return Err(Error::AdminRefused(format!(
                    "merge of {} into {range_id}: {why}",
                    source.id
                )));
            }
            // The cycle holds the entry until the local source replica is
            // at its freeze (`merge_readiness`), and for good if it never
            // can be: a target never absorbs a span without its data.
            let local = view.peers.get(&source.id);
            assert!(
                local.is_some_and(|l| l.meta.frozen
                    == Some(Frozen {
                        target: range_id,
                        index: freeze_index
                    })
                    && l.applied.0 >= freeze_index
                    && l.meta.desc == source),
                "range {range_id}: CommitMerge of {} applied while the local source replica is not \
                 at its freeze (present: {})",
                source.id,
                local.is_some()
            );
            meta.desc.end = source.end.clone();
            meta.desc.epoch.version = meta.desc.epoch.version.max(source.epoch.version) + 1;
            batch.set_descriptor(range_id, &meta.encode());
            batch.retire_range(source.id);
            effects.push(Effect::Merged {
                target: meta.desc.clone(),
                source: source.id,
            });
            Ok(Outcome::Done)
        }
        Command::AbortMerge { source, .. } => {
            // A CommitMerge ordered after this one now fails its version
            // check, so the source can be unfrozen.
            meta.desc.epoch.version += 1;
            batch.set_descriptor(range_id, &meta.encode());
            effects.push(Effect::MergeRefused {
                source,
                target: meta.desc.clone(),
            });
            Ok(Outcome::Done)
        }
        Command::RollbackMerge { .. } => {
            if meta.frozen.take().is_some() {
                meta.desc.epoch.version += 1;
                batch.set_descriptor(range_id, &meta.encode());
                effects.push(Effect::Unfrozen {
                    source: meta.desc.clone(),
                });
            }
            Ok(Outcome::Done)
        }
    }
}

/// Why the target refuses a `CommitMerge` of `source`, from its own
/// (replicated) state only; `None` when it absorbs it.
fn commit_merge_refusal(meta: &RangeMeta, source: &RangeDescriptor) -> Option<&'static str> {
    if meta.frozen.is_some() {
        Some("the target is itself frozen")
    } else if meta.desc.end != source.start || meta.desc.end.is_empty() {
        Some("ranges are not adjacent")
    } else if replica_nodes(&meta.desc) != replica_nodes(source) {
        Some("replica sets differ")
    } else {
        None
    }
}

/// A committed `CommitMerge` entry that the target `meta` will absorb
/// (its version and checks pass): the source's descriptor, freeze index
/// and freeze term. `None` for any other entry, or one the target refuses
/// (which needs nothing from the local source).
pub(crate) fn absorbing_merge(
    meta: &RangeMeta,
    data: &Bytes,
) -> Option<(RangeDescriptor, u64, u64)> {
    let Ok(Command::CommitMerge {
        version,
        source,
        freeze_index,
        freeze_term,
    }) = Command::decode(data)
    else {
        return None;
    };
    if version != meta.desc.epoch.version || commit_merge_refusal(meta, &source).is_some() {
        return None;
    }
    Some((source, freeze_index, freeze_term))
}

/// The payload of a write command for `ops` routed with `version`.
pub(crate) fn write_command(version: u64, ops: Vec<WriteOp>) -> Bytes {
    Command::Write { version, ops }.encode()
}
