//! The Raft log as the core sees it: the persisted part (read through
//! [`LogStore`]) followed by an unstable part (entries and possibly a
//! snapshot that a `Ready` handed out and the caller has not yet confirmed
//! as persisted).
//!
//! Indexes: `committed` ≥ `applied` hold; entries are handed to apply only
//! once they are both committed and persisted locally, so a state machine
//! never runs ahead of the log it restarts from.

use crate::store::{LogStore, StoreError};
use crate::types::{Entry, Index, Snapshot, Term};

/// Entries (and a snapshot) not yet confirmed persisted.
#[derive(Debug, Default)]
struct Unstable {
    snapshot: Option<Snapshot>,
    /// `entries[0].index == offset`.
    entries: Vec<Entry>,
    offset: Index,
}

impl Unstable {
    fn last_index(&self) -> Option<Index> {
        if let Some(last) = self.entries.last() {
            return Some(last.index);
        }
        self.snapshot.as_ref().map(|s| s.meta.index)
    }

    fn term(&self, index: Index) -> Option<Term> {
        if index >= self.offset {
            return self
                .entries
                .get((index - self.offset) as usize)
                .map(|e| e.term);
        }
        match &self.snapshot {
            Some(s) if s.meta.index == index => Some(s.meta.term),
            _ => None,
        }
    }

    fn truncate_and_append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else {
            return;
        };
        let after = self.offset + self.entries.len() as u64;
        if first.index == after {
            self.entries.extend_from_slice(entries);
        } else if first.index <= self.offset {
            // Replaces everything unstable (and, once persisted, the
            // persisted entries from `first.index` on).
            self.offset = first.index;
            self.entries = entries.to_vec();
        } else {
            self.entries.truncate((first.index - self.offset) as usize);
            self.entries.extend_from_slice(entries);
        }
    }
}

pub(crate) struct RaftLog<S> {
    pub(crate) store: S,
    unstable: Unstable,
    pub(crate) committed: Index,
    /// Highest index handed to the application to apply.
    pub(crate) applying: Index,
    /// Highest index the application confirmed applied.
    pub(crate) applied: Index,
}

impl<S: LogStore> RaftLog<S> {
    pub(crate) fn new(store: S, committed: Index, applied: Index) -> Result<Self, StoreError> {
        let first = store.first_index()?;
        let last = store.last_index()?;
        // Everything up to the snapshot is applied by definition; commit
        // can never be below what was applied.
        let applied = applied.max(first - 1);
        let committed = committed.max(applied).min(last.max(first - 1));
        Ok(RaftLog {
            store,
            unstable: Unstable {
                snapshot: None,
                entries: Vec::new(),
                offset: last + 1,
            },
            committed,
            applying: applied,
            applied,
        })
    }

    pub(crate) fn first_index(&self) -> Result<Index, StoreError> {
        match &self.unstable.snapshot {
            Some(s) => Ok(s.meta.index + 1),
            None => self.store.first_index(),
        }
    }

    pub(crate) fn last_index(&self) -> Result<Index, StoreError> {
        match self.unstable.last_index() {
            Some(index) => Ok(index),
            None => self.store.last_index(),
        }
    }

    /// The last index that is persisted (the stable part's end).
    pub(crate) fn persisted_index(&self) -> Index {
        if let Some(s) = &self.unstable.snapshot {
            return s.meta.index.saturating_sub(1).min(self.unstable.offset - 1);
        }
        self.unstable.offset - 1
    }

    pub(crate) fn last_term(&self) -> Result<Term, StoreError> {
        self.term(self.last_index()?)
    }

    pub(crate) fn term(&self, index: Index) -> Result<Term, StoreError> {
        let first = self.first_index()?;
        if index + 1 < first {
            return Err(StoreError::Compacted);
        }
        if index > self.last_index()? {
            return Err(StoreError::Unavailable);
        }
        if let Some(term) = self.unstable.term(index) {
            return Ok(term);
        }
        self.store.term(index)
    }

    pub(crate) fn match_term(&self, index: Index, term: Term) -> bool {
        matches!(self.term(index), Ok(t) if t == term)
    }

    /// Is a candidate log ending at (`last_index`, `last_term`) at least
    /// as up to date as ours (§5.4.1)?
    pub(crate) fn is_up_to_date(
        &self,
        last_index: Index,
        last_term: Term,
    ) -> Result<bool, StoreError> {
        let our_term = self.last_term()?;
        Ok(last_term > our_term || (last_term == our_term && last_index >= self.last_index()?))
    }

    /// Entries in `[low, high)` within `max_bytes` (at least one).
    pub(crate) fn entries(
        &self,
        low: Index,
        high: Index,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StoreError> {
        if low >= high {
            return Ok(Vec::new());
        }
        if low < self.first_index()? {
            return Err(StoreError::Compacted);
        }
        if high > self.last_index()? + 1 {
            return Err(StoreError::Unavailable);
        }
        let mut out = Vec::new();
        let offset = self.unstable.offset;
        if low < offset {
            out = self.store.entries(low, high.min(offset), max_bytes)?;
            let fetched_to = low + out.len() as u64;
            if fetched_to < high.min(offset) {
                return Ok(out); // budget exhausted in the stable part
            }
        }
        if high > offset {
            let mut bytes: u64 = out.iter().map(Entry::size_bytes).sum();
            let start = low.max(offset);
            for entry in &self.unstable.entries[(start - offset) as usize..(high - offset) as usize]
            {
                bytes += entry.size_bytes();
                if !out.is_empty() && bytes > max_bytes {
                    break;
                }
                out.push(entry.clone());
            }
        }
        Ok(out)
    }

    /// Append entries of the leader's own making.
    pub(crate) fn append(&mut self, entries: &[Entry]) {
        if let Some(first) = entries.first() {
            assert!(
                first.index > self.committed,
                "a leader's append at index {} would overwrite committed entries (commit {})",
                first.index,
                self.committed
            );
            self.unstable.truncate_and_append(entries);
        }
    }

    /// A follower's append: if our log has (`prev_index`, `prev_term`),
    /// keep the entries that agree, replace from the first conflict, move
    /// commit, and return the last index the leader's message covers.
    pub(crate) fn maybe_append(
        &mut self,
        prev_index: Index,
        prev_term: Term,
        commit: Index,
        entries: &[Entry],
    ) -> Result<Option<Index>, StoreError> {
        if !self.match_term(prev_index, prev_term) {
            return Ok(None);
        }
        let last_new = prev_index + entries.len() as u64;
        if let Some(conflict) = self.find_conflict(entries) {
            if conflict <= self.committed {
                // Log Matching guarantees this cannot happen with a correct
                // leader: refuse rather than overwrite committed entries.
                return Err(StoreError::Other(format!(
                    "append conflicts at index {conflict}, at or below commit {}",
                    self.committed
                )));
            }
            let start = (conflict - entries[0].index) as usize;
            self.unstable.truncate_and_append(&entries[start..]);
        }
        self.commit_to(commit.min(last_new));
        Ok(Some(last_new))
    }

    /// Index of the first entry whose term differs from (or is missing
    /// in) our log.
    fn find_conflict(&self, entries: &[Entry]) -> Option<Index> {
        entries
            .iter()
            .find(|e| !self.match_term(e.index, e.term))
            .map(|e| e.index)
    }

    /// The highest index ≤ `index` whose term is ≤ `term`: where a log
    /// ending in `term` may agree with ours (fast backtracking).
    pub(crate) fn find_conflict_by_term(&self, index: Index, term: Term) -> Index {
        let mut index = index;
        loop {
            match self.term(index) {
                Ok(t) if t > term && index > 0 => index -= 1,
                _ => return index,
            }
        }
    }

    pub(crate) fn commit_to(&mut self, index: Index) {
        if index > self.committed {
            debug_assert!(
                self.last_index().map_or(true, |last| index <= last),
                "commit_to({index}) beyond the last index {:?}",
                self.last_index()
            );
            self.committed = index;
        }
    }

    /// Committed, persisted entries not yet handed to apply.
    pub(crate) fn has_next_committed(&self) -> bool {
        self.unstable.snapshot.is_none()
            && self.applying < self.committed.min(self.persisted_index())
    }

    pub(crate) fn next_committed_entries(&self, max_bytes: u64) -> Result<Vec<Entry>, StoreError> {
        if !self.has_next_committed() {
            return Ok(Vec::new());
        }
        let high = self.committed.min(self.persisted_index()) + 1;
        self.entries(self.applying + 1, high, max_bytes)
    }

    pub(crate) fn unstable_entries(&self) -> &[Entry] {
        &self.unstable.entries
    }

    pub(crate) fn unstable_snapshot(&self) -> Option<&Snapshot> {
        self.unstable.snapshot.as_ref()
    }

    /// The caller persisted entries up to (`index`, `term`).
    pub(crate) fn stable_to(&mut self, index: Index, term: Term) {
        if self.unstable.term(index) != Some(term) || index < self.unstable.offset {
            // Overwritten since that Ready: nothing to release.
            return;
        }
        let drop = (index + 1 - self.unstable.offset) as usize;
        debug_assert!(
            drop <= self.unstable.entries.len(),
            "stable_to({index}) beyond the unstable entries {}..{}",
            self.unstable.offset,
            self.unstable.offset + self.unstable.entries.len() as u64
        );
        self.unstable.entries.drain(..drop);
        self.unstable.offset = index + 1;
    }

    /// The caller persisted (installed) the snapshot at `index`.
    pub(crate) fn stable_snapshot_to(&mut self, index: Index) {
        if matches!(&self.unstable.snapshot, Some(s) if s.meta.index == index) {
            self.unstable.snapshot = None;
        }
    }

    /// Replace the log with a snapshot received from the leader.
    pub(crate) fn restore(&mut self, snapshot: Snapshot) {
        let index = snapshot.meta.index;
        self.committed = index;
        self.unstable.entries.clear();
        self.unstable.offset = index + 1;
        self.unstable.snapshot = Some(snapshot);
    }

    /// A snapshot to send to a follower that needs compacted entries.
    pub(crate) fn snapshot(&self, request_index: Index) -> Result<Snapshot, StoreError> {
        match &self.unstable.snapshot {
            Some(s) => Ok(s.clone()),
            None => self.store.snapshot(request_index),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemStore;

    fn log_with(terms: &[Term]) -> RaftLog<MemStore> {
        let mut store = MemStore::default();
        let entries: Vec<Entry> = terms
            .iter()
            .enumerate()
            .map(|(i, &t)| Entry::new(t, i as u64 + 1, vec![]))
            .collect();
        store.append(&entries).unwrap();
        RaftLog::new(store, 0, 0).unwrap()
    }

    #[test]
    fn maybe_append_truncates_conflicting_suffix() {
        let mut log = log_with(&[1, 1, 2, 2]);
        let new = [Entry::new(3, 3, vec![]), Entry::new(3, 4, vec![])];
        assert_eq!(log.maybe_append(2, 1, 4, &new).unwrap(), Some(4));
        assert_eq!(log.term(3).unwrap(), 3);
        assert_eq!(log.committed, 4);
        assert_eq!(
            log.maybe_append(4, 2, 4, &[]).unwrap(),
            None,
            "term mismatch"
        );
    }

    #[test]
    fn conflict_below_commit_is_refused() {
        let mut log = log_with(&[1, 1, 2]);
        log.commit_to(3);
        let bad = [Entry::new(5, 3, vec![])];
        assert!(log.maybe_append(2, 1, 3, &bad).is_err());
    }

    #[test]
    fn find_conflict_by_term_walks_back() {
        let log = log_with(&[1, 1, 2, 2, 4, 4]);
        assert_eq!(log.find_conflict_by_term(6, 3), 4);
        assert_eq!(log.find_conflict_by_term(6, 1), 2);
        assert_eq!(log.find_conflict_by_term(6, 0), 0);
    }

    #[test]
    fn only_persisted_committed_entries_are_applied() {
        let mut log = log_with(&[1, 1]);
        log.append(&[Entry::new(1, 3, vec![])]);
        log.commit_to(3);
        let ready = log.next_committed_entries(u64::MAX).unwrap();
        assert_eq!(ready.len(), 2, "entry 3 is not persisted yet");
        log.store.append(&[Entry::new(1, 3, vec![])]).unwrap();
        log.stable_to(3, 1);
        assert_eq!(log.next_committed_entries(u64::MAX).unwrap().len(), 3);
    }
}
