//! The receiving side: reserve a slot (or refuse), stage verified chunks on
//! disk, verify the whole snapshot, hand it to the engine.
//!
//! Frames arrive through the synchronous [`Receiver::deliver`] (called from
//! the transport's reader task, which must not block) and are queued to one
//! task per transfer. The queue cannot grow past the credit window the
//! receiver granted: a sender that overruns it is cut off.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::{timeout, Instant};

use super::buffers::{BufferGauge, Held};
use super::chunk::WholeChecksum;
use super::config::SnapshotConfig;
use super::error::{FailReason, RefuseReason};
use super::frame::Frame;
use super::staging::{StagedMeta, StagedSnapshot, Staging};
use super::{metric, SnapshotSink};
use crate::{NodeId, RangeId, SnapshotLane};

/// Answers (refusals, failures of unknown transfers) being sent at once;
/// beyond this, answers are dropped and the sender times out instead. Keeps
/// a peer flooding junk frames from making us spawn unbounded tasks.
const ANSWERS_IN_FLIGHT_MAX: usize = 16;

type Transfers = Mutex<HashMap<(NodeId, u64), Entry>>;

struct Entry {
    range_id: RangeId,
    generation: u64,
    tx: mpsc::Sender<(Frame, Held)>,
    /// Set when the sender overran the window; the task reports `Protocol`.
    overrun: Arc<AtomicBool>,
    /// The receive slot. Moves into the [`StagedSnapshot`] on success, or to
    /// the transfer that supersedes this one.
    slot: Option<OwnedSemaphorePermit>,
}

pub(crate) struct Receiver {
    config: Arc<SnapshotConfig>,
    lane: Arc<dyn SnapshotLane>,
    sink: Arc<dyn SnapshotSink>,
    staging: Arc<Staging>,
    slots: Arc<Semaphore>,
    transfers: Arc<Transfers>,
    answers: Arc<Semaphore>,
    gauge: Arc<BufferGauge>,
    runtime: tokio::runtime::Handle,
    next_generation: AtomicU64,
}

impl Receiver {
    pub fn new(
        config: Arc<SnapshotConfig>,
        lane: Arc<dyn SnapshotLane>,
        sink: Arc<dyn SnapshotSink>,
        staging: Staging,
        gauge: Arc<BufferGauge>,
        runtime: tokio::runtime::Handle,
    ) -> Receiver {
        Receiver {
            slots: Arc::new(Semaphore::new(config.receives_concurrent_max)),
            config,
            lane,
            sink,
            staging: Arc::new(staging),
            transfers: Arc::new(Mutex::new(HashMap::new())),
            answers: Arc::new(Semaphore::new(ANSWERS_IN_FLIGHT_MAX)),
            gauge,
            runtime,
            next_generation: AtomicU64::new(1),
        }
    }

    /// Slots taken: transfers in progress plus staged snapshots the engine
    /// still holds.
    pub fn receives_active(&self) -> usize {
        self.config.receives_concurrent_max - self.slots.available_permits()
    }

    /// A frame from `from` addressed to the receiving side. Never blocks.
    pub fn deliver(&self, from: NodeId, frame: Frame, wire_len: usize) {
        let transfer_id = frame.transfer_id();
        match frame {
            Frame::Reserve {
                range_id,
                index,
                term,
                size_hint_bytes,
                ..
            } => self.on_reserve(from, transfer_id, range_id, index, term, size_hint_bytes),
            frame => {
                let held = self.gauge.hold(wire_len);
                let mut transfers = self.transfers.lock();
                let Some(entry) = transfers.get(&(from, transfer_id)) else {
                    drop(transfers);
                    // Tell the sender right away (e.g. we restarted) instead
                    // of letting it wait for its timeout; once per transfer.
                    if matches!(frame, Frame::Finish { .. } | Frame::Chunk { .. }) {
                        self.answer(
                            from,
                            Frame::Failed {
                                transfer_id,
                                reason: FailReason::Unknown,
                            },
                        );
                    }
                    return;
                };
                if entry.tx.try_send((frame, held)).is_err() {
                    // Beyond the window we granted (or the task is gone):
                    // cut the transfer off rather than buffer without bound.
                    entry.overrun.store(true, Ordering::Release);
                    transfers.remove(&(from, transfer_id));
                }
            }
        }
    }

    fn on_reserve(
        &self,
        from: NodeId,
        transfer_id: u64,
        range_id: RangeId,
        index: u64,
        term: u64,
        size_hint: u64,
    ) {
        let refuse = |reason: RefuseReason, index_known: u64| {
            metrics::counter!(metric::REFUSALS, "side" => "receiver", "reason" => format!("{reason:?}")).increment(1);
            tracing::info!(
                from,
                range_id,
                index,
                ?reason,
                index_known,
                "snapshot refused"
            );
            self.answer(
                from,
                Frame::Refuse {
                    transfer_id,
                    reason,
                    index_known,
                },
            );
        };
        if size_hint > self.config.snapshot_bytes_max {
            return refuse(RefuseReason::TooLarge, 0);
        }
        // Asked outside our lock: the engine's answer may take its own locks.
        if let Some(known) = self.sink.index_known(range_id) {
            // Equal is refused too: it would bring nothing new.
            if index <= known {
                return refuse(RefuseReason::Stale, known);
            }
        }
        let mut transfers = self.transfers.lock();
        // One transfer per range. The same sender asking again (it retried
        // after a failure we may not have noticed) supersedes its old
        // transfer, taking over its slot; another sender is told to wait.
        let mut keys: Vec<(NodeId, u64)> = transfers
            .iter()
            .filter(|(_, e)| e.range_id == range_id)
            .map(|(k, _)| *k)
            .collect();
        if keys.iter().any(|(node, _)| *node != from) {
            drop(transfers);
            return refuse(RefuseReason::Busy, 0);
        }
        keys.push((from, transfer_id));
        let mut inherited = None;
        for key in keys {
            if let Some(mut old) = transfers.remove(&key) {
                inherited = inherited.or(old.slot.take());
            }
        }
        let slot = match inherited.or_else(|| self.slots.clone().try_acquire_owned().ok()) {
            Some(slot) => slot,
            None => {
                drop(transfers);
                return refuse(RefuseReason::NoSlot, 0);
            }
        };
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let window = self.config.window_chunks as usize;
        // +2: the Finish and a Cancel may follow a full window.
        let (tx, rx) = mpsc::channel(window + 2);
        let overrun = Arc::new(AtomicBool::new(false));
        transfers.insert(
            (from, transfer_id),
            Entry {
                range_id,
                generation,
                tx,
                overrun: Arc::clone(&overrun),
                slot: Some(slot),
            },
        );
        drop(transfers);
        let task = Transfer {
            meta: StagedMeta {
                from,
                range_id,
                index,
                term,
                chunk_count: 0,
                raw_bytes: 0,
                checksum: 0,
            },
            transfer_id,
            generation,
            rx,
            overrun,
            transfers: Arc::downgrade(&self.transfers),
            config: Arc::clone(&self.config),
            lane: Arc::clone(&self.lane),
            sink: Arc::clone(&self.sink),
            staging: Arc::clone(&self.staging),
            gauge: Arc::clone(&self.gauge),
        };
        self.runtime.spawn(task.run());
    }

    fn answer(&self, to: NodeId, frame: Frame) {
        let Ok(permit) = self.answers.clone().try_acquire_owned() else {
            return;
        };
        let lane = Arc::clone(&self.lane);
        let wait = self.config.timeout_idle;
        self.runtime.spawn(async move {
            let _ = timeout(wait, lane.send_frame(to, frame.encode())).await;
            drop(permit);
        });
    }
}

/// One receiving transfer, run as its own task.
struct Transfer {
    meta: StagedMeta,
    transfer_id: u64,
    generation: u64,
    rx: mpsc::Receiver<(Frame, Held)>,
    overrun: Arc<AtomicBool>,
    transfers: Weak<Transfers>,
    config: Arc<SnapshotConfig>,
    lane: Arc<dyn SnapshotLane>,
    sink: Arc<dyn SnapshotSink>,
    staging: Arc<Staging>,
    gauge: Arc<BufferGauge>,
}

/// How a receiving transfer ended.
enum End {
    Done,
    /// Failed here; the sender is told why.
    Failed(FailReason),
    /// The sender cancelled; nothing to tell.
    Cancelled,
}

impl Transfer {
    async fn run(mut self) {
        let started = Instant::now();
        let active = metrics::gauge!(metric::RECEIVES_ACTIVE);
        active.increment(1.0);
        // However this task ends — even dropped with the runtime — its map
        // entry (and with it the slot unless handed on) goes away.
        let _entry = EntryGuard {
            transfers: self.transfers.clone(),
            key: (self.meta.from, self.transfer_id),
            generation: self.generation,
        };
        let end = self.receive().await;
        active.decrement(1.0);
        let (from, range_id) = (self.meta.from, self.meta.range_id);
        let outcome = match end {
            End::Done => "ok",
            End::Failed(_) => "failed",
            End::Cancelled => "cancelled",
        };
        metrics::histogram!(metric::RECEIVE_SECONDS, "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        match end {
            End::Done => tracing::info!(
                from,
                range_id,
                index = self.meta.index,
                bytes = self.meta.raw_bytes,
                "snapshot received"
            ),
            End::Cancelled => {
                tracing::info!(from, range_id, "snapshot receive cancelled by the sender")
            }
            End::Failed(reason) => {
                tracing::warn!(from, range_id, ?reason, "snapshot receive failed");
                let frame = Frame::Failed {
                    transfer_id: self.transfer_id,
                    reason,
                };
                let _ = timeout(
                    self.config.timeout_idle,
                    self.lane.send_frame(from, frame.encode()),
                )
                .await;
            }
        }
    }

    async fn receive(&mut self) -> End {
        let from = self.meta.from;
        let staging = Arc::clone(&self.staging);
        let (range_id, transfer_id) = (self.meta.range_id, self.transfer_id);
        let created =
            tokio::task::spawn_blocking(move || staging.create(range_id, from, transfer_id)).await;
        let mut file = match created {
            Ok(Ok(file)) => Some(file),
            Ok(Err(error)) => {
                tracing::warn!(from, range_id, %error, "cannot create snapshot staging file");
                let refuse = Frame::Refuse {
                    transfer_id,
                    reason: RefuseReason::Staging,
                    index_known: 0,
                };
                let _ = timeout(
                    self.config.timeout_idle,
                    self.lane.send_frame(from, refuse.encode()),
                )
                .await;
                return End::Cancelled;
            }
            Err(_) => return End::Failed(FailReason::Disk),
        };
        let grant = Frame::Grant {
            transfer_id,
            window_chunks: self.config.window_chunks,
        };
        if !self.send(grant).await {
            return End::Failed(FailReason::Cancelled);
        }
        let mut whole = WholeChecksum::default();
        let received = metrics::counter!(metric::BYTES_RECEIVED);
        loop {
            let (frame, held) = match timeout(self.config.timeout_idle, self.rx.recv()).await {
                Err(_) => return End::Failed(FailReason::Timeout),
                Ok(None) if self.overrun.load(Ordering::Acquire) => {
                    return End::Failed(FailReason::Protocol)
                }
                Ok(None) => return End::Failed(FailReason::Cancelled),
                Ok(Some(next)) => next,
            };
            match frame {
                Frame::Chunk { chunk, .. } => {
                    if chunk.seq != whole.chunk_count {
                        return End::Failed(FailReason::Protocol);
                    }
                    let wire_len = chunk.payload.len() as u64;
                    let Some(mut staging_file) = file.take() else {
                        return End::Failed(FailReason::Disk);
                    };
                    let gauge = Arc::clone(&self.gauge);
                    let done = tokio::task::spawn_blocking(move || {
                        let raw_held = gauge.hold(chunk.raw_len as usize);
                        let result = match chunk.verify_and_decode() {
                            Err(_) => Err(FailReason::Corrupt),
                            Ok(raw) => {
                                whole.update(&raw);
                                drop(raw);
                                staging_file.append(&chunk).map_err(|_| FailReason::Disk)
                            }
                        };
                        drop((raw_held, held));
                        (staging_file, whole, result)
                    })
                    .await;
                    let Ok((staging_file, updated, result)) = done else {
                        return End::Failed(FailReason::Disk);
                    };
                    // On failure the file is dropped (deleted) right here.
                    if let Err(reason) = result {
                        return End::Failed(reason);
                    }
                    file = Some(staging_file);
                    whole = updated;
                    received.increment(wire_len);
                    if whole.raw_bytes > self.config.snapshot_bytes_max {
                        return End::Failed(FailReason::TooLarge);
                    }
                    let ack = Frame::ChunkAck {
                        transfer_id,
                        seq: whole.chunk_count - 1,
                    };
                    if !self.send(ack).await {
                        return End::Failed(FailReason::Cancelled);
                    }
                }
                Frame::Finish {
                    chunk_count,
                    raw_bytes,
                    checksum,
                    ..
                } => {
                    drop(held);
                    let complete = whole.chunk_count >= 1
                        && chunk_count == whole.chunk_count
                        && raw_bytes == whole.raw_bytes
                        && checksum == whole.value();
                    if !complete {
                        return End::Failed(FailReason::Corrupt);
                    }
                    let Some(staging_file) = file.take() else {
                        return End::Failed(FailReason::Disk);
                    };
                    let staged =
                        match tokio::task::spawn_blocking(move || staging_file.finish()).await {
                            Ok(Ok(staged)) => staged,
                            _ => return End::Failed(FailReason::Disk),
                        };
                    let Some(slot) = self.take_slot() else {
                        return End::Failed(FailReason::Cancelled);
                    };
                    self.meta.chunk_count = chunk_count;
                    self.meta.raw_bytes = raw_bytes;
                    self.meta.checksum = checksum;
                    if let Err(error) = self
                        .sink
                        .on_staged(StagedSnapshot::new(self.meta, staged, slot))
                    {
                        tracing::warn!(from, range_id, %error, "engine rejected a staged snapshot");
                        return End::Failed(FailReason::Rejected);
                    }
                    self.send(Frame::Done { transfer_id }).await;
                    return End::Done;
                }
                Frame::Cancel { .. } => return End::Cancelled,
                _ => return End::Failed(FailReason::Protocol),
            }
        }
    }

    /// Sends a response; false if the lane refused it (peer gone).
    async fn send(&self, frame: Frame) -> bool {
        matches!(
            timeout(
                self.config.timeout_idle,
                self.lane.send_frame(self.meta.from, frame.encode())
            )
            .await,
            Ok(Ok(()))
        )
    }

    fn take_slot(&self) -> Option<OwnedSemaphorePermit> {
        let transfers = self.transfers.upgrade()?;
        let mut transfers = transfers.lock();
        let entry = transfers.get_mut(&(self.meta.from, self.transfer_id))?;
        if entry.generation != self.generation {
            return None;
        }
        entry.slot.take()
    }
}

struct EntryGuard {
    transfers: Weak<Transfers>,
    key: (NodeId, u64),
    generation: u64,
}

impl Drop for EntryGuard {
    fn drop(&mut self) {
        let Some(transfers) = self.transfers.upgrade() else {
            return;
        };
        let mut transfers = transfers.lock();
        if transfers
            .get(&self.key)
            .is_some_and(|e| e.generation == self.generation)
        {
            transfers.remove(&self.key);
        }
    }
}
