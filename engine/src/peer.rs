//! One local replica of a range: its Raft group, its persisted metadata,
//! and the requests waiting on it (proposals until applied, reads until
//! confirmed and applied).

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use flotilla_raftgroup::{EntryKind, Index, RaftGroup, ReplicaId, Term};
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
    /// Committed entries this replica cannot apply yet: from a
    /// `CommitMerge` whose local source has not applied its freeze, on.
    /// Raft is not told they are applied (`advance_apply_to` stops at
    /// `applied`), so it neither quiesces nor takes a new configuration
    /// change meanwhile.
    pub held: Vec<flotilla_raftgroup::Entry>,
    /// Why the held `CommitMerge` can never apply here, once known (the
    /// alarm is raised once per hold, not once per cycle).
    pub stuck: Option<String>,
}

/// What the log holds past the applied index: proposed (or committed)
/// and not applied yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Unapplied {
    pub conf_change: bool,
    pub prepare_merge: bool,
}

impl Peer {
    /// Look through the entries past `applied` (admin checks only: it
    /// reads the log).
    pub(crate) fn unapplied(&self) -> Result<Unapplied, Error> {
        let from = self.applied.0 + 1;
        let to = self.group.last_index() + 1;
        let mut seen = Unapplied::default();
        if from >= to {
            return Ok(seen);
        }
        let entries = self.group.log_entries(from, to).map_err(|e| {
            Error::Busy(format!(
                "range {}: cannot read its unapplied log entries: {e}",
                self.range_id()
            ))
        })?;
        for entry in entries {
            match entry.kind {
                EntryKind::ConfChange => seen.conf_change = true,
                EntryKind::Normal => {
                    seen.prepare_merge |= crate::command::is_prepare_merge(&entry.data)
                }
            }
        }
        Ok(seen)
    }

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
