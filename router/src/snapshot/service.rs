//! The per-node entry point: one sender half, one receiver half, one lane.

use std::sync::Arc;

use bytes::Bytes;

use super::buffers::BufferGauge;
use super::config::SnapshotConfig;
use super::error::SnapshotError;
use super::frame::Frame;
use super::receiver::Receiver;
use super::sender::Sender;
use super::staging::Staging;
use super::{metric, SendReport, SnapshotRequest, SnapshotSink, SnapshotSource};
use crate::{NodeId, SnapshotLane};

/// The snapshot scheduler of one node: sends snapshots to peers and
/// receives theirs, over one [`SnapshotLane`].
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use flotilla_router::snapshot::{testing::*, *};
///
/// let network = MemoryNetwork::new(1);
/// let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
/// let sink_b = RecordingSink::new();
/// let a = Arc::new(SnapshotService::start(SnapshotConfig::new(dir_a.path()), network.lane(1), RecordingSink::new()).unwrap());
/// let b = Arc::new(SnapshotService::start(SnapshotConfig::new(dir_b.path()), network.lane(2), sink_b.clone()).unwrap());
/// network.attach(1, &a);
/// network.attach(2, &b);
///
/// let source = VecSource::new(b"header".to_vec(), vec![vec![1u8; 10_000], vec![2u8; 20_000]]);
/// let request = SnapshotRequest { to: 2, range_id: 7, index: 10, term: 2, size_hint_bytes: 30_000 };
/// let report = a.send(request, source).await.unwrap();
/// assert_eq!(report.chunk_count, 3);
/// let staged = sink_b.take().pop().unwrap();
/// let mut reader = staged.reader().unwrap();
/// assert_eq!(&reader.header().unwrap()[..], b"header");
/// assert_eq!(reader.next_chunk().unwrap().unwrap().len(), 10_000);
/// # });
/// ```
pub struct SnapshotService {
    sender: Sender,
    receiver: Receiver,
    gauge: Arc<BufferGauge>,
    stale_files_removed: usize,
}

impl SnapshotService {
    /// Validates the config, removes stale staging files (blocking I/O, at
    /// startup only) and starts. Must be called inside a tokio runtime: the
    /// receiving transfers run as tasks on it.
    pub fn start(
        config: SnapshotConfig,
        lane: Arc<dyn SnapshotLane>,
        sink: Arc<dyn SnapshotSink>,
    ) -> Result<SnapshotService, SnapshotError> {
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            SnapshotError::Config("SnapshotService::start must run inside a tokio runtime".into())
        })?;
        let (staging, stale_files_removed) = Staging::open(&config.staging_dir)?;
        if stale_files_removed > 0 {
            tracing::info!(dir = %config.staging_dir.display(), files = stale_files_removed, "removed stale snapshot staging files");
        }
        let config = Arc::new(config);
        let gauge = BufferGauge::new();
        Ok(SnapshotService {
            sender: Sender::new(Arc::clone(&config), Arc::clone(&lane), Arc::clone(&gauge)),
            receiver: Receiver::new(config, lane, sink, staging, Arc::clone(&gauge), runtime),
            gauge,
            stale_files_removed,
        })
    }

    /// Sends one snapshot and waits for the receiver's verdict. Waits first
    /// for one of the node's `sends_concurrent_max` send slots. Dropping the
    /// future cancels the transfer (the receiver is told to drop its
    /// staging file). Report the outcome to raftgroup's `report_snapshot`.
    pub async fn send<S: SnapshotSource>(
        &self,
        request: SnapshotRequest,
        source: S,
    ) -> Result<SendReport, SnapshotError> {
        self.sender.send(request, source).await
    }

    /// Feeds one lane frame from `from` (call it from
    /// `InboundHandler::on_snapshot_frame`). Never blocks and never panics;
    /// undecodable frames are counted and dropped.
    pub fn on_frame(&self, from: NodeId, frame: Bytes) {
        let wire_len = frame.len();
        match Frame::decode(&frame) {
            Ok(decoded) if decoded.is_to_receiver() => {
                self.receiver.deliver(from, decoded, wire_len)
            }
            Ok(decoded) => self.sender.deliver(from, decoded),
            Err(error) => {
                metrics::counter!(metric::FRAMES_REJECTED).increment(1);
                tracing::debug!(from, %error, "undecodable snapshot frame dropped");
            }
        }
    }

    /// Bytes of snapshot data held in memory by this node, now and at peak.
    pub fn buffers(&self) -> &Arc<BufferGauge> {
        &self.gauge
    }

    /// Sends holding a slot now.
    pub fn sends_active(&self) -> usize {
        self.sender.sends_active()
    }

    /// Receive slots taken now (in progress or staged and not yet dropped).
    pub fn receives_active(&self) -> usize {
        self.receiver.receives_active()
    }

    /// Stale staging files [`SnapshotService::start`] removed.
    pub fn stale_files_removed(&self) -> usize {
        self.stale_files_removed
    }
}
