//! Applying a received range snapshot, crash-safely.

use super::codec::{seal, IndexTerm, SnapshotMarker};
use super::error::{Result, StateError};
use super::keys::{self, in_range, RangeField};
use super::snapshot_format::{SnapshotChunk, SnapshotHeader, SnapshotTrailer, StreamTally};
use super::store::{StateStore, WriterState};
use super::RangeId;
use rocksdb::WriteBatch;

/// Installs a snapshot received chunk by chunk, in four steps:
///
/// 1. [`StateStore::snapshot_writer`] writes, in one batch, an
///    "applying snapshot" marker (range id, target index/term, bounds) and
///    (2) a `delete_range` of the range's data;
/// 3. [`SnapshotWriter::write_chunk`] verifies each chunk (checksum, order,
///    every key inside the range, keys ascending across the whole stream)
///    and writes the pairs in write batches flushed as soon as they reach
///    `snapshot_apply_batch_bytes` (so at most that plus one chunk);
/// 4. [`SnapshotWriter::finish`] checks the trailer against what arrived and
///    writes, in one fsync'd batch, the last pairs, the applied index/term,
///    the descriptor, and removes the marker (and any needs-snapshot record).
///
/// Steps 1–3 are not fsync'd: RocksDB recovers a prefix of its writes, so a
/// chunk can only survive a crash if the marker before it did. If the
/// process dies, the marker stays and
/// [`StateStore::recover_interrupted_snapshots`] (run by `open`) rolls the
/// range back to empty + needs-snapshot. Dropping the writer unfinished is
/// treated exactly like a crash: the range stays refused for applies until
/// recovery runs (next open, or an explicit call). [`SnapshotWriter::abort`]
/// rolls back at once.
///
/// While a writer lives, the range is busy: apply batches, destroys, other
/// writers and snapshot readers of it are refused.
///
/// ```
/// use flotilla_storage::state::{StateConfig, StateStore};
/// let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
/// let source = StateStore::open(a.path(), StateConfig::default()).unwrap();
/// let target = StateStore::open(b.path(), StateConfig::default()).unwrap();
/// let mut batch = source.apply_batch();
/// batch.put(1, b"k", b"v");
/// batch.set_applied(1, 5, 1);
/// batch.commit().unwrap();
///
/// let mut reader = source.snapshot_reader(1, b"", b"").unwrap();
/// let mut writer = target.snapshot_writer(reader.header().clone()).unwrap();
/// while let Some(chunk) = reader.next_chunk().unwrap() {
///     writer.write_chunk(&chunk).unwrap();
/// }
/// writer.finish(&reader.trailer().unwrap()).unwrap();
/// assert_eq!(target.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
/// assert_eq!(target.applied_state(1).unwrap().unwrap().index, 5);
/// ```
pub struct SnapshotWriter {
    store: StateStore,
    header: SnapshotHeader,
    batch: WriteBatch,
    next_seq: u64,
    tally: StreamTally,
    /// Last key of the last accepted chunk: keys must ascend across chunks
    /// too, or two chunks could overlap and the stream be misassembled.
    last_key: Option<Vec<u8>>,
    /// Largest write batch flushed so far, for tests of the memory bound.
    batch_bytes_max: usize,
    finished: bool,
}

impl StateStore {
    /// Starts applying a snapshot described by `header` (steps 1 and 2).
    ///
    /// Refused if the range already applied `header.index_applied` or more
    /// ([`StateError::StaleSnapshot`]) or another writer is active for it.
    pub fn snapshot_writer(&self, header: SnapshotHeader) -> Result<SnapshotWriter> {
        let range_id = header.range_id;
        if !header.end.is_empty() && header.start >= header.end {
            return Err(StateError::SnapshotProtocol {
                range_id,
                detail: "range start is not below its end".into(),
            });
        }
        {
            let mut busy = self.inner.busy.lock();
            if busy.contains_key(&range_id) {
                return Err(StateError::RangeBusy { range_id });
            }
            busy.insert(range_id, WriterState::Writing);
        }
        // From here on the range is ours; the writer's Drop releases it,
        // so build it before anything can fail.
        let mut writer = SnapshotWriter {
            store: self.clone(),
            header,
            batch: WriteBatch::default(),
            next_seq: 0,
            tally: StreamTally::default(),
            last_key: None,
            batch_bytes_max: 0,
            finished: false,
        };
        if let Err(error) = writer.begin() {
            // Nothing to roll back (the marker write failed or never ran):
            // release the range instead of marking it abandoned.
            writer.finished = true;
            return Err(error);
        }
        Ok(writer)
    }
}

impl SnapshotWriter {
    fn begin(&self) -> Result<()> {
        let store = &self.store;
        let header = &self.header;
        let range_id = header.range_id;
        if let Some(applied) = store.applied_state(range_id)? {
            if header.index_applied <= applied.index {
                return Err(StateError::StaleSnapshot {
                    range_id,
                    snapshot_index: header.index_applied,
                    applied_index: applied.index,
                });
            }
        }
        let marker = SnapshotMarker {
            index: header.index_applied,
            term: header.term_applied,
            start: header.start.to_vec(),
            end: header.end.to_vec(),
        };
        let mut batch = WriteBatch::default();
        batch.put_cf(
            store.meta_cf()?,
            keys::range_key(range_id, RangeField::SnapshotApplying),
            marker.encode(),
        );
        store.clear_data(&mut batch, &header.start, &header.end)?;
        store.write(batch, false, "begin snapshot apply")?;
        tracing::info!(
            range_id,
            index = header.index_applied,
            term = header.term_applied,
            "snapshot apply started"
        );
        Ok(())
    }

    fn protocol(&self, detail: String) -> StateError {
        StateError::SnapshotProtocol {
            range_id: self.header.range_id,
            detail,
        }
    }

    /// Verifies and writes one chunk (step 3). A rejected chunk changes
    /// nothing: the caller may retry with a good copy of the same `seq`, or
    /// [`SnapshotWriter::abort`].
    pub fn write_chunk(&mut self, chunk: &SnapshotChunk) -> Result<()> {
        chunk.verify()?;
        if chunk.seq != self.next_seq {
            return Err(self.protocol(format!(
                "chunk {} arrived, expected chunk {}",
                chunk.seq, self.next_seq
            )));
        }
        // Validate everything before writing anything, so a bad chunk
        // leaves no half of itself behind.
        let mut entries = 0u64;
        let mut last_key: Option<&[u8]> = self.last_key.as_deref();
        for entry in chunk.entries() {
            let (key, _) = entry?;
            if !in_range(key, &self.header.start, &self.header.end) {
                return Err(self.protocol(format!(
                    "chunk {} holds key {:02x?} outside the range",
                    chunk.seq,
                    &key[..key.len().min(32)]
                )));
            }
            if last_key.is_some_and(|last| last >= key) {
                return Err(self.protocol(format!(
                    "chunk {} keys are not in ascending order",
                    chunk.seq
                )));
            }
            last_key = Some(key);
            entries += 1;
        }
        let last_key = last_key.map(<[u8]>::to_vec);
        let cf = self.store.data_cf()?;
        for (key, value) in chunk.entries().flatten() {
            self.batch.put_cf(cf, key, value);
        }
        self.tally.add(&chunk.data, entries);
        self.next_seq += 1;
        self.last_key = last_key;
        if self.batch.size_in_bytes() >= self.store.config().snapshot_apply_batch_bytes {
            self.flush_batch()?;
        }
        metrics::counter!("flotilla_storage_snapshot_bytes_applied_total")
            .increment(chunk.data.len() as u64);
        Ok(())
    }

    fn flush_batch(&mut self) -> Result<()> {
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes_max = self.batch_bytes_max.max(batch.size_in_bytes());
        self.store.write(batch, false, "snapshot apply batch")
    }

    /// Checks `trailer` against the received chunks and completes the apply
    /// in one fsync'd batch (step 4). On a mismatch (a truncated or altered
    /// stream) the range is rolled back as by [`SnapshotWriter::abort`] and
    /// the mismatch is returned.
    pub fn finish(mut self, trailer: &SnapshotTrailer) -> Result<()> {
        let got = self.tally.trailer;
        if got != *trailer {
            let error = self.protocol(format!(
                "trailer says {} chunks / {} entries / {} bytes / checksum {:#010x}, \
                 received {} / {} / {} / {:#010x}",
                trailer.chunk_count,
                trailer.entry_count,
                trailer.data_bytes,
                trailer.checksum,
                got.chunk_count,
                got.entry_count,
                got.data_bytes,
                got.checksum
            ));
            self.abort()?;
            return Err(error);
        }
        let range_id = self.header.range_id;
        let meta = self.store.meta_cf()?;
        let mut batch = std::mem::take(&mut self.batch);
        batch.put_cf(
            meta,
            keys::range_key(range_id, RangeField::Applied),
            IndexTerm {
                index: self.header.index_applied,
                term: self.header.term_applied,
            }
            .encode(),
        );
        batch.put_cf(
            meta,
            keys::range_key(range_id, RangeField::Descriptor),
            seal(&self.header.descriptor),
        );
        batch.delete_cf(
            meta,
            keys::range_key(range_id, RangeField::SnapshotApplying),
        );
        batch.delete_cf(meta, keys::range_key(range_id, RangeField::NeedsSnapshot));
        self.batch_bytes_max = self.batch_bytes_max.max(batch.size_in_bytes());
        // fsync: once this returns the engine may drop Raft log entries up
        // to the snapshot index, so the snapshot must survive a power cut.
        self.store.write(batch, true, "finish snapshot apply")?;
        self.finished = true;
        tracing::info!(
            range_id,
            index = self.header.index_applied,
            chunks = got.chunk_count,
            entries = got.entry_count,
            bytes = got.data_bytes,
            "snapshot applied"
        );
        metrics::counter!("flotilla_storage_snapshots_applied_total").increment(1);
        Ok(())
    }

    /// Gives up: rolls the range back to empty + needs-snapshot now, as
    /// recovery would after a crash.
    pub fn abort(self) -> Result<()> {
        let store = self.store.clone();
        let range_id = self.header.range_id;
        drop(self); // marks the range abandoned, which recovery takes
        let recovered = store.recover_interrupted_snapshots()?;
        debug_assert!(recovered.iter().any(|r| r.range_id == range_id));
        Ok(())
    }

    /// Chunks accepted so far.
    pub fn chunks_written(&self) -> u64 {
        self.next_seq
    }

    /// Largest RocksDB write batch this writer has written, in bytes.
    pub fn batch_bytes_max(&self) -> usize {
        self.batch_bytes_max
    }

    /// The header this writer installs.
    pub fn header(&self) -> &SnapshotHeader {
        &self.header
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        let range_id: RangeId = self.header.range_id;
        let mut busy = self.store.inner.busy.lock();
        if self.finished {
            busy.remove(&range_id);
        } else {
            // Like a crash: the marker is on disk, the data half-written.
            busy.insert(range_id, WriterState::Abandoned);
            tracing::warn!(
                range_id,
                chunks = self.next_seq,
                "snapshot writer dropped unfinished; range refused until recovery"
            );
        }
    }
}
