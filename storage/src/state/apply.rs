//! Atomic apply of committed commands.

use super::codec::{seal, IndexTerm};
use super::error::{Result, StateError};
use super::keys::{self, RangeField};
use super::store::StateStore;
use super::RangeId;
use flotilla_raftgroup::{Index, Term};
use rocksdb::WriteBatch;
use std::collections::{BTreeMap, BTreeSet};

/// The writes of committed commands of one or several ranges, plus each
/// range's new applied index, committed as ONE RocksDB write batch: after a
/// crash either all of it is there or none of it, so the data always equals
/// the application of exactly `1..=applied` of every range.
///
/// Rules checked at [`ApplyBatch::commit`] (breaking one is an engine bug;
/// nothing is written then):
/// - every range that gets a put, delete or descriptor also gets
///   [`ApplyBatch::set_applied`];
/// - the applied index of a range only moves forward;
/// - a range with a snapshot in progress, or one that needs a snapshot, takes
///   no log entries.
///
/// ```
/// use flotilla_storage::state::{StateConfig, StateStore};
/// let dir = tempfile::tempdir().unwrap();
/// let store = StateStore::open(dir.path(), StateConfig::default()).unwrap();
/// let mut batch = store.apply_batch();
/// batch.put(1, b"a", b"1");          // range 1, entry 10
/// batch.delete(2, b"x");             // range 2, entry 4
/// batch.set_applied(1, 10, 3);
/// batch.set_applied(2, 4, 3);
/// batch.commit().unwrap();
/// ```
pub struct ApplyBatch<'a> {
    store: &'a StateStore,
    batch: WriteBatch,
    applied: BTreeMap<RangeId, IndexTerm>,
    touched: BTreeSet<RangeId>,
    /// Ranges whose metadata this batch removes (merged away): they take
    /// no applied index, whatever was recorded for them earlier.
    retired: BTreeSet<RangeId>,
    /// Set when a column family lookup failed while building; reported at
    /// commit so the builder methods stay infallible.
    error: Option<StateError>,
}

impl<'a> ApplyBatch<'a> {
    pub(crate) fn new(store: &'a StateStore) -> Self {
        ApplyBatch {
            store,
            batch: WriteBatch::default(),
            applied: BTreeMap::new(),
            touched: BTreeSet::new(),
            retired: BTreeSet::new(),
            error: None,
        }
    }

    /// Writes a user key of `range_id`.
    pub fn put(&mut self, range_id: RangeId, key: &[u8], value: &[u8]) {
        self.touched.insert(range_id);
        match self.store.data_cf() {
            Ok(cf) => self.batch.put_cf(cf, key, value),
            Err(e) => self.fail(e),
        }
    }

    /// Deletes a user key of `range_id`.
    pub fn delete(&mut self, range_id: RangeId, key: &[u8]) {
        self.touched.insert(range_id);
        match self.store.data_cf() {
            Ok(cf) => self.batch.delete_cf(cf, key),
            Err(e) => self.fail(e),
        }
    }

    /// Deletes user keys `[start, end)` (both finite) of `range_id`.
    pub fn delete_range(&mut self, range_id: RangeId, start: &[u8], end: &[u8]) {
        self.touched.insert(range_id);
        if start >= end {
            return;
        }
        match self.store.data_cf() {
            Ok(cf) => self.batch.delete_range_cf(cf, start, end),
            Err(e) => self.fail(e),
        }
    }

    /// Replaces the engine's descriptor of `range_id` (split, merge,
    /// membership change), atomically with the rest of the batch.
    pub fn set_descriptor(&mut self, range_id: RangeId, descriptor: &[u8]) {
        self.touched.insert(range_id);
        match self.store.meta_cf() {
            Ok(cf) => self.batch.put_cf(
                cf,
                keys::range_key(range_id, RangeField::Descriptor),
                seal(descriptor),
            ),
            Err(e) => self.fail(e),
        }
    }

    /// Removes every metadata record of `range_id` but none of its data:
    /// the range was merged into its neighbour, which now owns the keys.
    pub fn retire_range(&mut self, range_id: RangeId) {
        self.retired.insert(range_id);
        self.applied.remove(&range_id);
        self.touched.remove(&range_id);
        match self.store.meta_cf() {
            Ok(cf) => {
                let (start, end) = keys::range_meta_bounds(range_id);
                self.batch.delete_range_cf(cf, start, end);
            }
            Err(e) => self.fail(e),
        }
    }

    /// Records that this batch applies `range_id`'s log up to `index`
    /// (whose entry has `term`). Called once per range per batch with the
    /// last entry's position; a later call for the same range wins.
    pub fn set_applied(&mut self, range_id: RangeId, index: Index, term: Term) {
        if self.retired.contains(&range_id) {
            return;
        }
        let state = IndexTerm { index, term };
        if let Some(previous) = self.applied.insert(range_id, state) {
            debug_assert!(
                previous.index < index,
                "applied index must grow within a batch"
            );
        }
    }

    /// Number of write operations so far.
    pub fn len(&self) -> usize {
        self.batch.len()
    }

    /// Nothing to write?
    pub fn is_empty(&self) -> bool {
        self.batch.is_empty() && self.applied.is_empty()
    }

    /// Bytes of the underlying RocksDB write batch.
    pub fn size_bytes(&self) -> usize {
        self.batch.size_in_bytes()
    }

    fn fail(&mut self, error: StateError) {
        if self.error.is_none() {
            self.error = Some(error);
        }
    }

    /// Checks the rules and writes everything in one RocksDB write batch
    /// (RocksDB WAL on, no fsync unless `sync_apply`; see the module docs).
    pub fn commit(mut self) -> Result<()> {
        if let Some(error) = self.error.take() {
            return Err(error);
        }
        if let Some(&range_id) = self
            .touched
            .iter()
            .find(|id| !self.applied.contains_key(id))
        {
            return Err(StateError::MissingAppliedIndex { range_id });
        }
        if self.applied.is_empty() {
            return Ok(());
        }
        {
            let busy = self.store.inner.busy.lock();
            if let Some(&range_id) = self.applied.keys().find(|id| busy.contains_key(id)) {
                return Err(StateError::RangeBusy { range_id });
            }
        }
        let meta = self.store.meta_cf()?;
        // One batched lookup of every current applied index: a poller round
        // may carry thousands of ranges. Keys are sorted (big-endian ids in a
        // BTreeMap), which lets RocksDB skip sorting them.
        let applied_keys: Vec<[u8; keys::RANGE_KEY_LEN]> = self
            .applied
            .keys()
            .map(|&range_id| keys::range_key(range_id, RangeField::Applied))
            .collect();
        let current = self
            .store
            .inner
            .db
            .batched_multi_get_cf(meta, &applied_keys, true);
        for ((&range_id, state), current) in self.applied.iter().zip(current) {
            let current =
                current.map_err(|source| self.store.rocks("read applied state", source))?;
            match current {
                Some(raw) => {
                    let current = IndexTerm::decode("applied state", &raw)?;
                    if state.index <= current.index {
                        return Err(StateError::AppliedIndexRegression {
                            range_id,
                            current: current.index,
                            proposed: state.index,
                        });
                    }
                }
                None => {
                    // A new range (bootstrap, right half of a split) or one
                    // emptied by a rolled-back snapshot: only the former may
                    // take log entries.
                    if let Some(needed) = self.store.get_index_term(
                        range_id,
                        RangeField::NeedsSnapshot,
                        "needs-snapshot record",
                    )? {
                        return Err(StateError::NeedsSnapshot {
                            range_id,
                            index: needed.index,
                        });
                    }
                }
            }
            self.batch.put_cf(
                meta,
                keys::range_key(range_id, RangeField::Applied),
                state.encode(),
            );
        }
        let bytes = self.batch.size_in_bytes();
        let ranges = self.applied.len();
        self.store.write(self.batch, false, "apply batch")?;
        metrics::counter!("flotilla_storage_apply_batches_total").increment(1);
        metrics::counter!("flotilla_storage_apply_bytes_total").increment(bytes as u64);
        metrics::histogram!("flotilla_storage_apply_batch_ranges").record(ranges as f64);
        Ok(())
    }
}
