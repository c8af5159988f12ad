//! Streaming a range out of a RocksDB point-in-time snapshot.

use super::codec::{unseal, IndexTerm, SnapshotMarker};
use super::error::{Result, StateError};
use super::keys::{self, RangeField};
use super::snapshot_format::{
    encode_entry, SnapshotChunk, SnapshotHeader, SnapshotTrailer, StreamTally, ENTRY_OVERHEAD_BYTES,
};
use super::store::StateStore;
use super::RangeId;
use bytes::Bytes;
use rocksdb::{ReadOptions, SnapshotWithThreadMode, DB};

/// Produces a range's snapshot as a sequence of bounded chunks.
///
/// The data comes from a RocksDB snapshot taken when the reader was made,
/// together with the header's applied index and descriptor, so the stream is
/// consistent however long it takes to send and whatever is applied
/// meanwhile. Memory: one chunk under construction (at most
/// `snapshot_chunk_bytes` plus one entry) plus whatever chunks the caller
/// still holds; each call opens a fresh RocksDB iterator positioned at the
/// next key, so no iterator pins files between calls.
///
/// The reader owns a clone of the store, so it is `'static + Send` and can
/// be handed to a transfer task. It keeps the RocksDB snapshot (and thus old
/// versions of the range's keys) alive until dropped.
///
/// ```
/// use flotilla_storage::state::{StateConfig, StateStore};
/// let dir = tempfile::tempdir().unwrap();
/// let store = StateStore::open(dir.path(), StateConfig::default()).unwrap();
/// let mut batch = store.apply_batch();
/// batch.put(1, b"k", b"v");
/// batch.set_applied(1, 5, 1);
/// batch.commit().unwrap();
///
/// let mut reader = store.snapshot_reader(1, b"", b"").unwrap();
/// assert_eq!(reader.header().index_applied, 5);
/// let mut chunks = Vec::new();
/// while let Some(chunk) = reader.next_chunk().unwrap() {
///     chunks.push(chunk); // send it
/// }
/// let trailer = reader.trailer().unwrap(); // send it last
/// assert_eq!(trailer.entry_count, 1);
/// ```
pub struct SnapshotReader {
    // Field order is load-bearing: fields drop in declaration order, so the
    // snapshot is released while `store` (and the DB inside it) is alive.
    snapshot: SnapshotWithThreadMode<'static, DB>,
    store: StateStore,
    header: SnapshotHeader,
    chunk_bytes: usize,
    /// First key of the next chunk; `None` once the range is exhausted.
    resume: Option<Vec<u8>>,
    next_seq: u64,
    tally: StreamTally,
    done: bool,
}

impl StateStore {
    /// A reader of range `range_id`'s data `[start, end)` (empty `end`: to
    /// the end of the key space), chunked by `snapshot_chunk_bytes`.
    ///
    /// Fails with [`StateError::RangeNotFound`] if the range has no applied
    /// state, and with [`StateError::RangeBusy`] if the range is itself
    /// receiving a snapshot (its data is incomplete).
    pub fn snapshot_reader(
        &self,
        range_id: RangeId,
        start: &[u8],
        end: &[u8],
    ) -> Result<SnapshotReader> {
        self.snapshot_reader_with_chunk_bytes(
            range_id,
            start,
            end,
            self.config().snapshot_chunk_bytes,
        )
    }

    /// [`StateStore::snapshot_reader`] with an explicit chunk size.
    pub fn snapshot_reader_with_chunk_bytes(
        &self,
        range_id: RangeId,
        start: &[u8],
        end: &[u8],
        chunk_bytes: usize,
    ) -> Result<SnapshotReader> {
        if chunk_bytes == 0 {
            return Err(StateError::InvalidConfig("chunk_bytes must be > 0".into()));
        }
        if !end.is_empty() && start >= end {
            return Err(StateError::SnapshotProtocol {
                range_id,
                detail: "range start is not below its end".into(),
            });
        }
        let store = self.clone();
        let snapshot = store.inner.db.snapshot();
        // SAFETY: `SnapshotWithThreadMode` borrows the `DB` only to release
        // the snapshot on drop and to create iterators. That `DB` lives
        // inside the `Arc<Inner>` held by `store`, a clone stored in the same
        // struct: the Arc's heap allocation never moves and is not freed
        // while `store` exists, and `snapshot` is declared before `store`, so
        // it is dropped first. The `'static` lifetime never leaves this type:
        // no method returns the snapshot or anything borrowing it as
        // `'static`. Only the lifetime parameter changes; the layout is the
        // same.
        let snapshot: SnapshotWithThreadMode<'static, DB> = unsafe {
            std::mem::transmute::<SnapshotWithThreadMode<'_, DB>, SnapshotWithThreadMode<'static, DB>>(
                snapshot,
            )
        };

        // Metadata from the same point in time as the data.
        let meta = store.meta_cf()?;
        let read_meta = |field: RangeField, op: &'static str| -> Result<Option<Vec<u8>>> {
            snapshot
                .get_pinned_cf(meta, keys::range_key(range_id, field))
                .map(|v| v.map(|v| v.to_vec()))
                .map_err(|source| store.rocks(op, source))
        };
        if let Some(raw) = read_meta(RangeField::SnapshotApplying, "snapshot read marker")? {
            let marker = SnapshotMarker::decode(&raw)?;
            tracing::warn!(
                range_id,
                index = marker.index,
                "refusing to snapshot a range that is receiving one"
            );
            return Err(StateError::RangeBusy { range_id });
        }
        let applied = match read_meta(RangeField::Applied, "snapshot read applied state")? {
            Some(raw) => IndexTerm::decode("applied state", &raw)?,
            None => return Err(StateError::RangeNotFound { range_id }),
        };
        let descriptor = match read_meta(RangeField::Descriptor, "snapshot read descriptor")? {
            Some(raw) => Bytes::copy_from_slice(unseal("range descriptor", &raw)?),
            None => Bytes::new(),
        };
        let header = SnapshotHeader {
            range_id,
            index_applied: applied.index,
            term_applied: applied.term,
            start: Bytes::copy_from_slice(start),
            end: Bytes::copy_from_slice(end),
            descriptor,
        };
        tracing::debug!(range_id, index = applied.index, "snapshot reader created");
        Ok(SnapshotReader {
            snapshot,
            store,
            header,
            chunk_bytes,
            resume: Some(start.to_vec()),
            next_seq: 0,
            tally: StreamTally::default(),
            done: false,
        })
    }
}

impl SnapshotReader {
    /// What to send before the first chunk.
    pub fn header(&self) -> &SnapshotHeader {
        &self.header
    }

    /// The chunk size limit of this reader.
    pub fn chunk_bytes(&self) -> usize {
        self.chunk_bytes
    }

    /// The next chunk, or `None` when the range is exhausted. A chunk holds
    /// at least one entry and stops at the first entry that reaches
    /// `chunk_bytes`, so `data.len() < chunk_bytes + largest entry`.
    pub fn next_chunk(&mut self) -> Result<Option<SnapshotChunk>> {
        // Cloned, not taken: if this call fails the stream can be retried
        // from the same key, and a failure never looks like the end.
        let Some(resume) = self.resume.clone() else {
            self.done = true;
            return Ok(None);
        };
        let store = &self.store;
        let mut opts = ReadOptions::default();
        opts.set_snapshot(&self.snapshot);
        // A bulk scan must not evict the node's hot blocks.
        opts.fill_cache(false);
        if !self.header.end.is_empty() {
            opts.set_iterate_upper_bound(self.header.end.to_vec());
        }
        let mut it = store.inner.db.raw_iterator_cf_opt(store.data_cf()?, opts);
        it.seek(&resume);
        let mut data = Vec::with_capacity(self.chunk_bytes.min(4 * 1024 * 1024) + 1024);
        let mut entries = 0u64;
        let mut next_key = None;
        while let Some((key, value)) = it.item() {
            if data.len() >= self.chunk_bytes {
                next_key = Some(key.to_vec());
                break;
            }
            data.reserve(ENTRY_OVERHEAD_BYTES + key.len() + value.len());
            encode_entry(&mut data, key, value);
            entries += 1;
            it.next();
        }
        it.status()
            .map_err(|source| store.rocks("snapshot scan", source))?;
        self.resume = next_key;
        if entries == 0 {
            self.done = true;
            return Ok(None);
        }
        self.tally.add(&data, entries);
        metrics::counter!("flotilla_storage_snapshot_bytes_generated_total")
            .increment(data.len() as u64);
        let chunk = SnapshotChunk::new(self.next_seq, Bytes::from(data));
        self.next_seq += 1;
        Ok(Some(chunk))
    }

    /// What to send after the last chunk; `None` until
    /// [`SnapshotReader::next_chunk`] has returned `None`.
    pub fn trailer(&self) -> Option<SnapshotTrailer> {
        self.done.then_some(self.tally.trailer)
    }
}

impl Iterator for SnapshotReader {
    type Item = Result<SnapshotChunk>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_chunk().transpose()
    }
}
