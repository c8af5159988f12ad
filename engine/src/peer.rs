//! One local replica of a range: its Raft group, its persisted metadata,
//! and the requests waiting on it (proposals until applied, reads until
//! confirmed and applied).

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use flotilla_raftgroup::{Index, RaftGroup, ReplicaId, Term};
use flotilla_router::range::ReplicaDescriptor;
use flotilla_storage::wal::GroupLog;
use tokio::sync::oneshot;

use crate::error::Error;
use crate::meta::RangeMeta;

/// What a caller is told when its command is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Done,
    /// A split created this range.
    Split {
        new_range_id: u64,
    },
}

pub(crate) type Reply = oneshot::Sender<Result<Outcome, Error>>;

/// A proposal waiting for its entry to apply.
pub(crate) struct Proposal {
    pub index: Index,
    pub term: Term,
    pub reply: Reply,
    /// For the commit-latency histogram.
    pub proposed_at: Instant,
}

impl Proposal {
    pub(crate) fn new(index: Index, term: Term, reply: Reply) -> Proposal {
        Proposal {
            index,
            term,
            reply,
            proposed_at: Instant::now(),
        }
    }
}

/// When the cycle that applied a batch of entries saw them committed and
/// when their state-store write finished.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ApplyTiming {
    pub committed_at: Instant,
    pub applied_at: Instant,
}

/// What to do once a read is safe.
pub(crate) enum ReadWaiter {
    Get {
        key: Bytes,
        reply: oneshot::Sender<Result<Option<Bytes>, Error>>,
    },
    /// One range's share of a multi-range scan job.
    Scan {
        job: std::sync::Arc<crate::node::ScanJob>,
    },
}

pub(crate) struct Peer {
    pub meta: RangeMeta,
    /// This node's replica of the range.
    #[allow(dead_code)] // used by membership changes (admin issue)
    pub replica_id: ReplicaId,
    pub group: RaftGroup<GroupLog>,
    pub proposals: VecDeque<Proposal>,
    /// Reads waiting for their ReadIndex answer, by context id.
    pub reads_unconfirmed: HashMap<u64, ReadWaiter>,
    /// Reads confirmed at an index, waiting for apply to reach it.
    pub reads_confirmed: Vec<(Index, ReadWaiter)>,
    pub applied: (Index, Term),
    pub compacted_at: Instant,
    /// The leader the last Ready reported (to count leader changes).
    pub leader_seen: ReplicaId,
}

impl Peer {
    pub(crate) fn range_id(&self) -> u64 {
        self.meta.desc.id
    }

    /// The leader as a descriptor, for `NotLeader` hints.
    pub(crate) fn leader_hint(&self) -> Option<ReplicaDescriptor> {
        self.meta.desc.replica(self.group.leader()).copied()
    }

    pub(crate) fn not_leader(&self) -> Error {
        Error::NotLeader {
            range_id: self.range_id(),
            leader: self.leader_hint(),
        }
    }

    /// Resolve proposals up to the applied entry (`index`, `term`) with
    /// `result`; earlier ones whose entries were replaced get "not leader".
    pub(crate) fn resolve(
        &mut self,
        index: Index,
        term: Term,
        result: Result<Outcome, Error>,
        timing: ApplyTiming,
    ) {
        while let Some(front) = self.proposals.front() {
            if front.index > index {
                return;
            }
            let Some(proposal) = self.proposals.pop_front() else {
                return;
            };
            let outcome = if proposal.index == index && proposal.term == term {
                // The commit is seen by the cycle after the quorum's acks,
                // so this is an upper bound by at most one cycle.
                let commit = timing
                    .committed_at
                    .saturating_duration_since(proposal.proposed_at);
                metrics::histogram!("flotilla_raft_commit_seconds").record(commit.as_secs_f64());
                result.clone()
            } else {
                // Its entry was overwritten by another leader's: definitely
                // not applied, safe to retry.
                Err(self.not_leader())
            };
            let _ = proposal.reply.send(outcome);
        }
    }

    /// Fail everything waiting (the range went away or the node stops).
    pub(crate) fn fail_all(&mut self, error: &Error) {
        for proposal in self.proposals.drain(..) {
            let _ = proposal.reply.send(Err(error.clone()));
        }
        let waiters = self
            .reads_unconfirmed
            .drain()
            .map(|(_, w)| w)
            .chain(self.reads_confirmed.drain(..).map(|(_, w)| w));
        for waiter in waiters {
            match waiter {
                ReadWaiter::Get { reply, .. } => {
                    let _ = reply.send(Err(error.clone()));
                }
                ReadWaiter::Scan { job } => job.fail(error.clone()),
            }
        }
    }
}
