//! Chunked snapshot transfer scheduler.
//!
//! A Raft leader whose follower is too far behind sends it a snapshot of the
//! range. This module moves that snapshot between nodes over the
//! low-priority [`SnapshotLane`](crate::SnapshotLane) of the transport:
//! bounded in concurrency, bandwidth and memory, verified end to end, staged
//! on the receiver's disk, never held whole in memory. It does not know
//! where snapshot data comes from or what it means: the engine adapts the
//! storage crate to [`SnapshotSource`] (sending side) and [`SnapshotSink`]
//! (receiving side), and reports the outcome of [`SnapshotService::send`]
//! to raftgroup's `report_snapshot`.
//!
//! # Protocol
//!
//! See [`frame`] for the wire format. In short: the sender *reserves* a
//! receive slot (range, index, term, size hint); the receiver grants it or
//! refuses (no free slot, a transfer of the range from another node in
//! progress, too large, or **stale**: it already has this index or a newer
//! one, per [`SnapshotSink::index_known`]). Only after the grant does the
//! sender read the source: chunk 0 is the source's header, then the data
//! chunks, each lz4-compressed (left raw if that does not shrink it) with a
//! CRC32C. The receiver verifies and appends each chunk to its staging file
//! and acknowledges it; the sender keeps at most `window_chunks`
//! unacknowledged. A final frame carries the chunk count, byte count and a
//! CRC32C chained over all uncompressed chunks; the receiver checks it,
//! fsyncs, hands a [`StagedSnapshot`] to the engine and answers `Done`, or
//! removes the file and answers `Failed(reason)`.
//!
//! # Defaults and why
//!
//! | setting | default | why |
//! | --- | --- | --- |
//! | `chunk_bytes_max` | 1 MiB | big enough that the per-chunk costs (frame, CRC, ack, fsync-free append) vanish, small enough that a heartbeat waits at most ~8 ms behind one chunk on a 1 Gbit link |
//! | `sends_concurrent_max` | 2 | one slow follower must not block every other; more than two only splits the same bandwidth and multiplies the RocksDB snapshots pinned open on the leader. A third `send` **waits** for a slot (it holds nothing meanwhile) rather than failing, because the engine already decided the follower needs it |
//! | `receives_concurrent_max` | 2 | bounds staging disk use to two snapshots and the apply work landing at once; a slot stays taken until the engine drops the [`StagedSnapshot`]. A reservation beyond it is **refused** (the sender fails fast, reads nothing; Raft retries later) |
//! | `send_bytes_per_sec_max` | 32 MiB/s | ≈ 268 Mbit/s: a quarter of a 1 Gbit link for all snapshot sends of the node together, leaving three quarters to Raft traffic and clients; a typical 256 MiB range ships in 8 s. The same default as CockroachDB's rebalance snapshot rate |
//! | `window_chunks` | 4 | 4 MiB in flight covers the bandwidth-delay product at 32 MiB/s up to a ~120 ms round trip, and bounds the receiver's queue per transfer |
//! | `timeout_idle` | 30 s | far above the ≤ 62 ms a chunk waits for the bucket with two sends sharing it, yet frees a slot of a vanished peer in reasonable time |
//! | `snapshot_bytes_max` | 64 GiB | an absurd-size guard, not a capacity plan: ranges split at a few hundred MiB |
//!
//! # Memory bound
//!
//! Every buffer is registered in the node's [`BufferGauge`]. A send holds at
//! most one raw chunk and its encoded frame (≤ 2 × `chunk_bytes_max`); a
//! receive queues at most `window_chunks` + 2 frames plus one chunk being
//! decompressed (≤ (`window_chunks` + 3) × `chunk_bytes_max`). With the
//! defaults a node holds at most 2 × 2 MiB + 2 × 7 MiB = 18 MiB of snapshot
//! data, whatever the snapshot sizes. One transfer between two nodes over
//! the in-memory test lane stays under (`window_chunks` + 3) ×
//! `chunk_bytes_max` + 64 KiB = 7 MiB + 64 KiB for both ends together,
//! because the unacknowledged frames (in the lane or the receiver's queue)
//! never exceed the window.
//!
//! # Failure and cleanup
//!
//! Any failure removes the staging file at once: a bad chunk CRC, a gap in
//! the sequence, a wrong total, a sender exceeding its window, a cancelled
//! or dropped send (it sends `Cancel`), the receiver's idle timeout, the
//! [`SnapshotService`] being dropped. Files left by a crash are removed by
//! [`SnapshotService::start`]. A failed transfer is never resumed: the
//! engine reports the failure to Raft, which asks for a snapshot again —
//! usually a newer one, so resuming the old stream would be wasted anyway.
//!
//! # Time
//!
//! Rates and timeouts run on `tokio::time`: tests pause the tokio clock and
//! measure in virtual time.
//!
//! # Wiring (what the engine does)
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use flotilla_router::snapshot::*;
//! # async fn wiring(lane: Arc<dyn flotilla_router::SnapshotLane>, sink: Arc<dyn SnapshotSink>,
//! #                 source: impl SnapshotSource) -> Result<(), SnapshotError> {
//! let service = Arc::new(SnapshotService::start(SnapshotConfig::new("/data/staging"), lane, sink)?);
//! // In InboundHandler::on_snapshot_frame(from, frame):
//! //     service.on_frame(from, frame);
//! // When raftgroup asks to send a snapshot to a follower:
//! let request = SnapshotRequest { to: 2, range_id: 7, index: 1000, term: 3, size_hint_bytes: 64 << 20 };
//! let outcome = service.send(request, source).await;
//! // group.report_snapshot(follower_replica, outcome.is_ok());
//! # let _ = outcome; Ok(()) }
//! ```

mod buffers;
mod chunk;
mod config;
mod error;
pub mod frame;
mod receiver;
mod sender;
mod service;
mod staging;
pub mod testing;
mod token_bucket;

use std::time::Duration;

use bytes::Bytes;

pub use buffers::{BufferGauge, Held};
pub use chunk::{WholeChecksum, WireChunk, CHUNK_RAW_BYTES_LIMIT};
pub use config::{SnapshotConfig, CHUNK_BYTES_MAX_DEFAULT, SEND_BYTES_PER_SEC_MAX_DEFAULT};
pub use error::{ChunkError, FailReason, FrameError, RefuseReason, SnapshotError};
pub use service::SnapshotService;
pub use staging::{StagedMeta, StagedReader, StagedSnapshot, STAGING_SUFFIX};
pub use token_bucket::TokenBucket;

use crate::{NodeId, RangeId};

/// Error of a [`SnapshotSource`] or of the engine refusing a staged snapshot.
pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

/// The data of one snapshot, produced on demand (the engine implements it
/// over a RocksDB point-in-time snapshot of the range). Calls may block on
/// disk: the sender makes them on a blocking thread, one at a time, and only
/// after the receiver granted a slot.
///
/// ```
/// use bytes::Bytes;
/// use flotilla_router::snapshot::{SnapshotSource, SourceError};
/// struct InMemory { header: Bytes, chunks: std::vec::IntoIter<Bytes> }
/// impl SnapshotSource for InMemory {
///     fn header(&mut self) -> Result<Bytes, SourceError> { Ok(self.header.clone()) }
///     fn next_chunk(&mut self) -> Result<Option<Bytes>, SourceError> { Ok(self.chunks.next()) }
/// }
/// ```
pub trait SnapshotSource: Send + 'static {
    /// The snapshot's header (range descriptor, applied index, ...), called
    /// once, first. At most [`CHUNK_RAW_BYTES_LIMIT`] bytes.
    fn header(&mut self) -> Result<Bytes, SourceError>;
    /// The next chunk of data, `None` at the end. Chunks above
    /// `chunk_bytes_max` are split on the wire.
    fn next_chunk(&mut self) -> Result<Option<Bytes>, SourceError>;
}

/// The receiving node's engine, as seen by the receiver.
pub trait SnapshotSink: Send + Sync + 'static {
    /// The index this node already has for the range — applied, or of a
    /// snapshot staged and not yet applied — or `None` if it has no replica
    /// data. A reservation with `index <= known` is refused as stale. Called
    /// from the transport's reader task: must be cheap and never block.
    fn index_known(&self, range_id: RangeId) -> Option<u64>;
    /// A verified staged snapshot. Hand it to the range's mailbox and
    /// return; the sender gets `Done` once this returns `Ok`, `Failed` on
    /// `Err` (the snapshot is then dropped and its file removed).
    fn on_staged(&self, snapshot: StagedSnapshot) -> Result<(), SourceError>;
}

/// What to send where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotRequest {
    pub to: NodeId,
    pub range_id: RangeId,
    /// Raft index and term the snapshot was taken at.
    pub index: u64,
    pub term: u64,
    /// Expected size; lets the receiver refuse absurd sizes before staging.
    pub size_hint_bytes: u64,
}

/// A successful send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendReport {
    pub transfer_id: u64,
    /// Chunks sent, the header included.
    pub chunk_count: u64,
    /// Uncompressed bytes, the header included.
    pub raw_bytes: u64,
    /// Frame bytes put on the lane for chunks (after compression).
    pub wire_bytes: u64,
    /// From getting a send slot to the receiver's `Done`.
    pub duration: Duration,
}

/// Names of the metrics this module records.
pub mod metric {
    /// Counter: chunk frame bytes sent.
    pub const BYTES_SENT: &str = "flotilla_snapshot_bytes_sent_total";
    /// Counter: chunk payload bytes received and staged.
    pub const BYTES_RECEIVED: &str = "flotilla_snapshot_bytes_received_total";
    /// Histogram (label `outcome`): duration of sends, seconds.
    pub const SEND_SECONDS: &str = "flotilla_snapshot_send_seconds";
    /// Histogram (label `outcome`): duration of receives, seconds.
    pub const RECEIVE_SECONDS: &str = "flotilla_snapshot_receive_seconds";
    /// Gauge: sends in progress.
    pub const SENDS_ACTIVE: &str = "flotilla_snapshot_sends_active";
    /// Gauge: receives in progress.
    pub const RECEIVES_ACTIVE: &str = "flotilla_snapshot_receives_active";
    /// Counter (labels `side`, `reason`): refused reservations.
    pub const REFUSALS: &str = "flotilla_snapshot_refusals_total";
    /// Counter: lane frames that did not decode.
    pub const FRAMES_REJECTED: &str = "flotilla_snapshot_frames_rejected_total";
}
