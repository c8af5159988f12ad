//! Counters of a node's work, for the demo, tests and status pages (the
//! same numbers also go to the `metrics` registry).

use flotilla_raftgroup::{Ready, ReplicaId, Role, NO_REPLICA};

/// What a node has done since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Write proposals accepted.
    pub proposals: u64,
    /// Log entries applied.
    pub entries_applied: u64,
    /// WAL write batches issued by the raft loop (one per busy cycle).
    pub wal_writes: u64,
    /// fsyncs the WAL made (group commit merges concurrent writers).
    pub wal_fsyncs: u64,
    /// Batches the WAL wrote (raft loop, bootstrap, compaction marks).
    pub wal_batches: u64,
    pub reads: u64,
    pub scans: u64,
    pub splits: u64,
    pub merges: u64,
    pub compactions: u64,
    pub snapshots_sent: u64,
    pub snapshots_applied: u64,
    pub ranges: u64,
    /// Ranges whose group hibernates (no ticks, no heartbeats).
    pub ranges_hibernating: u64,
    /// Raft messages for ranges this node does not hold (dropped).
    pub messages_dropped_unknown_range: u64,
    /// Appends for unknown ranges answered so the leader sends a snapshot
    /// (how a newly added replica is created).
    pub unknown_range_probes_answered: u64,
    /// Membership changes applied (on this node's replicas).
    pub membership_changes: u64,
    /// Replicas removed from this node and destroyed.
    pub replicas_destroyed: u64,
    /// Pre-vote rounds this node's replicas started.
    pub pre_votes: u64,
    /// Real elections started (each a new term) and won.
    pub elections: u64,
    pub elections_won: u64,
    /// Times a replica here learned of a new leader (itself included).
    pub leader_changes: u64,
    /// Ranges handed from one raft loop to another (a merge needs both
    /// ranges in one loop).
    pub handovers: u64,
    /// Splits and merges the automatic checker started here.
    pub auto_splits: u64,
    pub auto_merges: u64,
    /// Times a range had to hold a `CommitMerge` it can never apply here
    /// (its local source replica is missing or not at the freeze): an
    /// alarm, the range stops applying rather than absorb a span without
    /// its data.
    pub merges_stuck: u64,
    pub uptime_ms: u64,
}

impl NodeStats {
    /// Add another raft loop's counts (the WAL's are node-wide already).
    pub(crate) fn absorb(&mut self, other: &NodeStats) {
        let NodeStats {
            proposals,
            entries_applied,
            wal_writes,
            wal_fsyncs,
            wal_batches,
            reads,
            scans,
            splits,
            merges,
            compactions,
            snapshots_sent,
            snapshots_applied,
            ranges,
            ranges_hibernating,
            messages_dropped_unknown_range,
            unknown_range_probes_answered,
            membership_changes,
            replicas_destroyed,
            pre_votes,
            elections,
            elections_won,
            leader_changes,
            handovers,
            auto_splits,
            auto_merges,
            merges_stuck,
            uptime_ms,
        } = other;
        self.proposals += proposals;
        self.entries_applied += entries_applied;
        self.wal_writes += wal_writes;
        self.wal_fsyncs = self.wal_fsyncs.max(*wal_fsyncs);
        self.wal_batches = self.wal_batches.max(*wal_batches);
        self.reads += reads;
        self.scans += scans;
        self.splits += splits;
        self.merges += merges;
        self.compactions += compactions;
        self.snapshots_sent += snapshots_sent;
        self.snapshots_applied += snapshots_applied;
        self.ranges += ranges;
        self.ranges_hibernating += ranges_hibernating;
        self.messages_dropped_unknown_range += messages_dropped_unknown_range;
        self.unknown_range_probes_answered += unknown_range_probes_answered;
        self.membership_changes += membership_changes;
        self.replicas_destroyed += replicas_destroyed;
        self.pre_votes += pre_votes;
        self.elections += elections;
        self.elections_won += elections_won;
        self.leader_changes += leader_changes;
        self.handovers += handovers;
        self.auto_splits += auto_splits;
        self.auto_merges += auto_merges;
        self.merges_stuck += merges_stuck;
        self.uptime_ms = self.uptime_ms.max(*uptime_ms);
    }

    /// Count a group's elections and log its role changes with the
    /// range, term and leader (the node id comes from the thread's span).
    pub(crate) fn observe_ready(
        &mut self,
        range_id: u64,
        ready: &Ready,
        previous_leader: ReplicaId,
    ) {
        let events = ready.elections;
        self.pre_votes += u64::from(events.pre_campaigns);
        self.elections += u64::from(events.campaigns);
        self.elections_won += u64::from(events.won);
        let Some(soft) = ready.soft_state else {
            return;
        };
        if soft.leader != previous_leader && soft.leader != NO_REPLICA {
            self.leader_changes += 1;
        }
        match soft.role {
            Role::Leader => {
                tracing::info!(range_id, term = soft.term, "became leader")
            }
            Role::Candidate => {
                tracing::debug!(range_id, term = soft.term, "campaigning")
            }
            Role::PreCandidate => {
                tracing::debug!(range_id, term = soft.term, "pre-vote round")
            }
            Role::Follower if soft.leader != previous_leader => {
                tracing::debug!(
                    range_id,
                    term = soft.term,
                    leader = soft.leader,
                    "follows a new leader"
                )
            }
            Role::Follower => {}
        }
    }
}
