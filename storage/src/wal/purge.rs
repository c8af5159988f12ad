//! Space reclamation.
//!
//! A segment can be deleted once no group holds a live entry in it:
//! metadata (hard state, configuration, compaction point) never pins a
//! segment because every segment starts with a checkpoint of it.
//!
//! A group that stays behind (idle, never compacted) would pin the segment
//! of its oldest entry forever. Purge keeps the newest sealed segments
//! whose total size is within `max(purge_keep_segments × target,
//! 2 × live bytes)` and rewrites forward every group with an entry older
//! than those: its WHOLE live log is appended again to the active segment
//! (an ordinary entries op at its first index, so replay needs no special
//! case) — if it is at most `rewrite_group_bytes_max` bytes. Larger
//! laggards are reported so the engine compacts them (or sends a snapshot).
//!
//! Bound: right after `purge()`, unless groups were reported,
//! `disk ≤ max(purge_keep_segments × target, 2 × live) + active segment
//! (+ segments the rewrite itself filled)`. Live bytes are estimated per
//! group as live entries × average entry size.

use flotilla_raftgroup::{Entry, Index};

use super::batch::WriteBatch;
use super::error::{Result, WalError};
use super::segment::{segment_path, sync_dir};
use super::Shared;

/// What [`crate::wal::Wal::purge`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Segment files deleted.
    pub segments_deleted: usize,
    /// Segments from this sequence number on were kept as they are; groups
    /// with entries in older ones were rewritten or reported.
    pub keep_from_segment: u64,
    /// Groups whose live entries were rewritten forward.
    pub groups_rewritten: usize,
    /// Entries rewritten.
    pub entries_rewritten: u64,
    /// Their bytes ([`flotilla_raftgroup::Entry::size_bytes`]).
    pub bytes_rewritten: u64,
    /// Groups pinning old segments whose live log is too large to
    /// rewrite: compact them (or snapshot) to release disk.
    pub groups_to_compact: Vec<u64>,
}

impl Shared {
    /// The oldest segment purge keeps without rewriting anything: walking
    /// back from the active segment, sealed segments are kept while their
    /// total stays within `max(purge_keep_segments × target, 2 × live)`.
    /// Rewriting is thus only paid once at least twice the live data was
    /// written since a laggard's entry: write amplification stays ≤ 1.5.
    fn keep_from(&self, active_seq: u64, live_bytes: u64) -> u64 {
        let budget = (self.config.purge_keep_segments * self.config.segment_bytes_target)
            .max(live_bytes.saturating_mul(2));
        let files = self.files.read();
        let mut kept = 0u64;
        let mut keep_from = active_seq;
        for (seq, file) in files.range(..active_seq).rev() {
            let len = file
                .metadata()
                .map_or(self.config.segment_bytes_target, |m| m.len());
            if kept + len > budget {
                break;
            }
            kept += len;
            keep_from = *seq;
        }
        keep_from
    }

    pub(crate) fn purge(&self) -> Result<PurgeReport> {
        let mut report = PurgeReport::default();
        // Holding the writer lock: no batch can change a group between
        // reading its entries and writing them back.
        let mut writer = self.writer.lock();
        if let Some(reason) = &writer.poisoned {
            return Err(WalError::Poisoned(reason.clone()));
        }
        let active_seq = writer.active.seq;
        let (laggards, keep_from) = {
            let state = self.state.read();
            let live_bytes: u64 = state.groups.values().map(|g| g.live_bytes_estimate()).sum();
            let keep_from = self.keep_from(active_seq, live_bytes);
            let mut out: Vec<(u64, Index, Index)> = state
                .groups
                .iter()
                .filter(|(_, g)| {
                    g.oldest_file_seq()
                        .is_some_and(|seq| u64::from(seq) < keep_from)
                })
                .map(|(id, g)| (*id, g.first_index(), g.last_index()))
                .collect();
            out.sort_unstable();
            (out, keep_from)
        };
        report.keep_from_segment = keep_from;
        let mut batch = WriteBatch::new();
        let limit = self.config.rewrite_group_bytes_max;
        for (group, first, last) in laggards {
            let entries = self
                .read_entries(group, first, last + 1, limit)
                .map_err(|e| WalError::InvalidBatch {
                    group,
                    reason: format!("reading entries to rewrite: {e}"),
                })?;
            let bytes: u64 = entries.iter().map(Entry::size_bytes).sum();
            if entries.len() as u64 != last + 1 - first || bytes > limit {
                report.groups_to_compact.push(group);
                continue;
            }
            if batch.size_bytes() + bytes + 64 > self.config.batch_bytes_max {
                self.commit_rewrite(&mut writer, std::mem::take(&mut batch))?;
            }
            batch.append(group, &entries)?;
            report.groups_rewritten += 1;
            report.entries_rewritten += entries.len() as u64;
            report.bytes_rewritten += bytes;
        }
        if !batch.is_empty() {
            self.commit_rewrite(&mut writer, batch)?;
        }
        // Everything below the oldest segment still holding a live entry
        // can go (the active segment always stays).
        let needed_from = {
            let state = self.state.read();
            state
                .groups
                .values()
                .filter_map(|g| g.oldest_file_seq())
                .map(u64::from)
                .min()
                .unwrap_or(writer.active.seq)
                .min(writer.active.seq)
        };
        let doomed: Vec<u64> = self
            .files
            .read()
            .range(..needed_from)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in &doomed {
            let path = segment_path(&self.dir, *seq);
            std::fs::remove_file(&path)
                .map_err(|e| WalError::io("deleting a purged segment", &path, e))?;
            self.files.write().remove(seq);
        }
        if !doomed.is_empty() {
            sync_dir(&self.dir)?;
        }
        report.segments_deleted = doomed.len();
        metrics::counter!("flotilla_wal_segments_purged_total").increment(doomed.len() as u64);
        metrics::counter!("flotilla_wal_entries_rewritten_total")
            .increment(report.entries_rewritten);
        if !report.groups_to_compact.is_empty() {
            tracing::warn!(
                groups = report.groups_to_compact.len(),
                "wal purge: groups too large to rewrite pin old segments; compact them"
            );
        }
        Ok(report)
    }

    fn commit_rewrite(
        &self,
        writer: &mut parking_lot::MutexGuard<'_, super::writer::WriterState>,
        batch: WriteBatch,
    ) -> Result<()> {
        // Synced: the old copies are deleted right after.
        let pending = self.prepare(batch, true, false)?;
        self.commit_locked(writer, std::slice::from_ref(&pending))
            .into_iter()
            .next()
            .unwrap_or(Ok(()))
    }
}
