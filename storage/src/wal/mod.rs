//! The shared batched write-ahead log: Raft entries, hard states,
//! configurations and compaction points of every group on a node, in one
//! append-only sequence of segment files.
//!
//! - [`WriteBatch`] carries changes to many groups; [`Wal::write`] is atomic
//!   and concurrent writers are group-committed (one write + one fsync for
//!   all batches waiting at a moment; see `writer.rs`).
//! - [`Wal::group`] returns a [`GroupLog`], a cheap per-group handle that
//!   implements [`LogStore`] for the consensus core.
//! - Recovery on [`Wal::open`] replays the segments; a torn tail of the last
//!   segment is cut, corruption elsewhere is an error (see `recovery.rs`).
//! - [`Wal::purge`] deletes segments no group needs, rewriting small
//!   lagging groups forward so that disk use stays bounded.
//!
//! Files: `format.rs` (framing), `batch.rs` (batch encoding), `index.rs`
//! (in-memory index and entry cache), `segment.rs` (files), `prefill.rs`
//! (zeros written ahead of the appends), `writer.rs` (group commit),
//! `recovery.rs` (open), `purge.rs` (space reclamation).
//!
//! ```
//! use flotilla_raftgroup::{Entry, HardState, LogStore};
//! use flotilla_storage::wal::{Wal, WalConfig, WriteBatch};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let wal = Wal::open(dir.path(), WalConfig::small_for_tests()).unwrap();
//! let mut batch = WriteBatch::new();
//! batch.append(1, &[Entry::new(1, 1, "put a"), Entry::new(1, 2, "put b")]).unwrap();
//! batch.set_hard_state(1, HardState { term: 1, vote: 1, commit: 2 });
//! wal.write(&batch, true).unwrap();
//! drop(wal);
//!
//! let wal = Wal::open(dir.path(), WalConfig::small_for_tests()).unwrap();
//! let log = wal.group(1);
//! assert_eq!(log.last_index().unwrap(), 2);
//! assert_eq!(log.entries(1, 3, u64::MAX).unwrap()[1].data, "put b");
//! assert_eq!(log.initial_state().unwrap().0.commit, 2);
//! ```

mod batch;
mod error;
mod format;
mod group;
mod index;
mod prefill;
mod purge;
mod recovery;
mod segment;
mod writer;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

pub use batch::WriteBatch;
pub use error::{Result, WalError};
pub use group::GroupLog;
pub use purge::PurgeReport;
pub use recovery::RecoveryStats;

use index::MemState;
use writer::{GroupCommit, WriterState};

/// WAL settings. [`WalConfig::default`] holds the production defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalConfig {
    /// A segment is sealed and a new one started once it would grow past
    /// this (a single larger batch still fits in one segment). 128 MiB.
    pub segment_bytes_target: u64,
    /// Preallocate each segment to its target size when it is created, so
    /// appends do not change the file size and need `fdatasync` only.
    /// Default on.
    pub preallocate: bool,
    /// With `preallocate`, a background thread keeps this many bytes of
    /// zeros written ahead of the append position, so that appends
    /// overwrite allocated blocks and a group commit's `fdatasync` needs
    /// no filesystem journal commit (see `prefill.rs`). Costs a second
    /// write of each segment byte; 0 turns it off. 4 MiB.
    pub zero_fill_ahead_bytes: u64,
    /// Batch payloads larger than this are lz4-compressed (kept raw when
    /// that does not shrink them). 4 KiB.
    pub compress_threshold_bytes: usize,
    /// Largest encoded batch accepted by [`Wal::write`]. 32 MiB.
    pub batch_bytes_max: u64,
    /// Largest record accepted when reading; bounds allocations on replay
    /// of damaged files and the size of a checkpoint (about 60 bytes per
    /// group plus 8 per replica). 256 MiB.
    pub record_bytes_max: usize,
    /// Bytes one group commit writes at most before the next leader takes
    /// over. 16 MiB.
    pub group_commit_bytes_max: u64,
    /// Total bytes of recent entries cached across all groups. 64 MiB.
    /// Each group commit's leader evicts down to it after releasing the
    /// next group commit, so it may be exceeded by one group commit.
    pub cache_bytes_max: u64,
    /// [`Wal::purge`] keeps this many newest sealed segments untouched;
    /// groups pinning anything older are rewritten forward (or reported).
    /// Disk use after a purge is at most `purge_keep_segments + 1`
    /// segments (+ pinned ones of reported groups). Default 2.
    pub purge_keep_segments: u64,
    /// A lagging group is rewritten forward by purge only if its live
    /// entries total at most this many bytes; larger ones are reported in
    /// [`PurgeReport::groups_to_compact`]. 1 MiB.
    pub rewrite_group_bytes_max: u64,
    /// Cut the log at the first corrupt record instead of refusing to
    /// open. Loses every batch after it: an explicit operator decision.
    pub salvage: bool,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            segment_bytes_target: 128 << 20,
            preallocate: true,
            zero_fill_ahead_bytes: 4 << 20,
            compress_threshold_bytes: 4 << 10,
            batch_bytes_max: 32 << 20,
            record_bytes_max: 256 << 20,
            group_commit_bytes_max: 16 << 20,
            cache_bytes_max: 64 << 20,
            purge_keep_segments: 2,
            rewrite_group_bytes_max: 1 << 20,
            salvage: false,
        }
    }
}

impl WalConfig {
    /// Small segments (64 KiB) and caches, for tests that want rotation
    /// and purge to happen quickly.
    pub fn small_for_tests() -> Self {
        WalConfig {
            segment_bytes_target: 64 << 10,
            batch_bytes_max: 1 << 20,
            record_bytes_max: 4 << 20,
            group_commit_bytes_max: 256 << 10,
            cache_bytes_max: 16 << 10,
            purge_keep_segments: 1,
            rewrite_group_bytes_max: 64 << 10,
            ..WalConfig::default()
        }
    }

    fn validate(&self) -> Result<()> {
        let fail = |msg: &str| Err(WalError::Config(msg.into()));
        // Record offsets are stored as u32: a segment must stay below 4 GiB
        // even when its last record overshoots the target.
        if self.segment_bytes_target < 4096 || self.segment_bytes_target > 1 << 30 {
            return fail("segment_bytes_target must be within 4 KiB..=1 GiB");
        }
        if self.record_bytes_max > 1 << 30 || self.record_bytes_max < 4096 {
            return fail("record_bytes_max must be within 4 KiB..=1 GiB");
        }
        if self.batch_bytes_max > self.record_bytes_max as u64 {
            return fail("batch_bytes_max must not exceed record_bytes_max");
        }
        if self.group_commit_bytes_max == 0 {
            return fail("group_commit_bytes_max must be positive");
        }
        Ok(())
    }
}

/// Counters of the WAL's work so far, plus a snapshot of its size.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WalStats {
    /// fsyncs issued by group commits.
    pub fsyncs: u64,
    /// Batches written.
    pub batches_written: u64,
    /// Batches made durable by those fsyncs (`/ fsyncs` = batches per fsync).
    pub batches_synced: u64,
    /// Most batches one fsync covered.
    pub batches_per_fsync_max: u64,
    /// Zeros written ahead of the appends (`WalConfig::zero_fill_ahead_bytes`).
    pub zero_filled_bytes: u64,
    /// Group-commit writes that found no zeros ahead and so allocated
    /// blocks (a few after each new segment; many means the zero-fill
    /// thread cannot keep up).
    pub appends_into_holes: u64,
    /// Record bytes written (checkpoints excluded).
    pub bytes_written: u64,
    /// Segment files on disk.
    pub segments: usize,
    /// Bytes of segment files on disk (the active one counts as written).
    pub disk_bytes: u64,
    /// Groups known.
    pub groups: usize,
    /// Live entries indexed over all groups.
    pub indexed_entries: u64,
    /// Bytes the index uses for them (runs + term runs).
    pub index_bytes: u64,
    /// Bytes of cached entries.
    pub cache_bytes: u64,
    /// Estimated bytes of live entries (what purge's disk budget uses).
    pub live_bytes_estimate: u64,
    /// What the last open recovered.
    pub recovery: RecoveryStats,
}

impl WalStats {
    /// Average batches per fsync.
    pub fn batches_per_fsync(&self) -> f64 {
        if self.fsyncs == 0 {
            0.0
        } else {
            self.batches_synced as f64 / self.fsyncs as f64
        }
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    fsyncs: AtomicU64,
    batches_written: AtomicU64,
    batches_synced: AtomicU64,
    batches_per_fsync_max: AtomicU64,
    bytes_written: AtomicU64,
}

/// Everything the handles share.
pub(crate) struct Shared {
    dir: PathBuf,
    config: WalConfig,
    state: RwLock<MemState>,
    /// Read handles of every segment on disk, by sequence number. Readers
    /// clone the `Arc` under the lock and read without it, so a purge that
    /// deletes a file never breaks a read in progress.
    files: RwLock<BTreeMap<u64, Arc<File>>>,
    writer: Mutex<WriterState>,
    group_commit: GroupCommit,
    /// The zero-fill thread, if on.
    prefill: Option<prefill::Prefill>,
    stats: Counters,
    recovery: RecoveryStats,
}

/// The write-ahead log of one node. `Send + Sync`: share it with an `Arc`.
///
/// One process at a time may open a directory (not enforced by a lock file).
#[derive(Clone)]
pub struct Wal {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.shared.dir)
            .finish_non_exhaustive()
    }
}

impl Wal {
    /// Opens (or creates) the WAL in `dir`, replaying what is there, and
    /// starts a new active segment.
    ///
    /// Fails with [`WalError::Corrupt`] (file and offset) on damage other
    /// than a torn tail of the last segment, unless `config.salvage`.
    pub fn open(dir: impl AsRef<Path>, config: WalConfig) -> Result<Wal> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)
            .map_err(|e| WalError::io("creating the wal directory", &dir, e))?;
        let recovered = recovery::recover(&dir, &config)?;
        tracing::info!(
            dir = %dir.display(),
            segments = recovered.stats.segments,
            groups = recovered.state.groups.len(),
            batches = recovered.stats.batches,
            duration_ms = recovered.stats.duration.as_millis() as u64,
            "wal recovered"
        );
        let files = RwLock::new(recovered.files);
        let active =
            writer::new_segment(&dir, &config, recovered.next_seq, &recovered.state, &files)?;
        let prefill = if config.preallocate && config.zero_fill_ahead_bytes > 0 {
            let prefill = prefill::Prefill::start(config.zero_fill_ahead_bytes)
                .map_err(|e| WalError::io("starting the wal zero-fill thread", &dir, e))?;
            prefill.retarget(Some(&active.path), active.written, active.allocated);
            Some(prefill)
        } else {
            None
        };
        let shared = Shared {
            dir: dir.clone(),
            config,
            state: RwLock::new(recovered.state),
            files,
            writer: Mutex::new(WriterState::new(active)),
            group_commit: GroupCommit::new(),
            prefill,
            stats: Counters::default(),
            recovery: recovered.stats,
        };
        Ok(Wal {
            shared: Arc::new(shared),
        })
    }

    /// Writes `batch` atomically; with `sync`, returns once it is durable.
    /// Concurrent calls are merged into one write and one fsync.
    ///
    /// Fails without writing anything if the batch contradicts the log
    /// ([`WalError::InvalidBatch`]: gap, append at or below the compaction
    /// point, compaction beyond the last index) or is too large.
    pub fn write(&self, batch: &WriteBatch, sync: bool) -> Result<()> {
        self.shared.write(batch.clone(), sync)
    }

    /// [`Wal::write`] for a batch the caller is done with: the WAL keeps it
    /// until the write is done instead of copying its operations and
    /// entries first.
    pub fn write_owned(&self, batch: WriteBatch, sync: bool) -> Result<()> {
        self.shared.write(batch, sync)
    }

    /// A read handle over one group's log (the group need not exist yet).
    pub fn group(&self, group: u64) -> GroupLog {
        GroupLog::new(self.shared.clone(), group)
    }

    /// Drops `group`'s entries up to and including `index` (synced). The
    /// term of `index` is kept. No-op if already compacted that far.
    pub fn compact_to(&self, group: u64, index: u64) -> Result<()> {
        let term = {
            let state = self.shared.state.read();
            let Some(g) = state.groups.get(&group) else {
                return Err(WalError::InvalidBatch {
                    group,
                    reason: "compaction of an unknown group".into(),
                });
            };
            if index <= g.truncated_index {
                return Ok(());
            }
            g.term(index).map_err(|e| WalError::InvalidBatch {
                group,
                reason: format!("compaction to {index}: {e}"),
            })?
        };
        let mut batch = WriteBatch::new();
        batch.compact(group, index, term);
        self.write(&batch, true)
    }

    /// Drops everything about `group` (synced).
    pub fn remove_group(&self, group: u64) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.remove_group(group);
        self.write(&batch, true)
    }

    /// Ids of all known groups, sorted.
    pub fn groups(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.shared.state.read().groups.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Deletes segments that no group needs; first rewrites forward the
    /// live entries of small groups that pin old segments, and reports the
    /// large ones (the engine should compact or snapshot them).
    pub fn purge(&self) -> Result<PurgeReport> {
        self.shared.purge()
    }

    /// Counters and sizes.
    pub fn stats(&self) -> WalStats {
        let shared = &self.shared;
        let (groups, indexed_entries, index_bytes, cache_bytes, live_bytes_estimate) = {
            let state = shared.state.read();
            let (mut entries, mut bytes, mut live) = (0, 0, 0);
            for g in state.groups.values() {
                entries += g.entry_count();
                bytes += g.index_bytes() as u64;
                live += g.live_bytes_estimate();
            }
            (
                state.groups.len(),
                entries,
                bytes,
                state.cache_bytes(),
                live,
            )
        };
        let (zero_filled_bytes, appends_into_holes) =
            shared.prefill.as_ref().map_or((0, 0), |p| p.counters());
        let (active_seq, active_written) = {
            let writer = shared.writer.lock();
            (writer.active.seq, writer.active.written)
        };
        let files: Vec<(u64, Arc<File>)> = shared
            .files
            .read()
            .iter()
            .map(|(s, f)| (*s, f.clone()))
            .collect();
        let disk_bytes = files
            .iter()
            .map(|(seq, file)| {
                if *seq == active_seq {
                    active_written
                } else {
                    file.metadata().map_or(0, |m| m.len())
                }
            })
            .sum();
        WalStats {
            fsyncs: shared.stats.fsyncs.load(Ordering::Relaxed),
            batches_written: shared.stats.batches_written.load(Ordering::Relaxed),
            batches_synced: shared.stats.batches_synced.load(Ordering::Relaxed),
            batches_per_fsync_max: shared.stats.batches_per_fsync_max.load(Ordering::Relaxed),
            zero_filled_bytes,
            appends_into_holes,
            bytes_written: shared.stats.bytes_written.load(Ordering::Relaxed),
            segments: files.len(),
            disk_bytes,
            groups,
            indexed_entries,
            index_bytes,
            cache_bytes,
            live_bytes_estimate,
            recovery: shared.recovery.clone(),
        }
    }

    /// Blocks until the zero-fill thread has filled its window ahead of
    /// the append position (at once if zero-filling is off). For tests.
    #[doc(hidden)]
    pub fn wait_zero_filled(&self) {
        if let Some(prefill) = &self.shared.prefill {
            prefill.wait_filled();
        }
    }

    /// Where the next record will be written: the active segment's path and
    /// its written length. For diagnostics and crash tests.
    pub fn write_position(&self) -> (PathBuf, u64) {
        let writer = self.shared.writer.lock();
        (writer.active.path.clone(), writer.active.written)
    }

    /// The directory holding the segments.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }
}
