//! The engine's errors: "retry elsewhere or later" (not leader, epoch
//! changed, busy, timeout), "your request is wrong" (bad input, cross-range
//! batch) and "the node is broken" (storage).

use bytes::Bytes;
use flotilla_router::range::{RangeDescriptor, ReplicaDescriptor};
use flotilla_router::RangeId;

/// What went wrong with a request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// Another replica leads the range; retry there.
    #[error("range {range_id}: not the leader here (leader: {leader:?})")]
    NotLeader {
        range_id: RangeId,
        leader: Option<ReplicaDescriptor>,
    },
    /// The range changed (split, merge) while the request was in flight.
    #[error("range {range_id}: descriptor changed, retry with the current ones")]
    EpochMismatch {
        range_id: RangeId,
        current: Vec<RangeDescriptor>,
    },
    /// No range is known for the key or id.
    #[error("range not found: {0}")]
    RangeNotFound(String),
    /// Too many requests in flight; back off and retry.
    #[error("busy: {0}")]
    Busy(String),
    /// The request did not complete in time; it may or may not have been
    /// applied (indeterminate).
    #[error("request timed out after {0} ms (outcome unknown)")]
    Timeout(u64),
    /// The request itself is invalid.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A write batch spans more than one range.
    #[error(
        "write batch spans ranges {first} and {second}; batches are atomic only within one range"
    )]
    CrossRangeBatch { first: RangeId, second: RangeId },
    /// An admin command was refused.
    #[error("admin command refused: {0}")]
    AdminRefused(String),
    /// The engine is closed.
    #[error("engine is closed")]
    Closed,
    /// The configuration is invalid.
    #[error("invalid config `{field}`: {reason}")]
    Config { field: &'static str, reason: String },
    /// Storage failed; the node cannot go on safely.
    #[error("storage failure: {0}")]
    Storage(String),
}

impl Error {
    /// True when the same request may succeed later or elsewhere.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::NotLeader { .. }
                | Error::EpochMismatch { .. }
                | Error::Busy(_)
                | Error::Timeout(_)
        )
    }

    pub(crate) fn key_too_large(what: &str, len: usize, max: usize) -> Error {
        Error::InvalidRequest(format!(
            "{what} of {len} bytes exceeds the limit of {max} bytes"
        ))
    }
}

impl From<flotilla_storage::state::StateError> for Error {
    fn from(e: flotilla_storage::state::StateError) -> Self {
        Error::Storage(e.to_string())
    }
}

impl From<flotilla_storage::wal::WalError> for Error {
    fn from(e: flotilla_storage::wal::WalError) -> Self {
        Error::Storage(e.to_string())
    }
}

impl From<flotilla_raftgroup::Error> for Error {
    fn from(e: flotilla_raftgroup::Error) -> Self {
        match e {
            flotilla_raftgroup::Error::Busy { .. } => Error::Busy(e.to_string()),
            flotilla_raftgroup::Error::Config(c) => Error::Config {
                field: c.field,
                reason: c.reason,
            },
            other if other.is_retryable() => Error::Busy(other.to_string()),
            other => Error::Storage(other.to_string()),
        }
    }
}

/// A key for error messages: printable, bounded.
pub(crate) fn show_key(key: &Bytes) -> String {
    let shown: Vec<u8> = key.iter().take(64).copied().collect();
    format!("{:?}", String::from_utf8_lossy(&shown))
}
