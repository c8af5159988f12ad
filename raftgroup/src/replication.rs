//! Log replication (§5.3): appends with flow control, heartbeats,
//! snapshots for followers that fell behind compaction, and the commit
//! rule that only counts entries of the leader's own term (§5.4.2).

use crate::error::Error;
use crate::group::RaftGroup;
use crate::progress::ProgressState;
use crate::quorum::majority_index;
use crate::store::{LogStore, StoreError};
use crate::types::{Index, Message, MessageBody, ReplicaId, Role};

impl<S: LogStore> RaftGroup<S> {
    fn other_members(&self) -> Vec<ReplicaId> {
        self.progress
            .keys()
            .copied()
            .filter(|&id| id != self.id)
            .collect()
    }

    /// Send what each follower is missing (or just the commit index).
    pub(crate) fn broadcast_append(&mut self) {
        for id in self.other_members() {
            self.send_append(id, true);
        }
    }

    /// Send the next append to `to` if flow control allows. Returns
    /// whether a message went out.
    pub(crate) fn send_append(&mut self, to: ReplicaId, send_if_empty: bool) -> bool {
        let Some(pr) = self.progress.get(&to) else {
            return false;
        };
        if pr.is_paused() {
            return false;
        }
        let next = pr.next;
        let state = pr.state;
        let prev_index = next - 1;
        let last = match self.log.last_index() {
            Ok(last) => last,
            Err(e) => {
                self.note_store_error(e);
                return false;
            }
        };
        let prev_term = self.log.term(prev_index);
        let entries = self
            .log
            .entries(next, last + 1, self.config.message_bytes_max);
        let (prev_term, entries) = match (prev_term, entries) {
            (Ok(t), Ok(e)) => (t, e),
            (Err(StoreError::Compacted), _) | (_, Err(StoreError::Compacted)) => {
                return self.send_snapshot(to);
            }
            (Err(e), _) | (_, Err(e)) => {
                // Broken storage: nothing sent, the error kept for the
                // engine (`store_error`); retried on the next event.
                self.note_store_error(e);
                return false;
            }
        };
        if entries.is_empty() && !send_if_empty {
            return false;
        }
        if let Some(pr) = self.progress.get_mut(&to) {
            match state {
                ProgressState::Replicate => {
                    if let Some(last_entry) = entries.last() {
                        let bytes = entries.iter().map(|e| e.size_bytes()).sum();
                        pr.next = last_entry.index + 1;
                        pr.inflights.add(last_entry.index, bytes);
                    }
                }
                ProgressState::Probe => pr.probe_sent = true,
                ProgressState::Snapshot => {}
            }
        }
        let commit = self.log.committed;
        self.send(
            to,
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            },
        );
        true
    }

    fn send_snapshot(&mut self, to: ReplicaId) -> bool {
        let Some(pr) = self.progress.get(&to) else {
            return false;
        };
        if !pr.recent_active {
            // Not heard from this check-quorum round: streaming a snapshot
            // to a node that may be down wastes the sender's bandwidth. Its
            // next answer makes it active and the append that follows
            // finds the log compacted again.
            return false;
        }
        let matched = pr.matched;
        let snapshot = match self.log.snapshot(matched) {
            Ok(s) if s.meta.index > 0 => s,
            // Not ready yet (being built) or none: retry on the next event.
            _ => return false,
        };
        if let Some(pr) = self.progress.get_mut(&to) {
            pr.become_snapshot(snapshot.meta.index);
        }
        self.send(to, MessageBody::InstallSnapshot { snapshot });
        true
    }

    /// A probe that was lost (the follower was down, or its node had no
    /// replica yet and dropped it) would pause the follower forever: only
    /// an answer unpauses a probe, and a follower that answers no
    /// heartbeat never triggers one. Once per election timeout, probe
    /// every follower in probe state that is behind.
    pub(crate) fn reprobe_silent_followers(&mut self) {
        let last = match self.log.last_index() {
            Ok(last) => last,
            Err(e) => {
                self.note_store_error(e);
                return;
            }
        };
        let silent: Vec<ReplicaId> = self
            .progress
            .iter()
            .filter(|(&id, pr)| {
                id != self.id && pr.state == ProgressState::Probe && pr.matched < last
            })
            .map(|(&id, _)| id)
            .collect();
        for id in silent {
            if let Some(pr) = self.progress.get_mut(&id) {
                pr.probe_sent = false;
            }
            self.send_append(id, true);
        }
    }

    /// Heartbeats to every member, starting a new round `seq`.
    pub(crate) fn broadcast_heartbeat(&mut self, quiesce: bool) {
        self.heartbeat_seq += 1;
        let seq = self.heartbeat_seq;
        self.heartbeat_seq_ticks.push_back((seq, self.tick_now));
        // Rounds older than an election timeout can no longer give a lease.
        let horizon = self
            .tick_now
            .saturating_sub(u64::from(self.config.ticks_election_max));
        while self.heartbeat_seq_ticks.len() > 1
            && self
                .heartbeat_seq_ticks
                .front()
                .is_some_and(|&(_, t)| t < horizon)
        {
            self.heartbeat_seq_ticks.pop_front();
        }
        for id in self.other_members() {
            let matched = self.progress.get(&id).map(|p| p.matched).unwrap_or(0);
            // Never tell a follower to commit beyond what it is known to
            // hold: its log past `matched` may still differ from ours.
            let commit = matched.min(self.log.committed);
            self.send(
                id,
                MessageBody::Heartbeat {
                    commit,
                    seq,
                    quiesce,
                },
            );
        }
    }

    /// Advance the commit index to what a majority holds, if that entry is
    /// of this term. Returns whether it moved.
    pub(crate) fn maybe_commit(&mut self) -> bool {
        let mut matched: Vec<Index> = self
            .conf
            .voters
            .iter()
            .map(|v| self.progress.get(v).map(|p| p.matched).unwrap_or(0))
            .collect();
        let index = majority_index(&mut matched);
        if index > self.log.committed && matches!(self.log.term(index), Ok(t) if t == self.term) {
            self.log.commit_to(index);
            return true;
        }
        false
    }

    pub(crate) fn handle_append(&mut self, message: Message) -> Result<(), Error> {
        let MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } = message.body
        else {
            return Ok(());
        };
        let from = message.from;
        if prev_index < self.log.committed {
            // Everything up to our commit is settled; tell the leader.
            let committed = self.log.committed;
            self.send(from, append_ok(committed));
            return Ok(());
        }
        match self
            .log
            .maybe_append(prev_index, prev_term, commit, &entries)?
        {
            Some(last_new) => self.send(from, append_ok(last_new)),
            None => {
                let last = self.log.last_index()?;
                let hint_index = self
                    .log
                    .find_conflict_by_term(prev_index.min(last), prev_term);
                let hint_term = self.log.term(hint_index).unwrap_or(0);
                self.send(
                    from,
                    MessageBody::AppendResponse {
                        reject: true,
                        index: prev_index,
                        hint_index,
                        hint_term,
                    },
                );
            }
        }
        Ok(())
    }

    pub(crate) fn handle_heartbeat(&mut self, message: Message) -> Result<(), Error> {
        let MessageBody::Heartbeat {
            commit,
            seq,
            quiesce,
        } = message.body
        else {
            return Ok(());
        };
        let last = self.log.last_index()?;
        self.log.commit_to(commit.min(last));
        if quiesce && self.log.committed == last && self.leader == message.from {
            // Caught up and told to rest (or the leader's periodic
            // reminder): quiet until woken. No answer, since an answer
            // would wake the leader.
            self.quiesced = true;
            self.ticks_quiesced_elapsed = 0;
            return Ok(());
        }
        self.send(message.from, MessageBody::HeartbeatResponse { seq });
        Ok(())
    }

    pub(crate) fn handle_snapshot(&mut self, message: Message) -> Result<(), Error> {
        let MessageBody::InstallSnapshot { snapshot } = message.body else {
            return Ok(());
        };
        let index = snapshot.meta.index;
        if index <= self.log.committed {
            let committed = self.log.committed;
            self.send(message.from, append_ok(committed));
            return Ok(());
        }
        if self.log.match_term(index, snapshot.meta.term) {
            // We already hold the snapshot's last entry: just commit.
            self.log.commit_to(index);
            let committed = self.log.committed;
            self.send(message.from, append_ok(committed));
            return Ok(());
        }
        if self.log.applying > self.log.applied {
            // Entries handed out earlier are still being applied: their
            // configuration changes would then apply on top of the
            // snapshot's later configuration. Ignore it; the leader sends
            // it again once the transfer is reported (and we answer).
            return Ok(());
        }
        self.set_conf(snapshot.meta.conf_state.clone());
        self.log.restore(snapshot);
        self.send(message.from, append_ok(index));
        Ok(())
    }

    pub(crate) fn handle_append_response(&mut self, message: Message) -> Result<(), Error> {
        let MessageBody::AppendResponse {
            reject,
            index,
            hint_index,
            hint_term,
        } = message.body
        else {
            return Ok(());
        };
        let from = message.from;
        let first_index = self.log.first_index()?;
        let last_index = self.log.last_index()?;
        let probe_hint = if reject && hint_term > 0 {
            self.log.find_conflict_by_term(hint_index, hint_term)
        } else {
            hint_index
        };
        let Some(pr) = self.progress.get_mut(&from) else {
            return Ok(());
        };
        pr.recent_active = true;
        if reject {
            if pr.maybe_decrease_to(index, probe_hint) {
                if pr.state == ProgressState::Replicate {
                    pr.become_probe();
                }
                self.send_append(from, true);
            }
            return Ok(());
        }
        let was_paused = pr.is_paused();
        if !pr.maybe_update(index) {
            if pr.state == ProgressState::Probe && index == pr.matched {
                // A probe answered at what we know it holds (a follower put
                // in probe by `report_unreachable` that was caught up): the
                // logs agree, stream again.
                pr.become_replicate();
                while self.send_append(from, false) {}
            }
            return Ok(());
        }
        match pr.state {
            ProgressState::Probe => pr.become_replicate(),
            ProgressState::Snapshot => {
                if pr.matched + 1 >= first_index {
                    pr.become_probe();
                    pr.become_replicate();
                }
            }
            ProgressState::Replicate => pr.inflights.free_to(index),
        }
        let matched = pr.matched;
        if self.maybe_commit() {
            self.broadcast_append();
        } else if was_paused {
            self.send_append(from, false);
        }
        // Keep the pipeline full while the window allows.
        while self.send_append(from, false) {}
        if self.transfer_target == from && matched == last_index {
            self.send(from, MessageBody::TimeoutNow);
        }
        Ok(())
    }

    pub(crate) fn handle_heartbeat_response(&mut self, from: ReplicaId, seq: u64) {
        let last_index = match self.log.last_index() {
            Ok(last) => last,
            Err(e) => {
                self.note_store_error(e);
                return;
            }
        };
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        pr.probe_sent = false;
        pr.acked_seq = pr.acked_seq.max(seq);
        if pr.state == ProgressState::Replicate && pr.inflights.is_full() {
            pr.inflights.free_first();
        }
        let behind = pr.matched < last_index;
        let probing = pr.state == ProgressState::Probe;
        if (behind || probing) && self.role == Role::Leader {
            // Send even when nothing lies at `next` (appends were lost, or
            // the member is new): the follower's rejection is what makes
            // the leader back up. Without it an idle leader never catches
            // a follower up. A caught-up follower in probe acknowledges the
            // empty append, which puts it back to replicate.
            self.send_append(from, true);
        }
        self.release_reads();
    }
}

fn append_ok(index: Index) -> MessageBody {
    MessageBody::AppendResponse {
        reject: false,
        index,
        hint_index: 0,
        hint_term: 0,
    }
}
