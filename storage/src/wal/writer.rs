//! Group commit: many threads call `write`; the batches waiting at one
//! moment are written with one `pwrite` and made durable with one fsync.
//!
//! Leader/follower: a writer enqueues its encoded batch; if no leader is
//! active it becomes the leader, takes every queued batch (up to
//! `group_commit_bytes_max`), writes and syncs them and hands each writer
//! its result. Every writer waits on its own slot, so a commit wakes only
//! the writers it finished plus the next leader — never the whole crowd
//! (a shared condvar with `notify_all` made 256 writers pay 256 context
//! switches per fsync). Encoding, compression and the payload CRC are done
//! by each writer before it queues, in parallel.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use flotilla_raftgroup::Index;
use parking_lot::{Condvar, Mutex, MutexGuard, RwLock};
use rustc_hash::FxHashMap;

use super::batch::{encode, Op, WriteBatch};
use super::error::{Result, WalError};
use super::format::{PreparedPayload, RecordKind};
use super::index::{MemState, RecordLocation};
use super::segment::{sync_dir, ActiveSegment};
use super::{Shared, WalConfig};

/// A commit's frame buffer is kept for the next one up to this size.
const FRAMES_KEEP_BYTES: usize = 4 << 20;

/// A batch waiting for the group commit.
pub(crate) struct Pending {
    pub batch: WriteBatch,
    prepared: PreparedPayload,
    op_offsets: Vec<u32>,
    pub sync: bool,
    /// Put appended entries in the entry cache (not for rewrites).
    cache: bool,
    /// Where its writer waits; `None` for batches written directly under
    /// the writer lock (purge rewrites).
    slot: Option<Arc<Slot>>,
}

/// What a waiting writer is told.
enum Signal {
    Waiting,
    /// Its batch was committed (or refused); it must wake these writers,
    /// whose results are already posted, before it returns. The batch
    /// comes back so that its writer frees it, in parallel and in the
    /// allocator arena it came from, rather than the leader between two
    /// group commits.
    Done(Result<()>, [Option<Arc<Slot>>; 2], Pending),
    /// Its batch is still queued and no leader is active: lead the next
    /// group commit.
    Lead,
}

thread_local! {
    static WRITER_SLOT: Arc<Slot> = Slot::new();
}

/// One waiting writer's mailbox.
struct Slot {
    signal: Mutex<Signal>,
    wake: Condvar,
}

impl Slot {
    fn new() -> Arc<Slot> {
        Arc::new(Slot {
            signal: Mutex::new(Signal::Waiting),
            wake: Condvar::new(),
        })
    }

    fn post(&self, signal: Signal) {
        self.set(signal);
        self.wake.notify_one();
    }

    /// Posts without waking: someone else calls `wake` later.
    fn set(&self, signal: Signal) {
        *self.signal.lock() = signal;
    }

    fn wake(&self) {
        self.wake.notify_one();
    }

    fn wait(&self) -> Signal {
        let mut signal = self.signal.lock();
        while matches!(*signal, Signal::Waiting) {
            self.wake.wait(&mut signal);
        }
        std::mem::replace(&mut *signal, Signal::Waiting)
    }
}

#[derive(Default)]
pub(crate) struct Queue {
    pending: VecDeque<Pending>,
    leader_active: bool,
}

/// Writer-side state, guarded by one mutex held by the group-commit leader
/// (or by purge) while it writes.
pub(crate) struct WriterState {
    pub active: ActiveSegment,
    pub poisoned: Option<String>,
    /// Buffers reused by every group commit (no allocation per commit).
    scratch: Scratch,
}

#[derive(Default)]
struct Scratch {
    frames: Vec<u8>,
    overlay: FxHashMap<u64, Bounds>,
    undo: Vec<(u64, Option<Bounds>)>,
}

impl WriterState {
    pub fn new(active: ActiveSegment) -> Self {
        WriterState {
            active,
            poisoned: None,
            scratch: Scratch::default(),
        }
    }
}

pub(crate) struct GroupCommit {
    queue: Mutex<Queue>,
}

impl GroupCommit {
    pub fn new() -> Self {
        GroupCommit {
            queue: Mutex::new(Queue::default()),
        }
    }
}

impl Shared {
    /// Encodes a batch outside of any lock.
    pub(crate) fn prepare(&self, batch: WriteBatch, sync: bool, cache: bool) -> Result<Pending> {
        let max = self.config.batch_bytes_max;
        if batch.size_bytes() > max {
            return Err(WalError::BatchTooLarge {
                bytes: batch.size_bytes(),
                max,
            });
        }
        let (raw, op_offsets) = encode(&batch);
        if raw.len() as u64 > max {
            return Err(WalError::BatchTooLarge {
                bytes: raw.len() as u64,
                max,
            });
        }
        Ok(Pending {
            batch,
            prepared: PreparedPayload::new(raw, self.config.compress_threshold_bytes),
            op_offsets,
            sync,
            cache,
            slot: None,
        })
    }

    pub(crate) fn write(&self, batch: WriteBatch, sync: bool) -> Result<()> {
        if batch.is_empty() && !sync {
            return Ok(());
        }
        let mut pending = self.prepare(batch, sync, true)?;
        // One slot per thread, reused: a thread has one write in flight.
        // A late `wake` from a finished group only makes it re-check.
        let slot = WRITER_SLOT.with(Arc::clone);
        pending.slot = Some(slot.clone());
        {
            let mut queue = self.group_commit.queue.lock();
            queue.pending.push_back(pending);
            if queue.leader_active {
                drop(queue);
                match slot.wait() {
                    Signal::Done(result, wake, pending) => {
                        wake.iter().flatten().for_each(|next| next.wake());
                        drop(pending);
                        return result;
                    }
                    Signal::Lead | Signal::Waiting => {}
                }
            } else {
                queue.leader_active = true;
            }
        }
        self.lead(&slot)
    }

    /// Runs group commits until the caller's own batch is done, then hands
    /// leadership to the writer at the head of the queue (if any).
    ///
    /// The hand-off comes before any follower is woken (as in raft-engine's
    /// write barrier), so the next group commit starts at once; the
    /// finished followers then wake each other as a binary tree. Waking
    /// them one by one from here put a few hundred futex calls between two
    /// fsyncs with 256 writers (10,000 groups x 256 writers: 0.86 of
    /// raft-engine before, 0.92-0.98 after).
    fn lead(&self, own: &Arc<Slot>) -> Result<()> {
        let commit = &self.group_commit;
        loop {
            let group = take_group(
                &mut commit.queue.lock().pending,
                self.config.group_commit_bytes_max,
            );
            let results = {
                let mut writer = self.writer.lock();
                self.commit_locked(&mut writer, &group)
            };
            let mut own_result = None;
            let mut done: Vec<Done> = Vec::with_capacity(group.len());
            for (mut pending, result) in group.into_iter().zip(results) {
                match pending.slot.take() {
                    Some(slot) if Arc::ptr_eq(&slot, own) => own_result = Some(result),
                    Some(slot) => done.push((slot, result, pending)),
                    None => {}
                }
            }
            if own_result.is_some() {
                let mut queue = commit.queue.lock();
                match queue.pending.front().and_then(|p| p.slot.clone()) {
                    Some(next) => next.post(Signal::Lead),
                    None => queue.leader_active = false,
                }
            }
            wake_tree(done);
            // The cache is brought back within its budget only now, off
            // the path between two group commits: evicting touches cold
            // groups (cache misses) and frees buffers other threads
            // allocated. It may exceed the budget by one group commit.
            let evicted = self.state.write().evict_over_budget();
            drop(evicted);
            if let Some(result) = own_result {
                return result;
            }
        }
    }

    /// Writes a group of batches holding the writer lock: validate each
    /// against the index, frame, write, sync, update the index. Returns
    /// one result per batch. Cached batches give their entries to the
    /// cache.
    pub(crate) fn commit_locked(
        &self,
        writer: &mut MutexGuard<'_, WriterState>,
        group: &[Pending],
    ) -> Vec<Result<()>> {
        if let Some(reason) = &writer.poisoned {
            return group
                .iter()
                .map(|_| Err(WalError::Poisoned(reason.clone())))
                .collect();
        }
        let mut results: Vec<Result<()>> = Vec::with_capacity(group.len());
        {
            let state = self.state.read();
            let Scratch { overlay, undo, .. } = &mut writer.scratch;
            overlay.clear();
            for pending in group.iter() {
                results.push(validate(&pending.batch, &state, overlay, undo));
            }
        }
        let sync = group.iter().zip(&results).any(|(p, r)| p.sync && r.is_ok());
        let written = group
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_ok())
            .count();
        match self.write_records(writer, group, &results, sync) {
            Ok(bytes) => {
                self.stats.bytes_written.fetch_add(bytes, Ordering::Relaxed);
                self.stats
                    .batches_written
                    .fetch_add(written as u64, Ordering::Relaxed);
                metrics::counter!("flotilla_wal_bytes_written_total").increment(bytes);
                if sync {
                    self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .batches_synced
                        .fetch_add(written as u64, Ordering::Relaxed);
                    self.stats
                        .batches_per_fsync_max
                        .fetch_max(written as u64, Ordering::Relaxed);
                    metrics::counter!("flotilla_wal_fsyncs_total").increment(1);
                    metrics::histogram!("flotilla_wal_batches_per_fsync").record(written as f64);
                }
                results
            }
            Err(err) => {
                // After a failed write or fsync the kernel may have dropped
                // dirty pages: nothing written since the last good sync can
                // be trusted, so refuse everything until a reopen recovers.
                tracing::error!(error = %err, "wal write failed; wal poisoned");
                writer.poisoned = Some(err.to_string());
                results
                    .into_iter()
                    .map(|r| r.and(Err(err.clone())))
                    .collect()
            }
        }
    }

    fn write_records(
        &self,
        writer: &mut MutexGuard<'_, WriterState>,
        group: &[Pending],
        results: &[Result<()>],
        sync: bool,
    ) -> Result<u64> {
        let target = self.config.segment_bytes_target;
        // The frame buffer is reused across commits (lost on an error,
        // which poisons the WAL anyway).
        let mut buf = std::mem::take(&mut writer.scratch.frames);
        buf.clear();
        let mut placed: Vec<(usize, RecordLocation)> = Vec::with_capacity(group.len());
        let mut bytes = 0u64;
        for (at, pending) in group.iter().enumerate() {
            if results[at].is_err() || pending.batch.is_empty() {
                continue;
            }
            let len = pending.prepared.framed_len() as u64;
            let offset = writer.active.written + buf.len() as u64;
            if offset + len > target && offset > writer.active.written_floor() {
                bytes += self.flush(writer, &mut buf, &mut placed, group)?;
                self.rotate(writer)?;
            }
            let offset = writer.active.written + buf.len() as u64;
            let location = RecordLocation {
                file_seq: writer.active.seq as u32,
                record_offset: offset as u32,
            };
            pending
                .prepared
                .frame_into(RecordKind::Batch, writer.active.seq, &mut buf);
            placed.push((at, location));
        }
        bytes += self.flush(writer, &mut buf, &mut placed, group)?;
        // Kept unless one huge batch grew it.
        if buf.capacity() <= FRAMES_KEEP_BYTES {
            writer.scratch.frames = buf;
        }
        if sync {
            writer.active.sync()?;
        }
        Ok(bytes)
    }

    /// Writes the framed records and applies their ops to the index. The
    /// index is updated before the fsync: readers may see entries that are
    /// written but not yet durable, which Raft allows (a leader may send
    /// entries before its own fsync); `write` returns only after the sync.
    fn flush(
        &self,
        writer: &mut MutexGuard<'_, WriterState>,
        buf: &mut Vec<u8>,
        placed: &mut Vec<(usize, RecordLocation)>,
        group: &[Pending],
    ) -> Result<u64> {
        if buf.is_empty() {
            return Ok(0);
        }
        if let Some(prefill) = &self.prefill {
            let from = writer.active.written;
            prefill.before_append(from, from + buf.len() as u64);
        }
        writer.active.append(buf)?;
        let bytes = buf.len() as u64;
        buf.clear();
        let mut state = self.state.write();
        for (at, location) in placed.drain(..) {
            let pending = &group[at];
            let cache = pending.cache;
            for (op, &offset) in pending.batch.ops.iter().zip(&pending.op_offsets) {
                state.apply_written_op(op, offset, location, cache);
            }
        }
        Ok(bytes)
    }

    /// Seals the active segment and starts the next one with a checkpoint
    /// of every group's metadata.
    pub(crate) fn rotate(&self, writer: &mut MutexGuard<'_, WriterState>) -> Result<()> {
        // The zero-fill thread lets go of the segment before it is cut.
        if let Some(prefill) = &self.prefill {
            prefill.retarget(None, 0, 0);
        }
        writer.active.seal()?;
        let seq = writer.active.seq + 1;
        let next = self.create_segment(seq, &self.state.read())?;
        if let Some(prefill) = &self.prefill {
            prefill.retarget(Some(&next.path), next.written, next.allocated);
        }
        writer.active = next;
        Ok(())
    }

    pub(crate) fn create_segment(&self, seq: u64, state: &MemState) -> Result<ActiveSegment> {
        new_segment(&self.dir, &self.config, seq, state, &self.files)
    }
}

/// Creates segment `seq` whose first record is a checkpoint of `state`,
/// durable (file and directory synced) before it is used, and registers
/// its read handle in `files`.
pub(crate) fn new_segment(
    dir: &Path,
    config: &WalConfig,
    seq: u64,
    state: &MemState,
    files: &RwLock<BTreeMap<u64, Arc<File>>>,
) -> Result<ActiveSegment> {
    if seq > u64::from(u32::MAX) {
        return Err(WalError::Config(
            "segment sequence numbers exhausted (u32)".into(),
        ));
    }
    let prealloc = if config.preallocate {
        config.segment_bytes_target
    } else {
        0
    };
    let mut segment = ActiveSegment::create(dir, seq, prealloc)?;
    let checkpoint = state.encode_checkpoint();
    if checkpoint.len() > config.record_bytes_max {
        return Err(WalError::Config(format!(
            "checkpoint of {} groups needs {} bytes, above record_bytes_max",
            state.groups.len(),
            checkpoint.len()
        )));
    }
    let prepared = PreparedPayload::new(checkpoint, config.compress_threshold_bytes);
    let mut buf = Vec::with_capacity(prepared.framed_len());
    prepared.frame_into(RecordKind::Checkpoint, seq, &mut buf);
    segment.append(&buf)?;
    segment.checkpoint_end = segment.written;
    segment.sync()?;
    sync_dir(dir)?;
    files.write().insert(seq, segment.file.clone());
    metrics::counter!("flotilla_wal_segments_created_total").increment(1);
    Ok(segment)
}

/// A finished writer: its slot, its result and its batch.
type Done = (Arc<Slot>, Result<()>, Pending);

/// Posts every result, then wakes the first writer; writer `i` wakes
/// writers `2i + 1` and `2i + 2`.
///
/// Results are posted last writer first: a writer that has not gone to
/// sleep yet may find its result before the first wake and wake its
/// children at once, and their results must be there by then (posting in
/// order left a child's result unwoken, asleep forever).
fn wake_tree(done: Vec<Done>) {
    let slots: Vec<Arc<Slot>> = done.iter().map(|(slot, _, _)| slot.clone()).collect();
    for (at, (slot, result, pending)) in done.into_iter().enumerate().rev() {
        // A fixed pair, not a Vec: no allocation per woken writer.
        let children = [2 * at + 1, 2 * at + 2].map(|child| slots.get(child).cloned());
        slot.set(Signal::Done(result, children, pending));
    }
    if let Some(first) = slots.first() {
        first.wake();
    }
}

fn take_group(pending: &mut VecDeque<Pending>, bytes_max: u64) -> Vec<Pending> {
    let mut group = Vec::new();
    let mut bytes = 0u64;
    while let Some(next) = pending.front() {
        let len = next.prepared.framed_len() as u64;
        if !group.is_empty() && bytes + len > bytes_max {
            break;
        }
        bytes += len;
        if let Some(next) = pending.pop_front() {
            group.push(next);
        }
    }
    group
}

/// What validation needs to know of a group: its compaction point and last
/// index, as changed by the batches ahead in the same group commit.
#[derive(Debug, Clone, Copy, Default)]
struct Bounds {
    truncated: Index,
    last: Index,
}

/// Checks a batch against the log as the batches before it leave it. On
/// success the batch's effects stay in `overlay`; on failure they are
/// undone (the undo log avoids a per-batch map on the hot path).
fn validate(
    batch: &WriteBatch,
    state: &MemState,
    overlay: &mut FxHashMap<u64, Bounds>,
    undo: &mut Vec<(u64, Option<Bounds>)>,
) -> Result<()> {
    undo.clear();
    let result = validate_into(batch, state, overlay, undo);
    if result.is_err() {
        for (group, before) in undo.drain(..).rev() {
            match before {
                Some(bounds) => overlay.insert(group, bounds),
                None => overlay.remove(&group),
            };
        }
    }
    result
}

fn validate_into(
    batch: &WriteBatch,
    state: &MemState,
    overlay: &mut FxHashMap<u64, Bounds>,
    undo: &mut Vec<(u64, Option<Bounds>)>,
) -> Result<()> {
    for op in &batch.ops {
        let group = op.group();
        let before = overlay.get(&group).copied();
        undo.push((group, before));
        let mut bounds = before.unwrap_or_else(|| {
            state
                .groups
                .get(&group)
                .map_or(Bounds::default(), |g| Bounds {
                    truncated: g.truncated_index,
                    last: g.last_index(),
                })
        });
        match op {
            Op::Entries { entries, .. } => {
                let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
                    continue;
                };
                if first.index <= bounds.truncated {
                    return Err(WalError::InvalidBatch {
                        group,
                        reason: format!(
                            "append at index {} at or below the compaction point {}",
                            first.index, bounds.truncated
                        ),
                    });
                }
                if first.index > bounds.last + 1 {
                    return Err(WalError::InvalidBatch {
                        group,
                        reason: format!(
                            "append at index {} leaves a gap after last index {}",
                            first.index, bounds.last
                        ),
                    });
                }
                bounds.last = last.index;
            }
            Op::Compact { index, .. } => {
                if *index > bounds.truncated {
                    if *index > bounds.last {
                        return Err(WalError::InvalidBatch {
                            group,
                            reason: format!(
                                "compaction to {index} beyond last index {}",
                                bounds.last
                            ),
                        });
                    }
                    bounds.truncated = *index;
                }
            }
            Op::Snapshot { index, .. } => {
                if *index > bounds.truncated {
                    bounds.truncated = *index;
                    bounds.last = *index;
                }
            }
            Op::Remove { .. } => bounds = Bounds::default(),
            Op::HardState { .. } | Op::ConfState { .. } => {}
        }
        overlay.insert(group, bounds);
    }
    Ok(())
}
