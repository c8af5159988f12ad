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
        match crate::snapshot::apply_staged(&self.store, &staged) {
            Ok(header) => {
                let meta = match RangeMeta::decode(&header.storage.descriptor) {
                    Ok(meta) => meta,
                    Err(e) => {
                        tracing::error!(range_id, error = %e, "snapshot carried a bad descriptor");
                        return;
                    }
                };
                if let Some(peer) = self.peers.get_mut(&range_id) {
                    peer.applied = (header.raft.index, header.raft.term);
                    if meta.desc != peer.meta.desc {
                        let desc = meta.desc.clone();
                        self.router.map_mut().remove(range_id);
                        if let Err(e) = self.router.map_mut().insert(desc) {
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
