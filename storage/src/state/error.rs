//! Errors of the state machine store.
//!
//! Three families, so callers can react without parsing strings:
//! - the caller broke a rule of the API (`MissingAppliedIndex`,
//!   `AppliedIndexRegression`, `TruncatedBeyondApplied`, `RangeBusy`,
//!   `StaleSnapshot`, `InvalidConfig`, `SnapshotProtocol`, `NeedsSnapshot`,
//!   `RangeNotFound`): a bug or a race in the engine, nothing on disk is
//!   damaged;
//! - bytes that came from disk or the network are wrong (`Corrupt`,
//!   `IdentityMismatch`): refuse, never guess;
//! - the storage itself failed (`RocksDb`, `Io`): the node is broken.

use super::RangeId;
use flotilla_raftgroup::Index;
use std::path::PathBuf;

/// Result alias of this module.
pub type Result<T, E = StateError> = std::result::Result<T, E>;

/// Everything that can go wrong in the state machine store.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A RocksDB call failed. `op` says which one, `path` which store.
    #[error("rocksdb {op} failed for store {path}: {source}")]
    RocksDb {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: rocksdb::Error,
    },

    /// A filesystem call outside RocksDB failed.
    #[error("{op} failed for {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The directory was initialised by another node or cluster. Opening it
    /// anyway would mix two replicas' states: the operator must point the
    /// node at the right directory or wipe this one on purpose.
    #[error(
        "store {path} belongs to cluster {found_cluster_id} node {found_node_id}, \
         refusing to use it as cluster {expected_cluster_id} node {expected_node_id}"
    )]
    IdentityMismatch {
        path: PathBuf,
        found_cluster_id: u64,
        found_node_id: u64,
        expected_cluster_id: u64,
        expected_node_id: u64,
    },

    /// Bytes read from disk or received from a peer failed validation
    /// (length, magic, version or checksum).
    #[error("corrupt {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },

    /// An apply batch writes data for a range but does not move its applied
    /// index: after a crash the same commands would be applied twice.
    #[error("range {range_id}: apply batch writes data but sets no applied index")]
    MissingAppliedIndex { range_id: RangeId },

    /// An apply batch would not move the applied index forward.
    #[error("range {range_id}: applied index would go from {current} to {proposed}")]
    AppliedIndexRegression {
        range_id: RangeId,
        current: Index,
        proposed: Index,
    },

    /// The range lost its data in an interrupted snapshot apply and must
    /// receive a full snapshot before any log entry can be applied.
    #[error("range {range_id} needs a snapshot (interrupted snapshot to index {index})")]
    NeedsSnapshot { range_id: RangeId, index: Index },

    /// The Raft log would be truncated past what the state machine applied.
    #[error(
        "range {range_id}: cannot truncate the log to {index}, applied index is only {applied}"
    )]
    TruncatedBeyondApplied {
        range_id: RangeId,
        index: Index,
        applied: Index,
    },

    /// A snapshot is being applied to the range right now.
    #[error("range {range_id} is busy applying a snapshot")]
    RangeBusy { range_id: RangeId },

    /// The range has no applied state (never created, or destroyed).
    #[error("range {range_id} not found in the state store")]
    RangeNotFound { range_id: RangeId },

    /// A received snapshot is not newer than what the range already applied.
    #[error("range {range_id}: snapshot at index {snapshot_index} is not newer than applied index {applied_index}")]
    StaleSnapshot {
        range_id: RangeId,
        snapshot_index: Index,
        applied_index: Index,
    },

    /// A snapshot stream broke its protocol: chunk out of order, key outside
    /// the range, trailer disagreeing with what was received.
    #[error("range {range_id}: snapshot stream rejected: {detail}")]
    SnapshotProtocol { range_id: RangeId, detail: String },

    /// A configuration value is impossible.
    #[error("invalid state store config: {0}")]
    InvalidConfig(String),
}

impl StateError {
    /// Is this damage to bytes (disk or wire) rather than a usage error or
    /// an I/O failure? A corrupt snapshot chunk can be re-requested; corrupt
    /// metadata on disk needs an operator.
    pub fn is_corruption(&self) -> bool {
        matches!(self, StateError::Corrupt { .. })
    }

    pub(crate) fn corrupt(what: &'static str, detail: impl Into<String>) -> Self {
        StateError::Corrupt {
            what,
            detail: detail.into(),
        }
    }
}
