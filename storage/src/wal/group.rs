//! [`GroupLog`]: the [`LogStore`] of one group over the shared WAL.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use flotilla_raftgroup::{
    ConfState, Entry, HardState, Index, LogStore, Snapshot, SnapshotMeta, StoreError, Term,
};

use super::batch::read_entries;
use super::format::{read_record, read_u32, RecordRead, RECORD_HEADER_LEN};
use super::index::{GroupState, Run};
use super::segment::segment_path;
use super::Shared;

/// Read access to one group's persisted log. Cheap to create and clone
/// (an `Arc` and an id); every call reads the shared index under a read
/// lock, and disk reads happen without any lock held.
///
/// `snapshot()` builds a snapshot *descriptor* from the stored truncated
/// state (index, term of the last compaction or installed snapshot, and the
/// stored configuration) with empty `data`: the engine streams the state
/// machine itself from RocksDB. When nothing at or beyond the requested
/// index is recorded yet it answers
/// [`StoreError::SnapshotTemporarilyUnavailable`].
///
/// ```
/// use flotilla_raftgroup::{Entry, LogStore};
/// use flotilla_storage::wal::{Wal, WalConfig, WriteBatch};
///
/// let dir = tempfile::tempdir().unwrap();
/// let wal = Wal::open(dir.path(), WalConfig::small_for_tests()).unwrap();
/// let mut batch = WriteBatch::new();
/// batch.append(3, &[Entry::new(2, 1, "x"), Entry::new(2, 2, "y")]).unwrap();
/// wal.write(&batch, true).unwrap();
/// let log = wal.group(3);
/// assert_eq!((log.first_index().unwrap(), log.last_index().unwrap()), (1, 2));
/// assert_eq!(log.term(2).unwrap(), 2);
/// assert_eq!(log.entries(1, 3, 0).unwrap().len(), 1); // budget: at least one
/// ```
#[derive(Clone)]
pub struct GroupLog {
    shared: Arc<Shared>,
    group: u64,
}

impl std::fmt::Debug for GroupLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupLog")
            .field("group", &self.group)
            .finish()
    }
}

impl GroupLog {
    pub(crate) fn new(shared: Arc<Shared>, group: u64) -> Self {
        GroupLog { shared, group }
    }

    /// The group id.
    pub fn id(&self) -> u64 {
        self.group
    }

    /// The last persisted hard state (default if none).
    pub fn hard_state(&self) -> HardState {
        self.with(|g| g.hard_state)
    }

    /// The last persisted configuration (default if none).
    pub fn conf_state(&self) -> ConfState {
        self.with(|g| g.conf_state.clone())
    }

    /// `(index, term)` of the compaction point / installed snapshot.
    pub fn truncated_state(&self) -> (Index, Term) {
        self.with(|g| (g.truncated_index, g.truncated_term))
    }

    fn with<T>(&self, f: impl FnOnce(&GroupState) -> T) -> T {
        let state = self.shared.state.read();
        match state.groups.get(&self.group) {
            Some(g) => f(g),
            None => f(&GroupState::default()),
        }
    }
}

impl LogStore for GroupLog {
    fn initial_state(&self) -> Result<(HardState, ConfState), StoreError> {
        Ok(self.with(|g| (g.hard_state, g.conf_state.clone())))
    }

    fn entries(&self, low: Index, high: Index, max_bytes: u64) -> Result<Vec<Entry>, StoreError> {
        self.shared.read_entries(self.group, low, high, max_bytes)
    }

    fn term(&self, index: Index) -> Result<Term, StoreError> {
        self.with(|g| g.term(index))
    }

    fn first_index(&self) -> Result<Index, StoreError> {
        Ok(self.with(|g| g.first_index()))
    }

    fn last_index(&self) -> Result<Index, StoreError> {
        Ok(self.with(|g| g.last_index()))
    }

    fn snapshot(&self, request_index: Index) -> Result<Snapshot, StoreError> {
        self.with(|g| {
            if g.truncated_index == 0 || g.truncated_index < request_index {
                return Err(StoreError::SnapshotTemporarilyUnavailable);
            }
            Ok(Snapshot {
                meta: SnapshotMeta {
                    index: g.truncated_index,
                    term: g.truncated_term,
                    conf_state: g.conf_state.clone(),
                },
                data: Bytes::new(),
            })
        })
    }
}

impl Shared {
    /// Entries `[low, high)` of `group` within `max_bytes` (at least one),
    /// from the cache when it holds them all, else from disk.
    pub(crate) fn read_entries(
        &self,
        group: u64,
        low: Index,
        high: Index,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StoreError> {
        let mut out = Vec::new();
        let plan: Vec<(Run, Arc<File>)> = {
            let state = self.state.read();
            let empty = GroupState::default();
            let g = state.groups.get(&group).unwrap_or(&empty);
            if low < g.first_index() {
                return Err(StoreError::Compacted);
            }
            if high > g.last_index() + 1 {
                return Err(StoreError::Unavailable);
            }
            if low >= high {
                return Ok(out);
            }
            if let Some(cached) = g.cached(low, high) {
                let mut used = 0u64;
                for entry in cached {
                    used += entry.size_bytes();
                    if !out.is_empty() && used > max_bytes {
                        break;
                    }
                    out.push(entry.clone());
                }
                return Ok(out);
            }
            let runs = g.runs_in(low, high);
            let files = self.files.read();
            let mut plan = Vec::with_capacity(runs.len());
            for run in runs {
                let Some(file) = files.get(&u64::from(run.file_seq)) else {
                    return Err(StoreError::Other(format!(
                        "group {group}: segment {} of index {} is missing",
                        run.file_seq, run.first_index
                    )));
                };
                plan.push((run, file.clone()));
            }
            plan
        };
        let mut budget = max_bytes;
        let mut cached: Option<((u32, u32), Bytes)> = None;
        for (run, file) in plan {
            let key = (run.file_seq, run.record_offset);
            let payload = match &cached {
                Some((at, payload)) if *at == key => payload.clone(),
                _ => {
                    let payload = self
                        .read_payload(&file, u64::from(run.file_seq), u64::from(run.record_offset))
                        .map_err(|e| StoreError::Other(e.to_string()))?;
                    cached = Some((key, payload.clone()));
                    payload
                }
            };
            let run_low = low.max(run.first_index);
            let run_high = high.min(run.first_index + u64::from(run.count));
            let first_call = out.is_empty();
            let more = read_entries(
                &payload,
                run.op_offset,
                run_low,
                run_high,
                &mut out,
                &mut budget,
                first_call,
            )
            .map_err(|reason| {
                StoreError::Other(format!(
                    "{} offset {}: {reason}",
                    segment_path(&self.dir, u64::from(run.file_seq)).display(),
                    run.record_offset
                ))
            })?;
            if !more {
                break;
            }
        }
        Ok(out)
    }

    /// Reads and verifies the record at `offset` of segment `seq`; returns
    /// its uncompressed payload.
    fn read_payload(&self, file: &File, seq: u64, offset: u64) -> super::Result<Bytes> {
        let path = || segment_path(&self.dir, seq);
        let mut header = [0u8; RECORD_HEADER_LEN];
        file.read_exact_at(&mut header, offset)
            .map_err(|e| super::WalError::io("reading a record header", path(), e))?;
        let stored_len = read_u32(&header[4..8]) as usize;
        if stored_len > self.config.record_bytes_max {
            return Err(super::WalError::corrupt(
                path(),
                offset,
                "record length above the maximum",
            ));
        }
        let mut buf = vec![0u8; RECORD_HEADER_LEN + stored_len];
        file.read_exact_at(&mut buf, offset)
            .map_err(|e| super::WalError::io("reading a record", path(), e))?;
        match read_record(&buf, 0, seq, self.config.record_bytes_max) {
            RecordRead::Record { payload, .. } => Ok(Bytes::from(payload.into_owned())),
            RecordRead::End => Err(super::WalError::corrupt(
                path(),
                offset,
                "index points at an empty record",
            )),
            RecordRead::Bad { reason } => Err(super::WalError::corrupt(path(), offset, reason)),
        }
    }
}
