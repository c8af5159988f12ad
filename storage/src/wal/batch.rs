//! [`WriteBatch`]: what one atomic write carries, and its payload encoding.
//!
//! Payload (all integers little endian):
//! ```text
//! op count u32, then ops; each op: tag u8, group u64, body
//!   1 entries     first_index u64, count u32, count × (term u64, kind u8, len u32, data)
//!   2 hard state  term u64, vote u64, commit u64
//!   3 conf state  voters u32 + n × u64, learners u32 + n × u64
//!   4 compact     index u64, term u64      (drop entries ≤ index)
//!   5 snapshot    index u64, term u64      (a snapshot was installed at index)
//!   6 remove      (drop the group)
//! ```

use bytes::Bytes;
use flotilla_raftgroup::{ConfState, Entry, EntryKind, HardState, Index, Term};

use super::error::{Result, WalError};

/// One group's change inside a [`WriteBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    Entries {
        group: u64,
        entries: Vec<Entry>,
    },
    HardState {
        group: u64,
        state: HardState,
    },
    ConfState {
        group: u64,
        state: ConfState,
    },
    Compact {
        group: u64,
        index: Index,
        term: Term,
    },
    Snapshot {
        group: u64,
        index: Index,
        term: Term,
    },
    Remove {
        group: u64,
    },
}

impl Op {
    pub(crate) fn group(&self) -> u64 {
        match self {
            Op::Entries { group, .. }
            | Op::HardState { group, .. }
            | Op::ConfState { group, .. }
            | Op::Compact { group, .. }
            | Op::Snapshot { group, .. }
            | Op::Remove { group } => *group,
        }
    }
}

/// Changes to many groups that are written atomically: after a crash the
/// whole batch is recovered or none of it.
///
/// Operations apply in the order they were added.
///
/// ```
/// use flotilla_raftgroup::{Entry, HardState};
/// use flotilla_storage::wal::WriteBatch;
///
/// let mut batch = WriteBatch::new();
/// batch.append(7, &[Entry::new(1, 1, "a"), Entry::new(1, 2, "b")]).unwrap();
/// batch.set_hard_state(7, HardState { term: 1, vote: 2, commit: 1 });
/// batch.append(8, &[Entry::new(3, 10, "x")]).unwrap();
/// assert_eq!(batch.len(), 3);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    pub(crate) ops: Vec<Op>,
    /// Estimated encoded size, checked against the batch limit before encoding.
    bytes: u64,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        WriteBatch::default()
    }

    /// Appends `entries` (consecutive indexes) to `group`. Entries of the
    /// group at or after the first new index are dropped first: a new leader
    /// overwriting an uncommitted suffix. An empty slice is a no-op.
    pub fn append(&mut self, group: u64, entries: &[Entry]) -> Result<()> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        for (offset, entry) in entries.iter().enumerate() {
            if Some(entry.index) != first.index.checked_add(offset as u64) {
                return Err(WalError::InvalidBatch {
                    group,
                    reason: format!(
                        "entries not contiguous: position {offset} has index {} after first index {}",
                        entry.index, first.index
                    ),
                });
            }
        }
        if first.index == 0 {
            return Err(WalError::InvalidBatch {
                group,
                reason: "entry index 0 is reserved".into(),
            });
        }
        self.bytes += 21
            + entries
                .iter()
                .map(|e| 13 + e.data.len() as u64)
                .sum::<u64>();
        self.ops.push(Op::Entries {
            group,
            entries: entries.to_vec(),
        });
        Ok(())
    }

    /// Persists `group`'s hard state.
    pub fn set_hard_state(&mut self, group: u64, state: HardState) {
        self.bytes += 33;
        self.ops.push(Op::HardState { group, state });
    }

    /// Persists `group`'s configuration (what [`flotilla_raftgroup::LogStore::initial_state`] returns).
    pub fn set_conf_state(&mut self, group: u64, state: ConfState) {
        self.bytes += 17 + 8 * (state.voters.len() + state.learners.len()) as u64;
        self.ops.push(Op::ConfState { group, state });
    }

    /// Drops `group`'s entries up to and including `index`, whose term is
    /// `term` (it stays answerable by `term(index)`). Compacting beyond the
    /// last index is refused at write time.
    pub fn compact(&mut self, group: u64, index: Index, term: Term) {
        self.bytes += 25;
        self.ops.push(Op::Compact { group, index, term });
    }

    /// Records that a snapshot at `(index, term)` was installed in `group`
    /// (the "truncated state"): every entry of the group is dropped, first
    /// index becomes `index + 1` and `term(index)` answers `term`. Ignored
    /// if `index` is not beyond the current compaction point.
    pub fn install_snapshot(&mut self, group: u64, index: Index, term: Term) {
        self.bytes += 25;
        self.ops.push(Op::Snapshot { group, index, term });
    }

    /// Drops everything about `group`.
    pub fn remove_group(&mut self, group: u64) {
        self.bytes += 9;
        self.ops.push(Op::Remove { group });
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// No operation at all?
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Approximate encoded size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.bytes + 4
    }

    /// Drops all operations, keeping the allocation.
    pub fn clear(&mut self) {
        self.ops.clear();
        self.bytes = 0;
    }
}

pub(crate) const TAG_ENTRIES: u8 = 1;
const TAG_HARD_STATE: u8 = 2;
const TAG_CONF_STATE: u8 = 3;
const TAG_COMPACT: u8 = 4;
const TAG_SNAPSHOT: u8 = 5;
const TAG_REMOVE: u8 = 6;

/// Encodes the batch payload. Returns the bytes and, for every op, the
/// offset where it starts in the (uncompressed) payload: the index points
/// entries at `(record, op offset)`.
pub(crate) fn encode(batch: &WriteBatch) -> (Vec<u8>, Vec<u32>) {
    let mut out = Vec::with_capacity(batch.size_bytes() as usize);
    let mut offsets = Vec::with_capacity(batch.ops.len());
    out.extend_from_slice(&(batch.ops.len() as u32).to_le_bytes());
    for op in &batch.ops {
        offsets.push(out.len() as u32);
        match op {
            Op::Entries { group, entries } => {
                put_head(&mut out, TAG_ENTRIES, *group);
                let first = entries.first().map_or(0, |e| e.index);
                out.extend_from_slice(&first.to_le_bytes());
                out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
                for entry in entries {
                    out.extend_from_slice(&entry.term.to_le_bytes());
                    out.push(entry.kind.to_u8());
                    out.extend_from_slice(&(entry.data.len() as u32).to_le_bytes());
                    out.extend_from_slice(&entry.data);
                }
            }
            Op::HardState { group, state } => {
                put_head(&mut out, TAG_HARD_STATE, *group);
                put_hard_state(&mut out, state);
            }
            Op::ConfState { group, state } => {
                put_head(&mut out, TAG_CONF_STATE, *group);
                put_conf_state(&mut out, state);
            }
            Op::Compact { group, index, term } => {
                put_head(&mut out, TAG_COMPACT, *group);
                out.extend_from_slice(&index.to_le_bytes());
                out.extend_from_slice(&term.to_le_bytes());
            }
            Op::Snapshot { group, index, term } => {
                put_head(&mut out, TAG_SNAPSHOT, *group);
                out.extend_from_slice(&index.to_le_bytes());
                out.extend_from_slice(&term.to_le_bytes());
            }
            Op::Remove { group } => put_head(&mut out, TAG_REMOVE, *group),
        }
    }
    (out, offsets)
}

fn put_head(out: &mut Vec<u8>, tag: u8, group: u64) {
    out.push(tag);
    out.extend_from_slice(&group.to_le_bytes());
}

pub(crate) fn put_hard_state(out: &mut Vec<u8>, state: &HardState) {
    out.extend_from_slice(&state.term.to_le_bytes());
    out.extend_from_slice(&state.vote.to_le_bytes());
    out.extend_from_slice(&state.commit.to_le_bytes());
}

pub(crate) fn put_conf_state(out: &mut Vec<u8>, state: &ConfState) {
    for list in [&state.voters, &state.learners] {
        out.extend_from_slice(&(list.len() as u32).to_le_bytes());
        for id in list {
            out.extend_from_slice(&id.to_le_bytes());
        }
    }
}

/// Bounds-checked little-endian reader over a payload; every method fails
/// with a message instead of panicking on short or absurd input.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], pos: usize) -> Self {
        Reader { buf, pos }
    }

    pub(crate) fn bytes(&mut self, len: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|&end| end <= self.buf.len())
            .ok_or_else(|| format!("payload truncated at byte {} (wanted {len} more)", self.pos))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, String> {
        Ok(self.bytes(1)?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32, String> {
        Ok(super::format::read_u32(self.bytes(4)?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, String> {
        Ok(super::format::read_u64(self.bytes(8)?))
    }

    /// A count of items of at least `item_bytes_min` bytes each, refused when
    /// the rest of the payload cannot hold that many (no absurd allocation).
    pub(crate) fn count(&mut self, item_bytes_min: usize) -> Result<usize, String> {
        let count = self.u32()? as usize;
        let left = self.buf.len() - self.pos;
        if count.saturating_mul(item_bytes_min.max(1)) > left {
            return Err(format!("count {count} larger than the {left} bytes left"));
        }
        Ok(count)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub(crate) fn hard_state(&mut self) -> Result<HardState, String> {
        Ok(HardState {
            term: self.u64()?,
            vote: self.u64()?,
            commit: self.u64()?,
        })
    }

    pub(crate) fn conf_state(&mut self) -> Result<ConfState, String> {
        let mut lists = [Vec::new(), Vec::new()];
        for list in &mut lists {
            let count = self.count(8)?;
            list.reserve(count);
            for _ in 0..count {
                list.push(self.u64()?);
            }
        }
        let [voters, learners] = lists;
        Ok(ConfState { voters, learners })
    }
}

/// A decoded op as recovery needs it: entries are described, not copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OpView {
    Entries {
        group: u64,
        first_index: Index,
        count: u32,
        op_offset: u32,
        /// `(first index, term)` of each run of equal terms.
        term_runs: Vec<(Index, Term)>,
        /// Bytes of the entries ([`Entry::size_bytes`] summed).
        bytes: u64,
    },
    HardState {
        group: u64,
        state: HardState,
    },
    ConfState {
        group: u64,
        state: ConfState,
    },
    Compact {
        group: u64,
        index: Index,
        term: Term,
    },
    Snapshot {
        group: u64,
        index: Index,
        term: Term,
    },
    Remove {
        group: u64,
    },
}

/// Decodes a batch payload into op views, validating every length.
pub(crate) fn decode_views(payload: &[u8]) -> Result<Vec<OpView>, String> {
    let mut reader = Reader::new(payload, 0);
    let count = reader.count(9)?;
    let mut views = Vec::with_capacity(count);
    for _ in 0..count {
        let op_offset = reader.pos as u32;
        let tag = reader.u8()?;
        let group = reader.u64()?;
        let view = match tag {
            TAG_ENTRIES => {
                let first_index = reader.u64()?;
                let count = reader.count(13)? as u32;
                if count == 0
                    || first_index == 0
                    || first_index.checked_add(u64::from(count)).is_none()
                {
                    return Err(format!(
                        "bad entries op: first index {first_index}, count {count}"
                    ));
                }
                let mut term_runs: Vec<(Index, Term)> = Vec::new();
                let mut bytes = 0u64;
                for position in 0..u64::from(count) {
                    let term = reader.u64()?;
                    let kind = reader.u8()?;
                    if EntryKind::from_u8(kind).is_none() {
                        return Err(format!("unknown entry kind {kind}"));
                    }
                    let len = reader.u32()? as usize;
                    reader.bytes(len)?;
                    bytes += len as u64 + flotilla_raftgroup::ENTRY_OVERHEAD_BYTES;
                    if term_runs.last().is_none_or(|&(_, last)| last != term) {
                        term_runs.push((first_index + position, term));
                    }
                }
                OpView::Entries {
                    group,
                    first_index,
                    count,
                    op_offset,
                    term_runs,
                    bytes,
                }
            }
            TAG_HARD_STATE => OpView::HardState {
                group,
                state: reader.hard_state()?,
            },
            TAG_CONF_STATE => OpView::ConfState {
                group,
                state: reader.conf_state()?,
            },
            TAG_COMPACT => OpView::Compact {
                group,
                index: reader.u64()?,
                term: reader.u64()?,
            },
            TAG_SNAPSHOT => OpView::Snapshot {
                group,
                index: reader.u64()?,
                term: reader.u64()?,
            },
            TAG_REMOVE => OpView::Remove { group },
            other => return Err(format!("unknown op tag {other}")),
        };
        views.push(view);
    }
    if !reader.is_empty() {
        return Err("trailing bytes after the last op".into());
    }
    Ok(views)
}

/// Reads entries `[low, high)` of the entries op at `op_offset` of a
/// decoded payload, slicing `payload` (no copy of entry data). Stops once
/// `budget` bytes are exceeded (at least one entry is always returned) and
/// reports the bytes used.
pub(crate) fn read_entries(
    payload: &Bytes,
    op_offset: u32,
    low: Index,
    high: Index,
    out: &mut Vec<Entry>,
    budget: &mut u64,
    first_call: bool,
) -> Result<bool, String> {
    let mut reader = Reader::new(payload, op_offset as usize);
    if reader.u8()? != TAG_ENTRIES {
        return Err("index points at an op that holds no entries".into());
    }
    reader.u64()?;
    let first_index = reader.u64()?;
    let count = u64::from(reader.u32()?);
    if low < first_index || high > first_index.saturating_add(count) {
        return Err(format!(
            "index wants [{low}, {high}) from an op holding [{first_index}, {})",
            first_index.saturating_add(count)
        ));
    }
    let mut index = first_index;
    let mut first = first_call;
    while index < high {
        let term = reader.u64()?;
        let kind = reader.u8()?;
        let len = reader.u32()? as usize;
        let start = reader.pos;
        reader.bytes(len)?;
        if index >= low {
            let kind =
                EntryKind::from_u8(kind).ok_or_else(|| format!("unknown entry kind {kind}"))?;
            let size = len as u64 + flotilla_raftgroup::ENTRY_OVERHEAD_BYTES;
            if !first && size > *budget {
                return Ok(false);
            }
            *budget = budget.saturating_sub(size);
            first = false;
            out.push(Entry {
                term,
                index,
                kind,
                data: payload.slice(start..start + len),
            });
        }
        index += 1;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn views_describe_what_was_encoded() {
        let mut batch = WriteBatch::new();
        batch
            .append(4, &[Entry::new(2, 7, "a"), Entry::new(3, 8, "bb")])
            .unwrap();
        batch.set_conf_state(4, ConfState::with_voters([1, 2]));
        batch.compact(4, 6, 2);
        let (payload, offsets) = encode(&batch);
        let views = decode_views(&payload).unwrap();
        assert_eq!(
            views[0],
            OpView::Entries {
                group: 4,
                first_index: 7,
                count: 2,
                op_offset: offsets[0],
                term_runs: vec![(7, 2), (8, 3)],
                bytes: 3 + 2 * flotilla_raftgroup::ENTRY_OVERHEAD_BYTES,
            }
        );
        let payload = Bytes::from(payload);
        let mut out = Vec::new();
        let mut budget = u64::MAX;
        read_entries(&payload, offsets[0], 8, 9, &mut out, &mut budget, true).unwrap();
        assert_eq!(out, vec![Entry::new(3, 8, "bb")]);
    }

    #[test]
    fn non_contiguous_append_is_refused() {
        let mut batch = WriteBatch::new();
        let err = batch
            .append(1, &[Entry::new(1, 1, "a"), Entry::new(1, 3, "b")])
            .unwrap_err();
        assert!(matches!(err, WalError::InvalidBatch { group: 1, .. }));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

        /// Arbitrary payload bytes (as if a CRC collision let them through)
        /// decode to an error or to views, never a panic or a huge allocation.
        #[test]
        fn decoding_arbitrary_payloads_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512), offset in any::<u32>()) {
            let _ = decode_views(&bytes);
            let payload = Bytes::from(bytes);
            let mut out = Vec::new();
            let mut budget = u64::MAX;
            let _ = read_entries(&payload, offset % 600, 1, 5, &mut out, &mut budget, true);
        }

        /// Mutations of a valid payload never panic either.
        #[test]
        fn decoding_mutated_payloads_never_panics(at in any::<prop::sample::Index>(), value in any::<u8>()) {
            let mut batch = WriteBatch::new();
            batch.append(9, &[Entry::new(1, 1, "xyz"), Entry::new(1, 2, "")]).unwrap();
            batch.set_conf_state(9, ConfState::with_voters([1, 2, 3]));
            batch.set_hard_state(9, HardState::default());
            let (mut payload, _) = encode(&batch);
            let at = at.index(payload.len());
            payload[at] ^= value;
            let _ = decode_views(&payload);
        }
    }
}
