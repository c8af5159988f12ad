//! The engine side of snapshot transfer: a staged snapshot is applied to
//! the state store before Raft hears of it; a finished send is followed by
//! the Raft message and reported to the group.

use super::*;

impl Node {
    /// Apply a snapshot received for a local range (data only; Raft
    /// learns of it from the leader's message that follows).
    pub(super) fn install_staged(&mut self, staged: StagedSnapshot) {
        let range_id = staged.meta().range_id;
        let Some(peer) = self.peers.get(&range_id) else {
            return self.create_from_snapshot(staged);
        };
        if staged.meta().index <= peer.applied.0 {
            return; // Stale: already have it.
        }
        // A widened range's snapshot retires the local ranges it covers:
        // they must be in this loop first, so none of them applies an old
        // entry over the snapshot's data from another thread.
        if self.shards.count() > 1 {
            if let Ok(meta) = staged_meta(&staged) {
                let elsewhere: Vec<RangeId> = self
                    .local_overlapping(&meta.desc)
                    .into_iter()
                    .filter(|id| !self.peers.contains_key(id))
                    .collect();
                if !elsewhere.is_empty() {
                    self.park(elsewhere, Msg::SnapshotStaged(Box::new(staged)));
                    return;
                }
            }
        }
        match crate::snapshot::apply_staged(&self.store, &staged) {
            Ok(header) => {
                let meta = match RangeMeta::decode(&header.storage.descriptor) {
                    Ok(meta) => meta,
                    Err(e) => {
                        tracing::error!(range_id, error = %e, "snapshot carried a bad descriptor");
                        return;
                    }
                };
                if let Err(e) = self.drop_overlapped(range_id, &meta.desc) {
                    tracing::error!(range_id, error = %e, "cannot retire a range the snapshot absorbed");
                }
                if let Some(peer) = self.peers.get_mut(&range_id) {
                    peer.applied = (header.raft.index, header.raft.term);
                    if meta.desc != peer.meta.desc {
                        let desc = meta.desc.clone();
                        let mut router = self.router.write();
                        router.map_mut().remove(range_id);
                        if let Err(e) = router.map_mut().insert(desc) {
                            tracing::error!(range_id, error = %e, "range map refused a snapshot's descriptor");
                        }
                    }
                    peer.meta = meta;
                }
                self.applied_shared
                    .write()
                    .insert(range_id, header.raft.index);
                self.stats.snapshots_applied += 1;
                tracing::info!(range_id, index = header.raft.index, "snapshot applied");
            }
            Err(e) => tracing::warn!(range_id, error = %e, "snapshot apply failed"),
        }
    }

    /// A snapshot widened `range_id` over other local ranges (it was taken
    /// after a merge this replica never applied from the log): those
    /// replicas are gone; the snapshot already rewrote their keys.
    fn drop_overlapped(&mut self, range_id: RangeId, desc: &RangeDescriptor) -> Result<(), Error> {
        let overlapped: Vec<RangeId> = self
            .peers
            .iter()
            .filter(|(id, p)| **id != range_id && overlaps(&p.meta.desc, desc))
            .map(|(id, _)| *id)
            .collect();
        for other in overlapped {
            tracing::info!(
                range_id,
                absorbed = other,
                "snapshot covers a local range: retiring it"
            );
            // The map first: no loop may find it there once it is gone.
            self.router.write().map_mut().remove(other);
            self.drop_absorbed(other, desc)?;
            let mut batch = self.store.apply_batch();
            batch.retire_range(other);
            batch.commit()?;
            self.stats.merges += 1;
        }
        Ok(())
    }

    /// A snapshot send finished: on success the Raft message follows the
    /// data; either way Raft learns the outcome.
    pub(super) fn snapshot_sent(
        &mut self,
        range_id: RangeId,
        to: ReplicaId,
        meta: SnapshotMeta,
        ok: bool,
    ) {
        let Some(peer) = self.peers.get_mut(&range_id) else {
            return;
        };
        if ok && peer.group.is_leader() {
            if let (Some(node), Some(network)) =
                (peer.meta.desc.replica(to).map(|r| r.node_id), &self.network)
            {
                let message = flotilla_raftgroup::Message {
                    from: peer.replica_id,
                    to,
                    term: peer.group.term(),
                    body: flotilla_raftgroup::MessageBody::InstallSnapshot {
                        snapshot: Snapshot {
                            meta,
                            data: Bytes::new(),
                        },
                    },
                };
                network
                    .transport
                    .send(node, RaftEnvelope { range_id, message });
                network.transport.flush();
            }
        }
        peer.group.report_snapshot(to, ok);
    }
}

/// The descriptor a staged snapshot carries, read from its header.
pub(super) fn staged_meta(staged: &StagedSnapshot) -> Result<RangeMeta, String> {
    let mut reader = staged.reader().map_err(|e| e.to_string())?;
    let raw = reader.header().map_err(|e| e.to_string())?;
    let header = crate::snapshot::RangeSnapshotHeader::decode(&raw).map_err(|e| e.to_string())?;
    RangeMeta::decode(&header.storage.descriptor).map_err(|e| e.to_string())
}
