//! Typed errors of the snapshot scheduler.
//!
//! They separate "try again later / elsewhere" (refusals, timeouts, a peer
//! that went away) from "the data is bad" (checksum or protocol violations)
//! and "this node is broken" (local disk errors), so the engine can decide
//! whether to report the snapshot as failed and let Raft retry, or to alert.

use crate::{LaneError, NodeId, RangeId};

/// Why a decoded lane frame was rejected. Decoding never panics; every
/// malformed input maps to one of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame is {len} bytes, shorter than its fixed fields")]
    Truncated { len: usize },
    #[error("unsupported snapshot frame version {0}")]
    Version(u8),
    #[error("unknown snapshot frame kind {0}")]
    Kind(u8),
    #[error("frame of kind {kind} has {extra} trailing bytes")]
    Trailing { kind: u8, extra: usize },
    #[error("unknown reason code {0}")]
    Reason(u8),
    #[error("chunk declares {raw_len} raw bytes, above the protocol limit {limit}")]
    ChunkTooLarge { raw_len: u32, limit: u32 },
    #[error("chunk flags {0:#x} are not understood")]
    Flags(u8),
}

/// Why a chunk failed verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("chunk checksum mismatch (expected {expected:#010x}, computed {computed:#010x})")]
    Checksum { expected: u32, computed: u32 },
    #[error("chunk does not decompress to its declared {raw_len} bytes")]
    Decompress { raw_len: u32 },
}

/// Why a receiver refused to reserve a slot. Travels on the wire as one byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseReason {
    /// Every receive slot of the node is taken; try again later.
    NoSlot,
    /// The receiver already has this index or a newer one for the range.
    Stale,
    /// Another node is already sending a snapshot of this range here.
    Busy,
    /// The announced size is above the receiver's `snapshot_bytes_max`.
    TooLarge,
    /// The receiver could not create its staging file.
    Staging,
}

/// Why a transfer failed on the receiving side (travels as one byte too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailReason {
    /// A chunk or the whole-snapshot checksum did not verify.
    Corrupt,
    /// Frames arrived out of order, beyond the credit window, or unannounced.
    Protocol,
    /// No frame arrived for the idle timeout.
    Timeout,
    /// The receiver's disk failed.
    Disk,
    /// The engine refused the staged snapshot.
    Rejected,
    /// The sender cancelled, or the receiver is shutting down.
    Cancelled,
    /// The receiver does not know this transfer (e.g. it restarted).
    Unknown,
    /// More bytes than `snapshot_bytes_max`.
    TooLarge,
}

/// Error of a send or receive. `Refused`, `Timeout` and `Lane` mean "retry
/// later"; `Remote(Corrupt)` and `Source` mean the data path is bad.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("node {to} refused the snapshot of range {range_id}: {reason:?}")]
    Refused {
        to: NodeId,
        range_id: RangeId,
        reason: RefuseReason,
        index_known: u64,
    },
    #[error("node {to} failed the snapshot of range {range_id}: {reason:?}")]
    Remote {
        to: NodeId,
        range_id: RangeId,
        reason: FailReason,
    },
    #[error("no answer from node {to} for range {range_id} within {waited_ms} ms while {phase}")]
    Timeout {
        to: NodeId,
        range_id: RangeId,
        waited_ms: u64,
        phase: &'static str,
    },
    #[error("snapshot lane: {0}")]
    Lane(#[from] LaneError),
    #[error("snapshot source of range {range_id} failed: {source}")]
    Source {
        range_id: RangeId,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("staging I/O on {path}: {source}")]
    Staging {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("staged snapshot file {path} is corrupt: {detail}")]
    StagedCorrupt {
        path: std::path::PathBuf,
        detail: String,
    },
    #[error("invalid snapshot config: {0}")]
    Config(String),
    #[error("the snapshot service is shut down")]
    Shutdown,
}
