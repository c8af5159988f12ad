//! The in-memory index: per group, where each live entry lives on disk, the
//! terms, the persisted metadata and a bounded cache of recent entries.
//!
//! Memory per indexed entry: entries written together (one entries op of
//! one batch) share one 24-byte [`Run`], and consecutive entries of equal
//! term share one 16-byte term run. A group appending one entry per batch
//! costs 24 bytes per entry (+16 per term change); appending k entries per
//! batch costs 24/k. 10 million entries cost at most ~240 MB, typically far
//! less.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use rustc_hash::FxHashMap;

use flotilla_raftgroup::{ConfState, Entry, HardState, Index, StoreError, Term};

use super::batch::{put_conf_state, put_hard_state, Op, OpView, Reader};

/// Entries `first_index..first_index + count` live in the entries op at
/// `op_offset` of the (uncompressed) payload of the record at
/// `record_offset` of segment `file_seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    pub first_index: Index,
    pub count: u32,
    pub file_seq: u32,
    pub record_offset: u32,
    pub op_offset: u32,
}

impl Run {
    fn end(&self) -> Index {
        self.first_index + u64::from(self.count)
    }
}

/// Where a record was written: what the index needs besides the op offset.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordLocation {
    pub file_seq: u32,
    pub record_offset: u32,
}

/// Everything the WAL knows about one group.
#[derive(Debug, Clone, Default)]
pub(crate) struct GroupState {
    pub hard_state: HardState,
    pub conf_state: ConfState,
    /// Last index dropped by compaction or covered by a snapshot, and its term.
    pub truncated_index: Index,
    pub truncated_term: Term,
    /// `last_index()`, kept next to `truncated_index` so that validating
    /// a batch reads this struct only, not the runs' buffer (at 10,000
    /// groups each is a cache miss on the group-commit leader's path).
    last: Index,
    runs: VecDeque<Run>,
    /// `(first index, term)` of each run of equal terms over the live entries.
    terms: VecDeque<(Index, Term)>,
    /// A suffix of the live entries, contiguous.
    cache: VecDeque<Entry>,
    cache_bytes: u64,
    /// Entries and bytes ever appended: their ratio estimates the live
    /// bytes for purge decisions without storing a size per entry.
    appended_entries: u64,
    appended_bytes: u64,
}

impl GroupState {
    pub fn first_index(&self) -> Index {
        self.truncated_index + 1
    }

    pub fn last_index(&self) -> Index {
        debug_assert_eq!(self.last, self.last_from_runs());
        self.last
    }

    fn last_from_runs(&self) -> Index {
        self.runs
            .back()
            .map_or(self.truncated_index, |run| run.end() - 1)
    }

    /// Recomputes `last` after the runs or the truncation point changed.
    fn sync_last(&mut self) {
        self.last = self.last_from_runs();
    }

    /// Live entries (runs are contiguous, so this is O(1)).
    pub fn entry_count(&self) -> u64 {
        self.runs
            .front()
            .map_or(0, |front| self.last_index() + 1 - front.first_index)
    }

    /// Segment holding the oldest live entry.
    pub fn oldest_file_seq(&self) -> Option<u32> {
        self.runs.front().map(|run| run.file_seq)
    }

    /// Estimated bytes of the live entries (count × average entry size).
    pub fn live_bytes_estimate(&self) -> u64 {
        match self.appended_entries {
            0 => 0,
            n => self.entry_count() * (self.appended_bytes / n),
        }
    }

    pub fn index_bytes(&self) -> usize {
        self.runs.len() * std::mem::size_of::<Run>() + self.terms.len() * 16
    }

    pub fn term(&self, index: Index) -> Result<Term, StoreError> {
        if index == self.truncated_index {
            return Ok(self.truncated_term);
        }
        if index < self.truncated_index {
            return Err(StoreError::Compacted);
        }
        if index > self.last_index() || self.runs.front().is_none_or(|run| index < run.first_index)
        {
            return Err(StoreError::Unavailable);
        }
        let at = self.terms.partition_point(|&(start, _)| start <= index);
        match at.checked_sub(1).and_then(|at| self.terms.get(at)) {
            Some(&(_, term)) => Ok(term),
            None => Err(StoreError::Other(format!(
                "term index has no run for index {index}"
            ))),
        }
    }

    /// The runs covering `[low, high)`, clipped to it.
    pub fn runs_in(&self, low: Index, high: Index) -> Vec<Run> {
        let start = self.runs.partition_point(|run| run.end() <= low);
        let mut out = Vec::new();
        for run in self.runs.iter().skip(start) {
            if run.first_index >= high {
                break;
            }
            out.push(*run);
        }
        out
    }

    /// Cached entries `[low, high)` if the cache holds all of them.
    pub fn cached(
        &self,
        low: Index,
        high: Index,
    ) -> Option<std::collections::vec_deque::Iter<'_, Entry>> {
        let first = self.cache.front()?.index;
        let last = self.cache.back()?.index;
        if low < first || high > last + 1 || low >= high {
            return None;
        }
        Some(
            self.cache
                .range((low - first) as usize..(high - first) as usize),
        )
    }

    /// Applies an entries op. Lenient on purpose: entries that do not extend
    /// the log (gap, or starting below the oldest held entry) replace it
    /// entirely. Live writes are validated before they reach this point; in
    /// recovery the oldest segments may be purged, so the replayed log of a
    /// group can legitimately start with a suffix of what it once held and
    /// a later rewrite fills it in (see `recovery.rs`).
    fn apply_entries(
        &mut self,
        first_index: Index,
        count: u32,
        term_runs: &[(Index, Term)],
        bytes: u64,
        run: Run,
    ) -> u64 {
        self.appended_entries += u64::from(count);
        self.appended_bytes += bytes;
        let mut freed = 0;
        let extends = self.runs.front().is_some_and(|front| {
            first_index >= front.first_index && first_index <= self.last_index() + 1
        });
        if extends {
            freed += self.truncate_from(first_index);
        } else {
            self.runs.clear();
            self.terms.clear();
            freed += self.clear_cache();
        }
        debug_assert_eq!(run.first_index, first_index);
        debug_assert!(count > 0);
        self.runs.push_back(run);
        self.sync_last();
        for &(start, term) in term_runs {
            if self.terms.back().is_none_or(|&(_, last)| last != term) {
                self.terms.push_back((start, term));
            }
        }
        freed
    }

    /// Drops entries `>= index`. Returns cache bytes freed.
    fn truncate_from(&mut self, index: Index) -> u64 {
        while let Some(last) = self.runs.back_mut() {
            if last.first_index >= index {
                self.runs.pop_back();
            } else {
                if last.end() > index {
                    last.count = (index - last.first_index) as u32;
                }
                break;
            }
        }
        while self.terms.back().is_some_and(|&(start, _)| start >= index) {
            self.terms.pop_back();
        }
        let mut freed = 0;
        while self.cache.back().is_some_and(|entry| entry.index >= index) {
            if let Some(entry) = self.cache.pop_back() {
                freed += entry.size_bytes();
            }
        }
        self.cache_bytes -= freed;
        self.sync_last();
        freed
    }

    /// Drops entries `<= index`. Returns cache bytes freed.
    fn drop_through(&mut self, index: Index) -> u64 {
        while let Some(front) = self.runs.front_mut() {
            if front.end() <= index + 1 {
                self.runs.pop_front();
            } else {
                if front.first_index <= index {
                    front.count -= (index + 1 - front.first_index) as u32;
                    front.first_index = index + 1;
                }
                break;
            }
        }
        match self.runs.front() {
            None => self.terms.clear(),
            Some(front) => {
                let first = front.first_index;
                while self.terms.len() >= 2 && self.terms[1].0 <= first {
                    self.terms.pop_front();
                }
                if let Some(head) = self.terms.front_mut() {
                    head.0 = head.0.max(first);
                }
            }
        }
        self.sync_last();
        self.evict_cache_through(index)
    }

    pub fn evict_cache_through(&mut self, index: Index) -> u64 {
        self.evict_cache_with(index, drop)
    }

    /// Drops cached entries `<= index`, handing each to `sink`. Returns
    /// cache bytes freed.
    fn evict_cache_with(&mut self, index: Index, mut sink: impl FnMut(Entry)) -> u64 {
        let mut freed = 0;
        while self.cache.front().is_some_and(|entry| entry.index <= index) {
            if let Some(entry) = self.cache.pop_front() {
                freed += entry.size_bytes();
                sink(entry);
            }
        }
        self.cache_bytes -= freed;
        freed
    }

    fn clear_cache(&mut self) -> u64 {
        let freed = self.cache_bytes;
        self.cache.clear();
        self.cache_bytes = 0;
        freed
    }

    fn compact(&mut self, index: Index, term: Term) -> u64 {
        if index <= self.truncated_index {
            return 0;
        }
        self.truncated_index = index;
        self.truncated_term = term;
        self.drop_through(index)
    }

    /// Like raft-rs' `MemStorage`, installing a snapshot drops the whole log:
    /// validation of later appends in the same group commit only has to
    /// know indexes, never terms.
    fn install_snapshot(&mut self, index: Index, term: Term) -> u64 {
        if index <= self.truncated_index {
            return 0;
        }
        self.runs.clear();
        self.terms.clear();
        self.truncated_index = index;
        self.truncated_term = term;
        self.sync_last();
        self.clear_cache()
    }

    /// Adds freshly written entries to the cache (they extend the log).
    /// Returns `(bytes freed, bytes added)`.
    fn cache_push(&mut self, entries: &[Entry], arena: &mut CacheArena) -> (u64, u64) {
        let Some(first) = entries.first() else {
            return (0, 0);
        };
        let mut freed = 0;
        if self
            .cache
            .back()
            .is_some_and(|last| last.index + 1 != first.index)
        {
            freed = self.clear_cache();
        }
        let mut added = 0;
        for entry in entries {
            let size = entry.size_bytes();
            self.cache_bytes += size;
            added += size;
            self.cache.push_back(Entry {
                term: entry.term,
                index: entry.index,
                kind: entry.kind,
                data: arena.copy(&entry.data),
            });
        }
        (freed, added)
    }
}

const CACHE_FIFO_LEN_MAX: usize = 1 << 20;

/// The index of every group plus the global cache budget.
#[derive(Debug, Default)]
pub(crate) struct MemState {
    pub groups: FxHashMap<u64, GroupState>,
    cache_bytes_total: u64,
    cache_bytes_max: u64,
    /// Writes in the order they entered the cache: `(group, last index)`.
    /// Evicting pops the oldest, dropping that group's cached entries up to
    /// that index: a FIFO over writes, which is what a leader sending
    /// recent entries to followers needs.
    cache_fifo: VecDeque<(u64, Index)>,
    /// Reused by every entries op for its term runs.
    term_scratch: Vec<(Index, Term)>,
    arena: CacheArena,
}

/// Where cached entry data is copied: shared chunks, one allocation per
/// chunk instead of one per entry. The writers' buffers then stay with
/// the writers, freed by the threads that allocated them; keeping those
/// buffers in the cache instead made the group-commit leader free
/// thousands of other threads' allocations per second (a quarter of the
/// WAL's CPU at 10,000 groups x 256 writers, most of it in the allocator).
/// A chunk is freed once every entry in it has been evicted (and every
/// reader's copy dropped); eviction is FIFO, so chunks go in order.
#[derive(Debug, Default)]
struct CacheArena {
    chunk: BytesMut,
}

/// Below glibc's mmap threshold: a new chunk costs no page faults.
const ARENA_CHUNK_BYTES: usize = 64 << 10;
/// Larger entries are shared with the writer rather than copied.
const ARENA_COPY_MAX_BYTES: usize = 4 << 10;

impl CacheArena {
    fn copy(&mut self, data: &Bytes) -> Bytes {
        if data.len() > ARENA_COPY_MAX_BYTES {
            return data.clone();
        }
        if self.chunk.capacity() - self.chunk.len() < data.len() {
            self.chunk = BytesMut::with_capacity(ARENA_CHUNK_BYTES);
        }
        self.chunk.extend_from_slice(data);
        self.chunk.split().freeze()
    }
}

impl MemState {
    pub fn new(cache_bytes_max: u64) -> Self {
        MemState {
            cache_bytes_max,
            ..MemState::default()
        }
    }

    pub fn cache_bytes(&self) -> u64 {
        self.cache_bytes_total
    }

    fn freed(&mut self, bytes: u64) {
        self.cache_bytes_total = self.cache_bytes_total.saturating_sub(bytes);
    }

    /// Applies an op that was just written at `loc` (live path); with
    /// `cache`, its entries are copied into the entry cache.
    pub fn apply_written_op(&mut self, op: &Op, op_offset: u32, loc: RecordLocation, cache: bool) {
        match op {
            Op::Entries { group, entries } => {
                let (Some(first), Ok(count)) = (entries.first(), u32::try_from(entries.len()))
                else {
                    return;
                };
                let mut term_runs = std::mem::take(&mut self.term_scratch);
                term_runs.clear();
                for entry in entries.iter() {
                    if term_runs.last().is_none_or(|&(_, term)| term != entry.term) {
                        term_runs.push((entry.index, entry.term));
                    }
                }
                let run = Run {
                    first_index: first.index,
                    count,
                    file_seq: loc.file_seq,
                    record_offset: loc.record_offset,
                    op_offset,
                };
                let state = self.groups.entry(*group).or_default();
                let bytes = entries.iter().map(Entry::size_bytes).sum();
                let freed = state.apply_entries(first.index, count, &term_runs, bytes, run);
                self.term_scratch = term_runs;
                let last = first.index + u64::from(count) - 1;
                let (freed_old, added) = if cache && self.cache_bytes_max > 0 {
                    state.cache_push(entries, &mut self.arena)
                } else {
                    (0, 0)
                };
                self.freed(freed + freed_old);
                self.cache_bytes_total += added;
                if added > 0 {
                    self.cache_fifo.push_back((*group, last));
                }
            }
            Op::HardState { group, state } => {
                self.groups.entry(*group).or_default().hard_state = *state
            }
            Op::ConfState { group, state } => {
                self.groups.entry(*group).or_default().conf_state = state.clone()
            }
            Op::Compact { group, index, term } => {
                let freed = self
                    .groups
                    .entry(*group)
                    .or_default()
                    .compact(*index, *term);
                self.freed(freed);
            }
            Op::Snapshot { group, index, term } => {
                let freed = self
                    .groups
                    .entry(*group)
                    .or_default()
                    .install_snapshot(*index, *term);
                self.freed(freed);
            }
            Op::Remove { group } => {
                if let Some(state) = self.groups.remove(group) {
                    self.freed(state.cache_bytes);
                }
            }
        }
    }

    /// Applies a replayed op (recovery path; no cache).
    pub fn apply_view(&mut self, view: &OpView, loc: RecordLocation) {
        match view {
            OpView::Entries {
                group,
                first_index,
                count,
                op_offset,
                term_runs,
                bytes,
            } => {
                let run = Run {
                    first_index: *first_index,
                    count: *count,
                    file_seq: loc.file_seq,
                    record_offset: loc.record_offset,
                    op_offset: *op_offset,
                };
                self.groups.entry(*group).or_default().apply_entries(
                    *first_index,
                    *count,
                    term_runs,
                    *bytes,
                    run,
                );
            }
            OpView::HardState { group, state } => {
                self.groups.entry(*group).or_default().hard_state = *state
            }
            OpView::ConfState { group, state } => {
                self.groups.entry(*group).or_default().conf_state = state.clone()
            }
            OpView::Compact { group, index, term } => {
                self.groups
                    .entry(*group)
                    .or_default()
                    .compact(*index, *term);
            }
            OpView::Snapshot { group, index, term } => {
                self.groups
                    .entry(*group)
                    .or_default()
                    .install_snapshot(*index, *term);
            }
            OpView::Remove { group } => {
                self.groups.remove(group);
            }
        }
    }

    /// Evicts the oldest cached writes until the cache fits its budget.
    /// Returns the evicted entries: free them after releasing the lock.
    pub fn evict_over_budget(&mut self) -> Vec<Entry> {
        let mut evicted = Vec::new();
        self.enforce_cache_budget(&mut evicted);
        evicted
    }

    fn enforce_cache_budget(&mut self, evicted: &mut Vec<Entry>) {
        while self.cache_bytes_total > self.cache_bytes_max {
            let Some((group, through)) = self.cache_fifo.pop_front() else {
                // Accounting drifted (should not happen): start over empty.
                for state in self.groups.values_mut() {
                    state.clear_cache();
                }
                self.cache_bytes_total = 0;
                break;
            };
            if let Some(state) = self.groups.get_mut(&group) {
                let freed = state.evict_cache_with(through, |entry| evicted.push(entry));
                self.freed(freed);
            }
        }
        // When compaction (not the budget) empties caches, fifo records
        // would accumulate forever: bound the fifo too, evicting the oldest
        // cached writes (16 bytes per record, at most ~16 MiB).
        while self.cache_fifo.len() > CACHE_FIFO_LEN_MAX {
            if let Some((group, through)) = self.cache_fifo.pop_front() {
                if let Some(state) = self.groups.get_mut(&group) {
                    let freed = state.evict_cache_with(through, |entry| evicted.push(entry));
                    self.freed(freed);
                }
            }
        }
    }

    /// The metadata of every group, written as the first record of each
    /// segment so that purging old segments never loses a hard state, a
    /// configuration or a compaction point.
    pub fn encode_checkpoint(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.groups.len() * 96);
        out.extend_from_slice(&(self.groups.len() as u32).to_le_bytes());
        let mut ids: Vec<u64> = self.groups.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let Some(state) = self.groups.get(&id) else {
                continue;
            };
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&state.truncated_index.to_le_bytes());
            out.extend_from_slice(&state.truncated_term.to_le_bytes());
            put_hard_state(&mut out, &state.hard_state);
            put_conf_state(&mut out, &state.conf_state);
        }
        out
    }

    /// Loads a checkpoint into an empty state.
    pub fn load_checkpoint(&mut self, payload: &[u8]) -> Result<(), String> {
        let mut reader = Reader::new(payload, 0);
        let count = reader.count(56)?;
        for _ in 0..count {
            let id = reader.u64()?;
            let state = self.groups.entry(id).or_default();
            state.truncated_index = reader.u64()?;
            state.truncated_term = reader.u64()?;
            state.sync_last();
            state.hard_state = reader.hard_state()?;
            state.conf_state = reader.conf_state()?;
        }
        if !reader.is_empty() {
            return Err("trailing bytes after the checkpoint".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_is_24_bytes() {
        assert_eq!(std::mem::size_of::<Run>(), 24);
    }
}
