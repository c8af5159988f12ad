//! Recovery on open: replay every segment in order into a fresh index.
//!
//! - Every segment starts with a checkpoint (metadata of all groups); only
//!   the oldest one is loaded, the later ones are redundant.
//! - The oldest segments may have been purged. A group's replayed log can
//!   then start with a suffix of what it held before; purge guarantees that
//!   anything it needed from a purged segment was compacted or rewritten
//!   later, so replaying the remaining ops (with the lenient entries rule in
//!   `index.rs`) yields exactly the live state. A final check verifies that
//!   every group's entries start right after its compaction point.
//! - A damaged record in the LAST segment with no valid record after it is
//!   a torn write: the segment is cut after the last complete batch. Any
//!   other damage is corruption: open fails naming the file and offset,
//!   unless `salvage` is set, which cuts the log at the first bad record.
//!
//! Known limit: unsynced writes (`sync = false`) may reach the disk out of
//! order; a crash can then leave a hole followed by a valid record in the
//! last segment, which is reported as corruption (use `salvage`).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::batch::decode_views;
use super::error::{Result, WalError};
use super::format::{
    decode_file_header, read_record, RecordKind, RecordRead, FILE_HEADER_LEN, RECORD_ALIGN,
};
use super::index::{MemState, RecordLocation};
use super::segment::{list_segments, sync_dir};
use super::WalConfig;

/// What recovery found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryStats {
    /// Segment files replayed.
    pub segments: usize,
    /// Bytes of segment files read.
    pub bytes_read: u64,
    /// Batch records replayed.
    pub batches: u64,
    /// Torn tails cut off the last segment (0 or 1).
    pub torn_tails_truncated: u64,
    /// Bytes cut off by tail truncation or salvage.
    pub bytes_truncated: u64,
    /// Segments deleted because they held no complete record (or, in
    /// salvage mode, came after the first bad record).
    pub segments_dropped: u64,
    /// Records skipped by salvage mode.
    pub salvaged: bool,
    /// Wall time of the replay.
    pub duration: Duration,
}

pub(crate) struct Recovered {
    pub state: MemState,
    pub files: BTreeMap<u64, Arc<File>>,
    pub next_seq: u64,
    pub stats: RecoveryStats,
}

enum SegmentEnd {
    /// Replayed to its end.
    Clean,
    /// Cut at `offset` (torn tail or salvage); later segments are dropped
    /// in salvage mode.
    Cut { offset: u64, stop: bool },
    /// Held no complete record: delete it.
    Empty,
}

pub(crate) fn recover(dir: &Path, config: &WalConfig) -> Result<Recovered> {
    let started = Instant::now();
    let segments = list_segments(dir)?;
    let mut state = MemState::new(config.cache_bytes_max);
    let mut files = BTreeMap::new();
    let mut stats = RecoveryStats::default();
    let mut checkpoint_loaded = false;
    let mut next_seq = segments.last().map_or(1, |&(seq, _)| seq + 1);
    let count = segments.len();
    let mut stop_at = None;
    for (position, (seq, path)) in segments.iter().enumerate() {
        let is_last = position + 1 == count;
        if *seq > u64::from(u32::MAX) {
            return Err(WalError::corrupt(
                path,
                0,
                "segment sequence number above u32",
            ));
        }
        let buf = std::fs::read(path).map_err(|e| WalError::io("reading a segment", path, e))?;
        stats.bytes_read += buf.len() as u64;
        let end = replay_segment(
            *seq,
            path,
            &buf,
            is_last,
            config,
            &mut state,
            &mut checkpoint_loaded,
            &mut stats,
        )?;
        match end {
            SegmentEnd::Clean => {}
            SegmentEnd::Empty => {
                tracing::warn!(path = %path.display(), "wal: dropping a segment without a complete record");
                std::fs::remove_file(path)
                    .map_err(|e| WalError::io("removing an empty segment", path, e))?;
                sync_dir(dir)?;
                stats.segments_dropped += 1;
                stats.bytes_truncated += buf.len() as u64;
                if !is_last {
                    // Only salvage gets here for a middle segment.
                    stop_at = Some(position + 1);
                    break;
                }
                continue;
            }
            SegmentEnd::Cut { offset, stop } => {
                cut_file(path, offset)?;
                stats.bytes_truncated += buf.len() as u64 - offset;
                if stop {
                    stop_at = Some(position + 1);
                    files.insert(*seq, open_read(path)?);
                    stats.segments += 1;
                    break;
                }
            }
        }
        files.insert(*seq, open_read(path)?);
        stats.segments += 1;
    }
    if let Some(from) = stop_at {
        for (seq, path) in &segments[from..] {
            tracing::warn!(seq, path = %path.display(), "wal salvage: dropping segment after the first bad record");
            std::fs::remove_file(path)
                .map_err(|e| WalError::io("removing a segment (salvage)", path, e))?;
            stats.segments_dropped += 1;
        }
        sync_dir(dir)?;
        if let Some((seq, _)) = segments.get(from) {
            next_seq = next_seq.max(*seq);
        }
    }
    for (group, g) in &state.groups {
        if let Some(first) = g.runs_in(0, u64::MAX).first() {
            if first.first_index != g.truncated_index + 1 {
                return Err(WalError::corrupt(
                    dir,
                    0,
                    format!(
                        "group {group}: recovered entries start at {} but compaction point is {}",
                        first.first_index, g.truncated_index
                    ),
                ));
            }
        }
    }
    stats.duration = started.elapsed();
    Ok(Recovered {
        state,
        files,
        next_seq,
        stats,
    })
}

#[allow(clippy::too_many_arguments)]
fn replay_segment(
    seq: u64,
    path: &Path,
    buf: &[u8],
    is_last: bool,
    config: &WalConfig,
    state: &mut MemState,
    checkpoint_loaded: &mut bool,
    stats: &mut RecoveryStats,
) -> Result<SegmentEnd> {
    // A bad header: a torn creation if it is the last segment, else corruption.
    match decode_file_header(buf) {
        Ok(found) if found == seq => {}
        Ok(found) => {
            let reason = format!("header says sequence {found}, file name says {seq}");
            return damaged(path, 0, reason, is_last, config, stats, true);
        }
        Err(reason) => return damaged(path, 0, reason, is_last, config, stats, true),
    }
    let mut pos = FILE_HEADER_LEN;
    let mut first_record = true;
    loop {
        match read_record(buf, pos, seq, config.record_bytes_max) {
            RecordRead::End => {
                if buf[pos.min(buf.len())..].iter().any(|&b| b != 0) {
                    // Zeros then data: a zeroed block in the middle.
                    if !(is_last && find_valid_record(buf, pos, seq, config).is_none()) {
                        return damaged(
                            path,
                            pos as u64,
                            "zeroed record header before more data".into(),
                            false,
                            config,
                            stats,
                            first_record,
                        );
                    }
                }
                if first_record {
                    return if is_last || config.salvage {
                        Ok(SegmentEnd::Empty)
                    } else {
                        Err(WalError::corrupt(
                            path,
                            pos as u64,
                            "segment without a checkpoint record",
                        ))
                    };
                }
                if is_last && (pos as u64) < buf.len() as u64 {
                    // Preallocated zero tail of the active segment.
                    return Ok(SegmentEnd::Cut {
                        offset: pos as u64,
                        stop: false,
                    });
                }
                return Ok(SegmentEnd::Clean);
            }
            RecordRead::Bad { reason } => {
                let torn = is_last && find_valid_record(buf, pos, seq, config).is_none();
                return damaged(path, pos as u64, reason, torn, config, stats, first_record);
            }
            RecordRead::Record {
                kind,
                payload,
                next,
            } => {
                match (kind, first_record) {
                    (RecordKind::Checkpoint, true) => {
                        if !*checkpoint_loaded {
                            state
                                .load_checkpoint(&payload)
                                .map_err(|reason| WalError::corrupt(path, pos as u64, reason))?;
                            *checkpoint_loaded = true;
                        }
                    }
                    (RecordKind::Batch, false) => {
                        let views = decode_views(&payload)
                            .map_err(|reason| WalError::corrupt(path, pos as u64, reason))?;
                        let location = RecordLocation {
                            file_seq: seq as u32,
                            record_offset: pos as u32,
                        };
                        for view in &views {
                            state.apply_view(view, location);
                        }
                        stats.batches += 1;
                    }
                    (kind, _) => {
                        return Err(WalError::corrupt(
                            path,
                            pos as u64,
                            format!("unexpected {kind:?} record"),
                        ));
                    }
                }
                first_record = false;
                pos = next;
            }
        }
    }
}

/// Handles a damaged spot at `offset`: cut there if it is a torn tail (or
/// in salvage mode), else fail naming the file and offset.
#[allow(clippy::too_many_arguments)]
fn damaged(
    path: &Path,
    offset: u64,
    reason: String,
    torn: bool,
    config: &WalConfig,
    stats: &mut RecoveryStats,
    nothing_before: bool,
) -> Result<SegmentEnd> {
    if torn {
        tracing::warn!(path = %path.display(), offset, %reason, "wal: truncating torn tail of the last segment");
        metrics::counter!("flotilla_wal_torn_tails_truncated_total").increment(1);
        stats.torn_tails_truncated += 1;
        return Ok(if nothing_before {
            SegmentEnd::Empty
        } else {
            SegmentEnd::Cut {
                offset,
                stop: false,
            }
        });
    }
    if config.salvage {
        tracing::error!(path = %path.display(), offset, %reason, "wal salvage: cutting the log at a corrupt record");
        metrics::counter!("flotilla_wal_salvaged_total").increment(1);
        stats.salvaged = true;
        return Ok(if nothing_before {
            SegmentEnd::Empty
        } else {
            SegmentEnd::Cut { offset, stop: true }
        });
    }
    Err(WalError::corrupt(path, offset, reason))
}

/// A valid record somewhere after the damaged one at `pos` means the damage
/// is not a torn tail. Records are 8-byte aligned, and a header is only
/// checksummed when its type and reserved bytes look right, so the scan is
/// linear in practice.
fn find_valid_record(buf: &[u8], pos: usize, seq: u64, config: &WalConfig) -> Option<usize> {
    let mut at = pos + RECORD_ALIGN;
    while at + 16 <= buf.len() {
        let header = &buf[at..at + 16];
        let plausible = matches!(header[8] & 0x7f, 1 | 2) && header[9..12] == [0, 0, 0];
        if plausible {
            if let RecordRead::Record { .. } = read_record(buf, at, seq, config.record_bytes_max) {
                return Some(at);
            }
        }
        at += RECORD_ALIGN;
    }
    None
}

fn cut_file(path: &PathBuf, offset: u64) -> Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| WalError::io("opening a segment to truncate it", path, e))?;
    file.set_len(offset)
        .and_then(|()| file.sync_all())
        .map_err(|e| WalError::io("truncating a segment", path, e))
}

fn open_read(path: &Path) -> Result<Arc<File>> {
    File::open(path)
        .map(Arc::new)
        .map_err(|e| WalError::io("opening a segment", path, e))
}
