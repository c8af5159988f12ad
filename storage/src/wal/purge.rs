//! Space reclamation.
//!
//! A segment can be deleted once no group holds a live entry in it:
//! metadata (hard state, configuration, compaction point) never pins a
//! segment because every segment starts with a checkpoint of it.
//!
//! A group that stays behind (idle, never compacted) would pin the segment
//! of its oldest entry forever. Purge therefore rewrites forward every
//! group whose oldest entry is older than the newest
//! `purge_keep_segments` sealed segments: its WHOLE live log is appended
//! again to the active segment (an ordinary entries op at its first index,
//! so replay needs no special case) — if it is at most
//! `rewrite_group_bytes_max` bytes. Larger laggards are reported so the
//! engine compacts them (or sends a snapshot).
//!
//! Bound: right after `purge()`, the segments on disk are the active one,
//! the `purge_keep_segments` before it, plus those pinned by reported
//! groups. With the default 128 MiB segments and 2 kept segments that is
//! at most ~384 MiB + one record, whatever the live data; the rewrite costs
//! at most the live bytes of lagging groups per purge.

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
    pub(crate) fn purge(&self) -> Result<PurgeReport> {
        let mut report = PurgeReport::default();
        // Holding the writer lock: no batch can change a group between
        // reading its entries and writing them back.
        let mut writer = self.writer.lock();
        if let Some(reason) = &writer.poisoned {
            return Err(WalError::Poisoned(reason.clone()));
        }
        let active_seq = writer.active.seq;
        let keep_from = active_seq.saturating_sub(self.config.purge_keep_segments);
        let laggards: Vec<(u64, Index, Index)> = {
            let state = self.state.read();
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
            out
        };
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
                self.commit_rewrite(&mut writer, &batch)?;
                batch.clear();
            }
            batch.append(group, &entries)?;
            report.groups_rewritten += 1;
            report.entries_rewritten += entries.len() as u64;
            report.bytes_rewritten += bytes;
        }
        if !batch.is_empty() {
            self.commit_rewrite(&mut writer, &batch)?;
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
        batch: &WriteBatch,
    ) -> Result<()> {
        // Synced: the old copies are deleted right after.
        let pending = self.prepare(batch, true, false)?;
        self.commit_locked(writer, std::slice::from_ref(&pending))
            .into_iter()
            .next()
            .unwrap_or(Ok(()))
    }
}
