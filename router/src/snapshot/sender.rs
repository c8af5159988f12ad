//! The sending side: reserve, then stream chunks under the credit window
//! and the node-wide token bucket, then finish and wait for the verdict.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::{timeout, Instant};

use super::buffers::{BufferGauge, Held};
use super::chunk::{WholeChecksum, WireChunk, CHUNK_RAW_BYTES_LIMIT};
use super::config::SnapshotConfig;
use super::error::{FailReason, SnapshotError};
use super::frame::Frame;
use super::token_bucket::TokenBucket;
use super::{metric, SendReport, SnapshotRequest, SnapshotSource};
use crate::{NodeId, SnapshotLane};

/// Responses a sending transfer may have queued: a grant, at most
/// `window_chunks` (≤ 64) acks, and a verdict. Anything beyond is dropped
/// (acks are cumulative, so a dropped ack only delays).
const MAILBOX_FRAMES: usize = 64 + 8;

type Mailboxes = Mutex<HashMap<(NodeId, u64), mpsc::Sender<Frame>>>;

pub(crate) struct Sender {
    config: Arc<SnapshotConfig>,
    lane: Arc<dyn SnapshotLane>,
    bucket: TokenBucket,
    slots: Arc<Semaphore>,
    mailboxes: Arc<Mailboxes>,
    next_transfer_id: AtomicU64,
    gauge: Arc<BufferGauge>,
}

impl Sender {
    pub fn new(
        config: Arc<SnapshotConfig>,
        lane: Arc<dyn SnapshotLane>,
        gauge: Arc<BufferGauge>,
    ) -> Sender {
        // Seeded from the wall clock so a restarted sender does not reuse
        // the ids of transfers a receiver may still be holding.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Sender {
            bucket: TokenBucket::new(config.send_bytes_per_sec_max, config.chunk_bytes_max as u64),
            slots: Arc::new(Semaphore::new(config.sends_concurrent_max)),
            config,
            lane,
            mailboxes: Arc::new(Mutex::new(HashMap::new())),
            next_transfer_id: AtomicU64::new(seed | 1),
            gauge,
        }
    }

    pub fn sends_active(&self) -> usize {
        self.config.sends_concurrent_max - self.slots.available_permits()
    }

    /// A response frame from `from` about one of our sends.
    pub fn deliver(&self, from: NodeId, frame: Frame) {
        let key = (from, frame.transfer_id());
        let mailbox = self.mailboxes.lock().get(&key).cloned();
        match mailbox {
            Some(mailbox) => {
                if mailbox.try_send(frame).is_err() {
                    tracing::debug!(
                        from,
                        transfer_id = key.1,
                        "snapshot sender mailbox full; response dropped"
                    );
                }
            }
            None => tracing::debug!(
                from,
                transfer_id = key.1,
                "snapshot response for no active send"
            ),
        }
    }

    pub async fn send<S: SnapshotSource>(
        &self,
        request: SnapshotRequest,
        source: S,
    ) -> Result<SendReport, SnapshotError> {
        // Waits (rather than refuses) for one of the node's send slots: the
        // engine already decided this follower needs a snapshot, and a
        // queued send holds nothing but this future.
        let _slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| SnapshotError::Shutdown)?;
        let active = metrics::gauge!(metric::SENDS_ACTIVE);
        active.increment(1.0);
        let started = Instant::now();
        let transfer_id = self.next_transfer_id.fetch_add(2, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(MAILBOX_FRAMES);
        self.mailboxes.lock().insert((request.to, transfer_id), tx);
        let mut guard = SendGuard {
            mailboxes: Arc::downgrade(&self.mailboxes),
            key: (request.to, transfer_id),
            lane: Arc::clone(&self.lane),
            finished: false,
        };
        let result = self.run(&request, transfer_id, rx, source, started).await;
        // A failure reported by the receiver (or a refusal) needs no cancel;
        // every other failure tells the receiver to drop its staging now
        // instead of at its idle timeout.
        guard.finished = matches!(
            result,
            Ok(_) | Err(SnapshotError::Refused { .. }) | Err(SnapshotError::Remote { .. })
        );
        drop(guard);
        active.decrement(1.0);
        let outcome = match &result {
            Ok(_) => "ok",
            Err(SnapshotError::Refused { .. }) => "refused",
            Err(_) => "failed",
        };
        metrics::histogram!(metric::SEND_SECONDS, "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        match &result {
            Ok(report) => tracing::info!(
                to = request.to,
                range_id = request.range_id,
                index = request.index,
                bytes = report.wire_bytes,
                ms = report.duration.as_millis() as u64,
                "snapshot sent"
            ),
            Err(error) => tracing::warn!(
                to = request.to, range_id = request.range_id, index = request.index, %error, "snapshot send failed"
            ),
        }
        result
    }

    async fn run<S: SnapshotSource>(
        &self,
        request: &SnapshotRequest,
        transfer_id: u64,
        mut rx: mpsc::Receiver<Frame>,
        source: S,
        started: Instant,
    ) -> Result<SendReport, SnapshotError> {
        let to = request.to;
        let reserve = Frame::Reserve {
            transfer_id,
            range_id: request.range_id,
            index: request.index,
            term: request.term,
            size_hint_bytes: request.size_hint_bytes,
        };
        self.lane.send_frame(to, reserve.encode()).await?;

        // Nothing is read from the source before the receiver granted a slot.
        let window = loop {
            match self
                .next_response(&mut rx, request, "waiting for a slot")
                .await?
            {
                Frame::Grant { window_chunks, .. } => break u64::from(window_chunks.clamp(1, 64)),
                Frame::Refuse {
                    reason,
                    index_known,
                    ..
                } => {
                    metrics::counter!(metric::REFUSALS, "side" => "sender", "reason" => format!("{reason:?}"))
                        .increment(1);
                    return Err(SnapshotError::Refused {
                        to,
                        range_id: request.range_id,
                        reason,
                        index_known,
                    });
                }
                Frame::Failed { reason, .. } => return Err(remote(request, reason)),
                _ => {} // stray ack from a confused peer: ignore
            }
        };

        let mut producer = Some(ChunkProducer {
            source,
            leftover: Bytes::new(),
            header_done: false,
            chunk_bytes_max: self.config.chunk_bytes_max,
            whole: WholeChecksum::default(),
            gauge: Arc::clone(&self.gauge),
            range_id: request.range_id,
        });
        let mut seq = 0u64;
        let mut acked = 0u64; // chunks [0, acked) are staged at the receiver
        let mut wire_bytes = 0u64;
        let sent_counter = metrics::counter!(metric::BYTES_SENT);
        loop {
            let Some(mut p) = producer.take() else {
                return Err(SnapshotError::Shutdown);
            };
            let (p, next) = tokio::task::spawn_blocking(move || {
                let next = p.next(transfer_id, seq);
                (p, next)
            })
            .await
            .map_err(|join| SnapshotError::Source {
                range_id: request.range_id,
                source: Box::new(join),
            })?;
            producer = Some(p);
            let Some((frame, held)) = next? else { break };

            // Credit: never more than `window` chunks unacknowledged, so the
            // receiver's queue (and memory) per transfer stays bounded.
            while let Ok(frame) = rx.try_recv() {
                acked = self.on_progress(frame, acked, seq, request)?;
            }
            while seq >= acked + window {
                let frame = self
                    .next_response(&mut rx, request, "waiting for chunk acks")
                    .await?;
                acked = self.on_progress(frame, acked, seq, request)?;
            }
            self.bucket.acquire(frame.len() as u64).await;
            let len = frame.len() as u64;
            // One frame at a time: the lane is held for exactly this frame,
            // so Raft traffic interleaves between chunks.
            self.lane.send_frame(to, frame).await?;
            drop(held);
            wire_bytes += len;
            sent_counter.increment(len);
            seq += 1;
            tokio::task::yield_now().await;
        }

        let whole = producer.map(|p| p.whole).unwrap_or_default();
        let finish = Frame::Finish {
            transfer_id,
            chunk_count: whole.chunk_count,
            raw_bytes: whole.raw_bytes,
            checksum: whole.value(),
        };
        self.lane.send_frame(to, finish.encode()).await?;
        loop {
            match self
                .next_response(&mut rx, request, "waiting for verification")
                .await?
            {
                Frame::Done { .. } => break,
                Frame::Failed { reason, .. } => return Err(remote(request, reason)),
                _ => {}
            }
        }
        Ok(SendReport {
            transfer_id,
            chunk_count: whole.chunk_count,
            raw_bytes: whole.raw_bytes,
            wire_bytes,
            duration: started.elapsed(),
        })
    }

    fn on_progress(
        &self,
        frame: Frame,
        acked: u64,
        sent: u64,
        request: &SnapshotRequest,
    ) -> Result<u64, SnapshotError> {
        match frame {
            // An ack beyond what was sent is a confused peer; it cannot
            // widen our window past what we actually sent.
            Frame::ChunkAck { seq, .. } => Ok(acked.max(seq.saturating_add(1).min(sent))),
            Frame::Failed { reason, .. } => Err(remote(request, reason)),
            _ => Ok(acked),
        }
    }

    async fn next_response(
        &self,
        rx: &mut mpsc::Receiver<Frame>,
        request: &SnapshotRequest,
        phase: &'static str,
    ) -> Result<Frame, SnapshotError> {
        match timeout(self.config.timeout_idle, rx.recv()).await {
            Ok(Some(frame)) => Ok(frame),
            Ok(None) => Err(SnapshotError::Shutdown),
            Err(_) => Err(SnapshotError::Timeout {
                to: request.to,
                range_id: request.range_id,
                waited_ms: self.config.timeout_idle.as_millis() as u64,
                phase,
            }),
        }
    }
}

fn remote(request: &SnapshotRequest, reason: FailReason) -> SnapshotError {
    SnapshotError::Remote {
        to: request.to,
        range_id: request.range_id,
        reason,
    }
}

/// Removes the mailbox of a send however it ends (including the future
/// being dropped) and, unless the receiver already knows the outcome,
/// tells it to drop its staging file.
struct SendGuard {
    mailboxes: Weak<Mailboxes>,
    key: (NodeId, u64),
    lane: Arc<dyn SnapshotLane>,
    finished: bool,
}

impl Drop for SendGuard {
    fn drop(&mut self) {
        if let Some(mailboxes) = self.mailboxes.upgrade() {
            mailboxes.lock().remove(&self.key);
        }
        if self.finished {
            return;
        }
        // Best effort: the receiver's idle timeout cleans up if this is lost.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (to, transfer_id) = self.key;
            let lane = Arc::clone(&self.lane);
            let frame = Frame::Cancel {
                transfer_id,
                reason: FailReason::Cancelled,
            }
            .encode();
            runtime.spawn(async move {
                let _ = lane.send_frame(to, frame).await;
            });
        }
    }
}

/// Reads the source and turns its output into encoded chunk frames. Runs on
/// a blocking thread (the source may do disk I/O, lz4 is CPU work).
struct ChunkProducer<S> {
    source: S,
    /// Rest of a source chunk larger than `chunk_bytes_max`.
    leftover: Bytes,
    header_done: bool,
    chunk_bytes_max: usize,
    whole: WholeChecksum,
    gauge: Arc<BufferGauge>,
    range_id: u64,
}

impl<S: SnapshotSource> ChunkProducer<S> {
    /// The next encoded chunk frame (with its memory registration), or
    /// `None` when the source is exhausted.
    fn next(&mut self, transfer_id: u64, seq: u64) -> Result<Option<(Bytes, Held)>, SnapshotError> {
        let source_err = |source| SnapshotError::Source {
            range_id: self.range_id,
            source,
        };
        let raw = if !self.header_done {
            self.header_done = true;
            let header = self.source.header().map_err(source_err)?;
            if header.len() > CHUNK_RAW_BYTES_LIMIT as usize {
                return Err(SnapshotError::Source {
                    range_id: self.range_id,
                    source: format!(
                        "header of {} bytes exceeds {CHUNK_RAW_BYTES_LIMIT}",
                        header.len()
                    )
                    .into(),
                });
            }
            header
        } else {
            if self.leftover.is_empty() {
                match self.source.next_chunk().map_err(source_err)? {
                    Some(chunk) => self.leftover = chunk,
                    None => return Ok(None),
                }
            }
            // A chunk larger than the limit is split; boundaries of chunks
            // within the limit are preserved end to end.
            let take = self.leftover.len().min(self.chunk_bytes_max);
            self.leftover.split_to(take)
        };
        let raw_held = self.gauge.hold(raw.len());
        self.whole.update(&raw);
        let chunk = WireChunk::encode(seq, raw);
        let frame = Frame::Chunk { transfer_id, chunk }.encode();
        let held = self.gauge.hold(frame.len());
        drop(raw_held);
        Ok(Some((frame, held)))
    }
}
