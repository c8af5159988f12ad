//! Linearizable reads without writing to the log: ReadIndex (§6.4 of the
//! Raft thesis) and the leader lease derived from check-quorum.
//!
//! Reads are batched by heartbeat round: every read that arrives before a
//! round starts is confirmed by that round's quorum of answers, so a burst
//! of reads costs one heartbeat broadcast, not one per read.

use bytes::Bytes;

use crate::error::Error;
use crate::group::{PendingRead, RaftGroup};
use crate::quorum::majority_index;
use crate::store::LogStore;
use crate::types::{Index, MessageBody, ReadState, ReplicaId, Role, NO_REPLICA};

/// Most reads a leader queues (a bound, like every queue here).
const PENDING_READS_MAX: usize = 65_536;

impl<S: LogStore> RaftGroup<S> {
    /// Ask for a linearizable read. When it is safe, a Ready carries a
    /// [`ReadState`] with `context` and the index the state machine must
    /// have applied before the read is served. On a follower the request is
    /// forwarded to the leader.
    pub fn read_index(&mut self, context: Bytes) -> Result<(), Error> {
        self.wake();
        if self.role == Role::Leader {
            if self.pending_reads.len() >= PENDING_READS_MAX {
                return Err(Error::Busy {
                    uncommitted_bytes: self.pending_reads.len() as u64,
                    limit: PENDING_READS_MAX as u64,
                });
            }
            let id = self.id;
            self.handle_read_index_request(id, context);
            return Ok(());
        }
        if self.leader == NO_REPLICA {
            return Err(Error::NoLeader);
        }
        let leader = self.leader;
        self.send(leader, MessageBody::ReadIndex { context });
        Ok(())
    }

    pub(crate) fn handle_read_index_request(&mut self, from: ReplicaId, context: Bytes) {
        if self.pending_reads.len() >= PENDING_READS_MAX {
            if from != self.id {
                self.send(from, MessageBody::ReadIndexResponse { context, index: 0 });
            }
            return;
        }
        self.pending_reads.push_back(PendingRead {
            context,
            from,
            index: 0,
            seq: 0,
        });
    }

    /// Start a heartbeat round for the reads that have none yet. Waits
    /// until the leader committed an entry of its term: before that its
    /// commit index may be behind the true one.
    pub(crate) fn start_read_round(&mut self) {
        if self.role != Role::Leader || !self.term_committed() {
            return;
        }
        if !self.pending_reads.iter().any(|r| r.seq == 0) {
            return;
        }
        self.broadcast_heartbeat(false);
        let seq = self.heartbeat_seq;
        let committed = self.log.committed;
        for read in self.pending_reads.iter_mut().filter(|r| r.seq == 0) {
            read.seq = seq;
            read.index = committed;
        }
        self.release_reads();
    }

    /// The highest heartbeat round a quorum of voters has acknowledged.
    fn quorum_acked_seq(&self) -> u64 {
        let mut acked: Vec<u64> = self
            .conf
            .voters
            .iter()
            .map(|&v| {
                if v == self.id {
                    self.heartbeat_seq
                } else {
                    self.progress.get(&v).map(|p| p.acked_seq).unwrap_or(0)
                }
            })
            .collect();
        majority_index(&mut acked)
    }

    /// Answer every read whose round a quorum confirmed.
    pub(crate) fn release_reads(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let acked = self.quorum_acked_seq();
        while let Some(read) = self.pending_reads.front() {
            if read.seq == 0 || read.seq > acked {
                break;
            }
            let Some(read) = self.pending_reads.pop_front() else {
                break;
            };
            if read.from == self.id {
                self.read_states.push(ReadState {
                    index: read.index,
                    context: read.context,
                });
            } else {
                self.send(
                    read.from,
                    MessageBody::ReadIndexResponse {
                        context: read.context,
                        index: read.index,
                    },
                );
            }
        }
    }

    pub(crate) fn handle_read_index_response(&mut self, context: Bytes, index: Index) {
        if index == 0 {
            self.reads_dropped.push(context);
        } else {
            self.read_states.push(ReadState { index, context });
        }
    }

    /// Leadership is lost or changing: pending reads will never complete.
    /// Called once the term may have moved, so the answers to forwarded
    /// reads wait for the persist like every message of a follower.
    pub(crate) fn drop_pending_reads(&mut self) {
        while let Some(read) = self.pending_reads.pop_front() {
            if read.from == self.id {
                self.reads_dropped.push(read.context);
            } else {
                let term = self.term;
                self.send_with_term(
                    read.from,
                    term,
                    MessageBody::ReadIndexResponse {
                        context: read.context,
                        index: 0,
                    },
                );
            }
        }
    }

    /// The index at which a lease read may be served right now, or `None`
    /// when the lease is not held.
    ///
    /// The lease starts at the tick at which the newest heartbeat round
    /// acknowledged by a quorum was sent, and lasts
    /// [`crate::Config::lease_ticks`] of this replica's ticks: each
    /// acknowledging voter restarted its lease on receipt and, with
    /// check-quorum, refuses votes until it has ticked
    /// `ticks_election_min` times. `Config::lease_ticks` states the exact
    /// condition on tick rates. Never while quiesced (the engine may stop
    /// ticking a quiesced group, which would freeze the lease), and never
    /// again in a term in which a TimeoutNow was sent (its target may
    /// campaign at any time, and voters grant a transfer vote despite
    /// their lease). The caller must still wait until the returned index
    /// is applied.
    pub fn lease_read_index(&self) -> Option<Index> {
        if self.role != Role::Leader
            || !self.config.check_quorum
            || self.quiesced
            || self.lease_revoked
            || self.transfer_target != NO_REPLICA
            || !self.term_committed()
        {
            return None;
        }
        let acked = self.quorum_acked_seq();
        let &(_, sent_tick) = self
            .heartbeat_seq_ticks
            .iter()
            .find(|&&(seq, _)| seq == acked)?;
        let lease_ticks = u64::from(self.config.lease_ticks());
        (self.tick_now < sent_tick + lease_ticks).then_some(self.log.committed)
    }
}
