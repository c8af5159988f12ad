//! How the consensus core reads the persisted log: a small trait that the
//! storage crate implements over its shared WAL, and an in-memory
//! implementation for tests and simulations.
//!
//! The core only reads through this trait. Writes happen outside: the caller
//! persists what a `Ready` hands out and then calls `advance`.

use crate::types::{ConfState, Entry, HardState, Index, Snapshot, SnapshotMeta, Term};

/// Index of the bootstrap snapshot every initial replica of a group starts
/// from. The initial membership lives in that snapshot rather than in log
/// entries, so a replica created empty later (index 0) can never replay the
/// log from the start without it: the leader finds index 1 compacted and
/// sends a snapshot, which carries the configuration.
pub const BOOTSTRAP_INDEX: Index = 5;
/// Term of the bootstrap snapshot.
pub const BOOTSTRAP_TERM: Term = 5;

/// Why a log read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The requested index was compacted away; a snapshot is needed.
    #[error("log compacted: requested index is below the first index")]
    Compacted,
    /// The requested index is beyond the last index.
    #[error("log index unavailable: beyond the last index")]
    Unavailable,
    /// The snapshot is being generated; ask again later.
    #[error("snapshot temporarily unavailable")]
    SnapshotTemporarilyUnavailable,
    /// The storage is broken (I/O error, corruption). The group cannot go on.
    #[error("storage failure: {0}")]
    Other(String),
}

/// Read access to the persisted log of one group.
///
/// Indexes: the log holds entries `first_index()..=last_index()`. The entry
/// just before `first_index()` is known only by its term (it is the
/// snapshot's or the compaction point's), so `term(first_index() - 1)` must
/// succeed. An empty log has `last_index() == first_index() - 1`.
pub trait LogStore {
    /// Hard state and configuration to start from after a restart.
    fn initial_state(&self) -> Result<(HardState, ConfState), StoreError>;

    /// Entries in `[low, high)`, stopping early once their total
    /// [`Entry::size_bytes`] exceeds `max_bytes` (always at least one entry
    /// when the range is not empty).
    fn entries(&self, low: Index, high: Index, max_bytes: u64) -> Result<Vec<Entry>, StoreError>;

    /// Term of the entry at `index` (`first_index() - 1` included).
    fn term(&self, index: Index) -> Result<Term, StoreError>;

    /// First index still held in the log.
    fn first_index(&self) -> Result<Index, StoreError>;

    /// Last index held in the log.
    fn last_index(&self) -> Result<Index, StoreError>;

    /// A snapshot at or beyond `request_index`, or
    /// [`StoreError::SnapshotTemporarilyUnavailable`] while one is built.
    fn snapshot(&self, request_index: Index) -> Result<Snapshot, StoreError>;
}

/// The persisted log of one group held in memory. Used by tests, by the
/// deterministic simulator and by the in-memory benchmark.
#[derive(Debug, Clone, Default)]
pub struct MemStore {
    hard_state: HardState,
    /// Configuration as of the applied index (what a restart starts from).
    conf_state: ConfState,
    snapshot: Snapshot,
    /// `entries[0]` has index `snapshot.meta.index + 1`.
    entries: Vec<Entry>,
}

impl MemStore {
    /// A store for a new group whose initial voters are `voters`: it starts
    /// from the bootstrap snapshot (see [`BOOTSTRAP_INDEX`]).
    pub fn new_with_voters(voters: impl IntoIterator<Item = u64>) -> Self {
        let conf_state = ConfState::with_voters(voters);
        MemStore {
            hard_state: HardState {
                term: BOOTSTRAP_TERM,
                vote: 0,
                commit: BOOTSTRAP_INDEX,
            },
            snapshot: Snapshot {
                meta: SnapshotMeta {
                    index: BOOTSTRAP_INDEX,
                    term: BOOTSTRAP_TERM,
                    conf_state: conf_state.clone(),
                },
                data: bytes::Bytes::new(),
            },
            conf_state,
            entries: Vec::new(),
        }
    }

    /// The hard state last set.
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// Persist a hard state.
    pub fn set_hard_state(&mut self, hard_state: HardState) {
        self.hard_state = hard_state;
    }

    /// Persist the configuration reached by applying entries (or a
    /// snapshot); it is what [`LogStore::initial_state`] returns.
    pub fn set_conf_state(&mut self, conf_state: ConfState) {
        self.conf_state = conf_state;
    }

    /// The last snapshot installed or created.
    pub fn last_snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// All entries held, in order.
    pub fn all_entries(&self) -> &[Entry] {
        &self.entries
    }

    fn offset(&self) -> Index {
        self.snapshot.meta.index + 1
    }

    /// Persist entries. Entries that overlap held ones replace them and
    /// everything after them (a new leader overwrote an uncommitted suffix).
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), StoreError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let offset = self.offset();
        if first.index < offset {
            // Entries at or below the snapshot are already covered by it.
            let skip = (offset - first.index) as usize;
            if skip >= entries.len() {
                return Ok(());
            }
            return self.append(&entries[skip..]);
        }
        let position = (first.index - offset) as usize;
        if position > self.entries.len() {
            return Err(StoreError::Other(format!(
                "append leaves a gap: first new index {} but last index {}",
                first.index,
                offset + self.entries.len() as u64 - 1
            )));
        }
        self.entries.truncate(position);
        self.entries.extend_from_slice(entries);
        Ok(())
    }

    /// Install a snapshot, dropping every entry it covers. Entries after it
    /// are kept only if the log agrees with the snapshot at its index.
    pub fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StoreError> {
        let index = snapshot.meta.index;
        if index <= self.snapshot.meta.index {
            return Ok(());
        }
        let keeps_tail = matches!(self.term(index), Ok(term) if term == snapshot.meta.term);
        if keeps_tail {
            let drop = (index + 1 - self.offset()) as usize;
            self.entries.drain(..drop);
        } else {
            self.entries.clear();
        }
        if self.hard_state.commit < index {
            self.hard_state.commit = index;
        }
        if self.hard_state.term < snapshot.meta.term {
            self.hard_state.term = snapshot.meta.term;
            self.hard_state.vote = 0;
        }
        self.conf_state = snapshot.meta.conf_state.clone();
        self.snapshot = snapshot;
        Ok(())
    }

    /// Drop entries up to and including `index`, remembering their last
    /// term. The caller must only compact applied entries; `data` becomes
    /// the snapshot data (state machine at `index`) and `conf_state` the
    /// configuration at `index`.
    pub fn compact(
        &mut self,
        index: Index,
        conf_state: ConfState,
        data: bytes::Bytes,
    ) -> Result<(), StoreError> {
        if index <= self.snapshot.meta.index {
            return Ok(());
        }
        if index > self.last_index()? {
            return Err(StoreError::Unavailable);
        }
        let term = self.term(index)?;
        let drop = (index + 1 - self.offset()) as usize;
        self.entries.drain(..drop);
        self.snapshot = Snapshot {
            meta: SnapshotMeta {
                index,
                term,
                conf_state,
            },
            data,
        };
        Ok(())
    }
}

impl LogStore for MemStore {
    fn initial_state(&self) -> Result<(HardState, ConfState), StoreError> {
        Ok((self.hard_state, self.conf_state.clone()))
    }

    fn entries(&self, low: Index, high: Index, max_bytes: u64) -> Result<Vec<Entry>, StoreError> {
        let offset = self.offset();
        if low < offset {
            return Err(StoreError::Compacted);
        }
        if high > self.last_index()? + 1 {
            return Err(StoreError::Unavailable);
        }
        let mut out = Vec::new();
        let mut bytes = 0u64;
        for entry in &self.entries[(low - offset) as usize..(high - offset) as usize] {
            bytes += entry.size_bytes();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(entry.clone());
        }
        Ok(out)
    }

    fn term(&self, index: Index) -> Result<Term, StoreError> {
        let snap_index = self.snapshot.meta.index;
        if index == snap_index {
            return Ok(self.snapshot.meta.term);
        }
        if index < snap_index {
            return Err(StoreError::Compacted);
        }
        match self.entries.get((index - snap_index - 1) as usize) {
            Some(entry) => Ok(entry.term),
            None => Err(StoreError::Unavailable),
        }
    }

    fn first_index(&self) -> Result<Index, StoreError> {
        Ok(self.offset())
    }

    fn last_index(&self) -> Result<Index, StoreError> {
        Ok(self.snapshot.meta.index + self.entries.len() as u64)
    }

    fn snapshot(&self, _request_index: Index) -> Result<Snapshot, StoreError> {
        Ok(self.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
        range.map(|i| Entry::new(term, i, vec![i as u8])).collect()
    }

    #[test]
    fn append_overwrites_suffix_and_refuses_gaps() {
        let mut store = MemStore::default();
        store.append(&entries(1..=5, 1)).unwrap();
        store.append(&entries(4..=6, 2)).unwrap();
        assert_eq!(store.last_index().unwrap(), 6);
        assert_eq!(store.term(3).unwrap(), 1);
        assert_eq!(store.term(4).unwrap(), 2);
        assert!(store.append(&entries(9..=9, 2)).is_err());
    }

    #[test]
    fn compact_keeps_term_of_compaction_point() {
        let mut store = MemStore::default();
        store.append(&entries(1..=10, 3)).unwrap();
        store
            .compact(6, ConfState::with_voters([1]), bytes::Bytes::new())
            .unwrap();
        assert_eq!(store.first_index().unwrap(), 7);
        assert_eq!(store.term(6).unwrap(), 3);
        assert_eq!(store.term(5), Err(StoreError::Compacted));
        assert_eq!(store.entries(5, 8, u64::MAX), Err(StoreError::Compacted));
        assert_eq!(store.entries(7, 11, u64::MAX).unwrap().len(), 4);
        assert_eq!(store.entries(7, 11, 1).unwrap().len(), 1);
    }
}
