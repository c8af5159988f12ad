//! The batched round over every group with a Ready: one WAL batch, one
//! state-store apply batch, then the effects of what applied (new ranges,
//! merges, membership) and the answers to callers.

use super::*;

/// Test crash points at the steps of splits and merges (see `failpoint`).
fn fail_points(effects: &[Effect], stage: &str) {
    for effect in effects {
        let name = match effect {
            Effect::Split { .. } => format!("split:{stage}"),
            Effect::Frozen { .. } => format!("merge:freeze-{stage}"),
            Effect::Merged { .. } => format!("merge:commit-{stage}"),
            _ => continue,
        };
        crate::failpoint::hit(&name);
    }
}

impl Node {
    /// One batched round over every group with a Ready. Returns whether
    /// any group had one.
    pub(super) fn cycle(&mut self) -> Result<bool, Error> {
        let mut wal_batch = WriteBatch::new();
        let mut readies = Vec::new();
        let mut held_only = Vec::new();
        for (&range_id, peer) in self.peers.iter_mut() {
            if !peer.group.has_ready() {
                if !peer.held.is_empty() {
                    held_only.push(range_id);
                }
                continue;
            }
            let ready = peer.group.ready();
            self.stats.observe_ready(range_id, &ready, peer.leader_seen);
            if let Some(soft) = ready.soft_state {
                peer.leader_seen = soft.leader;
            }
            if let Some(snapshot) = &ready.snapshot {
                wal_batch.install_snapshot(range_id, snapshot.meta.index, snapshot.meta.term);
                wal_batch.set_conf_state(range_id, snapshot.meta.conf_state.clone());
            }
            wal_batch.append(range_id, &ready.entries)?;
            if let Some(hs) = ready.hard_state {
                wal_batch.set_hard_state(range_id, hs);
            }
            readies.push((range_id, ready));
        }
        if readies.is_empty() && held_only.is_empty() {
            self.holding = false;
            return Ok(false);
        }
        // A leader's appends may leave before its own persist: the disk
        // write and the followers' run in parallel.
        for (range_id, ready) in readies.iter_mut() {
            let messages = std::mem::take(&mut ready.messages);
            self.send_messages(*range_id, messages);
        }
        if !wal_batch.is_empty() {
            // A batch that only moves commit indexes needs no fsync (Raft
            // relearns a lost commit index; on restart it is never below
            // the applied one). A lone writer's entry then costs one fsync,
            // not two (entry, then its commit).
            let sync = self.config.wal_sync && readies.iter().any(|(_, r)| r.must_sync());
            let started = Instant::now();
            self.wal.write_owned(wal_batch, sync)?;
            metrics::histogram!("flotilla_wal_write_seconds")
                .record(started.elapsed().as_secs_f64());
            self.stats.wal_writes += 1;
        }
        for (range_id, ready) in readies.iter_mut() {
            let messages = std::mem::take(&mut ready.messages_after_persist);
            self.send_messages(*range_id, messages);
        }
        let committed_at = Instant::now();
        let mut apply = self.store.apply_batch();
        let mut effects = Vec::new();
        let mut replies: Vec<(RangeId, u64, u64, Result<Outcome, Error>)> = Vec::new();
        let mut conf_changes = Vec::new();
        // Each range's entries: first those held back by an earlier cycle.
        let mut work: Vec<(RangeId, Vec<flotilla_raftgroup::Entry>)> = Vec::new();
        for (range_id, ready) in readies.iter_mut() {
            let Some(peer) = self.peers.get_mut(range_id) else {
                continue;
            };
            let mut entries = std::mem::take(&mut peer.held);
            entries.append(&mut ready.committed_entries);
            if !entries.is_empty() {
                work.push((*range_id, entries));
            }
        }
        for range_id in held_only {
            if let Some(peer) = self.peers.get_mut(&range_id) {
                work.push((range_id, std::mem::take(&mut peer.held)));
            }
        }
        let mut holding = false;
        let applied_before = self.stats.entries_applied;
        let touched: Vec<RangeId> = work.iter().map(|(id, _)| *id).collect();
        let mut to_pull = Vec::new();
        for (range_id, entries) in work {
            let Some(mut peer) = self.peers.remove(&range_id) else {
                continue;
            };
            let is_leader = peer.group.is_leader();
            let mut rest = Vec::new();
            let mut last_applied = None;
            for entry in entries {
                if !rest.is_empty() {
                    rest.push(entry);
                    continue;
                }
                if entry.index <= peer.applied.0 {
                    // Already in the state store (a snapshot brought it).
                    replies.push((range_id, entry.index, entry.term, Ok(Outcome::Done)));
                    continue;
                }
                if entry.kind == EntryKind::Normal && crate::command::is_commit_merge(&entry.data) {
                    if let Some((source, freeze_index, freeze_term)) =
                        absorbing_merge(&peer.meta, &entry.data)
                    {
                        if self.merge_source_elsewhere(source.id) {
                            to_pull.push(source.id);
                            rest.push(entry);
                            continue;
                        }
                        match merge_must_wait(
                            &mut self.peers,
                            range_id,
                            &source,
                            freeze_index,
                            freeze_term,
                        ) {
                            MergeReadiness::Ready => peer.stuck = None,
                            MergeReadiness::Wait => {
                                rest.push(entry);
                                continue;
                            }
                            MergeReadiness::Stuck(why) => {
                                if peer.stuck.as_deref() != Some(why.as_str()) {
                                    // Impossible while the protocol holds;
                                    // absorbing would leave this replica
                                    // without the source's data (and its
                                    // snapshots would spread the hole).
                                    tracing::error!(
                                        range_id,
                                        source = source.id,
                                        index = entry.index,
                                        reason = %why,
                                        "ALARM: a merge cannot apply on this replica; the range \
                                         stops applying here until an operator looks"
                                    );
                                    metrics::counter!("flotilla_merges_stuck_total").increment(1);
                                    self.stats.merges_stuck += 1;
                                    peer.stuck = Some(why);
                                }
                                rest.push(entry);
                                continue;
                            }
                        }
                    }
                }
                let outcome = match entry.kind {
                    _ if entry.data.is_empty() => Ok(Outcome::Done),
                    EntryKind::ConfChange => {
                        match Self::apply_membership(
                            &mut peer,
                            entry.index,
                            &entry.data,
                            &mut apply,
                            &mut effects,
                        ) {
                            Ok(conf) => {
                                conf_changes.push((range_id, conf));
                                Ok(Outcome::Done)
                            }
                            Err(e) => {
                                tracing::warn!(range_id, index = entry.index, error = %e, "membership change refused at apply");
                                Err(e)
                            }
                        }
                    }
                    EntryKind::Normal => apply_entry(
                        &mut peer.meta,
                        is_leader,
                        &entry,
                        &LocalView {
                            peers: &self.peers,
                            on_node: &self.applied_shared,
                        },
                        &mut apply,
                        &mut effects,
                    ),
                };
                replies.push((range_id, entry.index, entry.term, outcome));
                self.stats.entries_applied += 1;
                last_applied = Some((entry.index, entry.term));
            }
            if let Some((index, term)) = last_applied {
                if index > peer.applied.0 {
                    apply.set_applied(range_id, index, term);
                    peer.applied = (index, term);
                }
            }
            holding |= !rest.is_empty();
            peer.held = rest;
            self.peers.insert(range_id, peer);
        }
        self.holding = holding;
        let applied_any = !replies.is_empty();
        fail_points(&effects, "persisted");
        apply.commit()?;
        for source in to_pull {
            self.pull(source);
        }
        self.hand_split_children(&effects);
        fail_points(&effects, "applied");
        let timing = ApplyTiming {
            committed_at,
            applied_at: Instant::now(),
        };
        if applied_any {
            let took = timing.applied_at.duration_since(committed_at);
            metrics::histogram!("flotilla_raft_apply_seconds").record(took.as_secs_f64());
        }
        {
            let mut shared = self.applied_shared.write();
            for range_id in &touched {
                if let Some(peer) = self.peers.get(range_id) {
                    shared.insert(*range_id, peer.applied.0);
                }
            }
        }
        if !conf_changes.is_empty() {
            // The descriptors (committed above) are the durable record; this
            // copy lets the log's configuration follow without a restart.
            let mut batch = WriteBatch::new();
            for (range_id, conf) in conf_changes {
                batch.set_conf_state(range_id, conf);
                self.stats.membership_changes += 1;
            }
            self.wal.write(&batch, false)?;
        }
        for (range_id, index, term, outcome) in replies {
            if let Some(peer) = self.peers.get_mut(&range_id) {
                peer.resolve(index, term, outcome, timing);
            }
        }
        let active: Vec<RangeId> = readies.iter().map(|(id, _)| *id).collect();
        for (range_id, mut ready) in readies {
            let Some(peer) = self.peers.get_mut(&range_id) else {
                continue;
            };
            for state in std::mem::take(&mut ready.read_states) {
                let mut raw = [0u8; 8];
                if state.context.len() == 8 {
                    raw.copy_from_slice(&state.context);
                }
                if let Some(waiter) = peer.reads_unconfirmed.remove(&u64::from_le_bytes(raw)) {
                    peer.reads_confirmed.push((state.index, waiter));
                }
            }
            let dropped: Vec<u64> = ready
                .reads_dropped
                .iter()
                .filter(|c| c.len() == 8)
                .map(|c| {
                    let mut raw = [0u8; 8];
                    raw.copy_from_slice(c);
                    u64::from_le_bytes(raw)
                })
                .collect();
            // Held entries are not applied: Raft hears of what is.
            peer.group.advance_append(ready);
            peer.group.advance_apply_to(peer.applied.0);
            let error = peer.not_leader();
            let mut failed = Vec::new();
            for context in dropped {
                if let Some(waiter) = peer.reads_unconfirmed.remove(&context) {
                    failed.push(waiter);
                }
            }
            for waiter in failed {
                self.read_failed(waiter, error.clone());
            }
            self.serve_confirmed_reads(range_id);
        }
        for effect in effects {
            self.after_apply(effect)?;
        }
        self.maybe_compact(&active)?;
        if let Some(network) = &self.network {
            network.transport.flush();
        }
        Ok(!active.is_empty() || self.stats.entries_applied > applied_before)
    }

    /// New ranges of splits that live in another loop start there before
    /// anyone hears of the split: a caller answered below may ask that
    /// loop about the new range at once.
    fn hand_split_children(&mut self, effects: &[Effect]) {
        for effect in effects {
            let Effect::Split {
                left,
                right,
                parent_leader,
            } = effect
            else {
                continue;
            };
            let right_id = right.desc.id;
            let home = self.shards.placement.shard_of(right_id);
            if home == self.shard {
                continue;
            }
            let remeasure = self.auto.split_applied(left.id, right_id);
            self.auto.forget(right_id);
            // On the node from now (its metadata is written). Its start
            // goes out before the map routes its keys to its loop, so it is
            // queued there before any request for it.
            self.applied_shared
                .write()
                .entry(right_id)
                .or_insert(BOOTSTRAP_INDEX);
            self.forward(
                home,
                Msg::StartPeer {
                    meta: right.clone(),
                    campaign: *parent_leader,
                    remeasure,
                },
            );
            let result = self
                .router
                .write()
                .map_mut()
                .apply_split(left.clone(), right.desc.clone());
            if let Err(e) = result {
                tracing::error!(error = %e, "range map refused a split that applied");
            }
        }
    }

    /// Forget a local replica whose keys `target` now owns (a merge, or a
    /// snapshot of the widened target): its raft group and log go, its
    /// data stays (raw keys, now the target's). The state store's metadata
    /// of it is retired by the caller's batch.
    pub(super) fn drop_absorbed(
        &mut self,
        source: RangeId,
        target: &RangeDescriptor,
    ) -> Result<(), Error> {
        self.applied_shared.write().remove(&source);
        self.frozen_since.remove(&source);
        self.shards.placement.forget(source);
        if let Some(mut peer) = self.peers.remove(&source) {
            peer.fail_all(&Error::EpochMismatch {
                range_id: source,
                current: vec![target.clone()],
            });
        }
        if let Some(job) = self.merges.remove(&source) {
            let _ = job.reply.send(Err(Error::AdminRefused(format!(
                "range {source} was absorbed by range {}",
                target.id
            ))));
        }
        let mut batch = WriteBatch::new();
        batch.remove_group(source);
        self.wal.write(&batch, true)?;
        Ok(())
    }

    fn after_apply(&mut self, effect: Effect) -> Result<(), Error> {
        match effect {
            Effect::Split {
                left,
                right,
                parent_leader,
            } => {
                let right_id = right.desc.id;
                if let Some(peer) = self.peers.get_mut(&left.id) {
                    peer.meta.desc = left.clone();
                }
                tracing::info!(
                    range_id = left.id,
                    new_range_id = right_id,
                    version = left.epoch.version,
                    "split applied"
                );
                if self.shards.placement.shard_of(right_id) == self.shard {
                    self.auto.split_applied(left.id, right_id);
                    // On the node before the map routes to it (see
                    // `hand_split_children`); `start_peer` sets the index.
                    self.applied_shared
                        .write()
                        .entry(right_id)
                        .or_insert(BOOTSTRAP_INDEX);
                    let right_desc = right.desc.clone();
                    if let Err(e) = self.router.write().map_mut().apply_split(left, right_desc) {
                        tracing::error!(error = %e, "range map refused a split that applied");
                    }
                    self.start_peer(right, parent_leader, true)?;
                }
                // Otherwise `hand_split_children` started it in its loop.
                self.stats.splits += 1;
            }
            Effect::Frozen {
                source,
                target,
                index,
                term,
            } => {
                if let Some(peer) = self.peers.get(&source) {
                    let _ = self.router.write().map_mut().update(peer.meta.desc.clone());
                }
                tracing::info!(range_id = source, target, index, "frozen for a merge");
                self.source_frozen(source, target, index, term);
            }
            Effect::MergeRefused { source, target } => {
                // The apply already updated the target's own descriptor.
                let _ = self.router.write().map_mut().update(target);
                self.merge_refused(source);
            }
            Effect::Merged { target, source } => {
                // The map first: another loop must never find a range in
                // it that is no longer on the node (see `on_node`).
                let result = self
                    .router
                    .write()
                    .map_mut()
                    .apply_merge(target.clone(), source);
                if let Err(e) = result {
                    tracing::error!(error = %e, "range map refused a merge that applied");
                }
                self.drop_absorbed(source, &target)?;
                if let Some(peer) = self.peers.get_mut(&target.id) {
                    peer.meta.desc = target.clone();
                }
                tracing::info!(
                    range_id = target.id,
                    source,
                    version = target.epoch.version,
                    "merge applied"
                );
                self.stats.merges += 1;
            }
            Effect::Unfrozen { source } => {
                tracing::info!(
                    range_id = source.id,
                    version = source.epoch.version,
                    "merge rolled back: unfrozen"
                );
                self.frozen_since.remove(&source.id);
                let _ = self.router.write().map_mut().update(source);
            }
            Effect::Reconfigured {
                desc,
                removed_here,
                tell_removed,
            } => {
                let range_id = desc.id;
                let _ = self.router.write().map_mut().update(desc);
                if let Some((replica, node, index)) = tell_removed {
                    self.tell_removed(range_id, replica, node, index);
                }
                if removed_here {
                    self.destroy_replica(range_id)?;
                }
            }
        }
        Ok(())
    }
}
