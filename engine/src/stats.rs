//! Counters of a node's work, for the demo, tests and status pages (the
//! same numbers also go to the `metrics` registry).

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
    pub uptime_ms: u64,
}
