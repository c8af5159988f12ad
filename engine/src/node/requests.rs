//! Requests from the API: routed to their range, proposed, or answered.

use super::*;

impl Node {
    pub(super) fn handle_request(&mut self, request: Request) {
        match request {
            Request::Write { ops, reply } => {
                if let Err(e) = self.propose_write(ops, reply) {
                    // `propose_write` consumed the reply on error paths.
                    tracing::debug!(error = %e, "write refused");
                }
            }
            Request::Get {
                key,
                consistency,
                reply,
            } => self.start_get(key, consistency, reply),
            Request::Scan {
                start,
                end,
                limit,
                consistency,
                reply,
            } => self.start_scan(start, end, limit, consistency, reply),
            Request::Split { key, reply } => self.start_split(key, reply),
            Request::Merge { left, right, reply } => self.start_merge(left, right, reply),
            Request::AddReplica {
                range_id,
                node,
                reply,
            } => self.start_add_replica(range_id, node, reply),
            Request::RemoveReplica {
                range_id,
                node,
                reply,
            } => self.start_remove_replica(range_id, node, reply),
            Request::TransferLeader {
                range_id,
                node,
                reply,
            } => self.start_transfer_leader(range_id, node, reply),
            Request::Ranges { reply } => {
                let infos = self
                    .peers
                    .values()
                    .map(|p| RangeInfo {
                        descriptor: p.meta.desc.clone(),
                        role: p.group.role(),
                        term: p.group.term(),
                        applied_index: p.applied.0,
                        merging_into: p.meta.frozen.map(|f| f.target),
                    })
                    .collect();
                let _ = reply.send(infos);
            }
            Request::Stats { reply } => {
                let mut stats = self.stats.clone();
                let wal = self.wal.stats();
                stats.wal_fsyncs = wal.fsyncs;
                stats.wal_batches = wal.batches_written;
                stats.ranges = self.peers.len() as u64;
                stats.uptime_ms = self.started.elapsed().as_millis() as u64;
                let _ = reply.send(stats);
            }
        }
    }

    pub(super) fn peer_for_key(&mut self, key: &[u8]) -> Result<RangeId, Error> {
        let target = self
            .router
            .read()
            .route(key)
            .map_err(|e| Error::RangeNotFound(e.to_string()))?;
        if self.peers.contains_key(&target.range.id) {
            Ok(target.range.id)
        } else {
            Err(Error::RangeNotFound(format!(
                "range {} has no replica here",
                target.range.id
            )))
        }
    }

    /// Propose a write; on refusal the reply carries the error.
    pub(super) fn propose_write(&mut self, ops: Vec<WriteOp>, reply: Reply) -> Result<(), Error> {
        let first_key = ops.first().map(|op| op.key().clone());
        let bytes: u64 = ops.iter().map(|op| op.bytes() as u64).sum();
        let result = self.try_propose_write(ops);
        match result {
            Ok((range_id, index, term)) => {
                if let Some(key) = &first_key {
                    self.auto.note(range_id, key, bytes);
                }
                if let Some(peer) = self.peers.get_mut(&range_id) {
                    peer.proposals.push_back(Proposal::new(index, term, reply));
                }
                self.stats.proposals += 1;
                Ok(())
            }
            Err(e) => {
                let _ = reply.send(Err(e.clone()));
                Err(e)
            }
        }
    }

    pub(super) fn try_propose_write(
        &mut self,
        ops: Vec<WriteOp>,
    ) -> Result<(RangeId, u64, u64), Error> {
        let first_key = ops
            .first()
            .map(|op| op.key().clone())
            .ok_or_else(|| Error::InvalidRequest("empty write batch".into()))?;
        let range_id = self.peer_for_key(&first_key)?;
        let peer = self
            .peers
            .get_mut(&range_id)
            .ok_or_else(|| Error::RangeNotFound(range_id.to_string()))?;
        if let Some(op) = ops.iter().find(|op| !peer.meta.desc.contains_key(op.key())) {
            let second = self
                .router
                .read()
                .route(op.key())
                .map(|t| t.range.id)
                .unwrap_or_default();
            return Err(Error::CrossRangeBatch {
                first: range_id,
                second,
            });
        }
        if !peer.group.is_leader() {
            return Err(peer.not_leader());
        }
        if peer.meta.frozen.is_some() {
            return Err(Error::Busy(format!(
                "range {range_id} is being merged; retry shortly"
            )));
        }
        if peer.proposals.len() >= self.config.proposals_per_range_max {
            return Err(Error::Busy(format!(
                "range {range_id} has {} proposals in flight",
                peer.proposals.len()
            )));
        }
        let data = write_command(peer.meta.desc.epoch.version, ops);
        let term = peer.group.term();
        let index = peer.group.propose(data)?;
        Ok((range_id, index, term))
    }
}
