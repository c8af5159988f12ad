//! Reads of user data, latest or from a point-in-time snapshot.

use super::codec::IndexTerm;
use super::error::Result;
use super::keys::{self, RangeField};
use super::store::StateStore;
use super::RangeId;
use bytes::Bytes;
use rocksdb::{ReadOptions, SnapshotWithThreadMode, DB};

/// A consistent point-in-time view of the store (a RocksDB snapshot). Reads
/// through one view all see the same state, including the applied indexes,
/// so a caller can tell exactly which log prefix its reads reflect. Keep
/// views short-lived: RocksDB keeps every version they can see.
pub struct ReadView<'a> {
    store: &'a StateStore,
    snapshot: SnapshotWithThreadMode<'a, DB>,
}

impl<'a> ReadView<'a> {
    pub(crate) fn new(store: &'a StateStore) -> Self {
        ReadView {
            store,
            snapshot: store.inner.db.snapshot(),
        }
    }

    /// The value of a user key as of the view.
    pub fn get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        let value = self
            .snapshot
            .get_pinned_cf(self.store.data_cf()?, key)
            .map_err(|source| self.store.rocks("snapshot get", source))?;
        Ok(value.map(|v| Bytes::copy_from_slice(&v)))
    }

    /// Up to `limit` pairs of `[start, end)` as of the view (empty `end`: to
    /// the end of the key space).
    pub fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<(Bytes, Bytes)>> {
        let mut opts = ReadOptions::default();
        opts.set_snapshot(&self.snapshot);
        let mut out = Vec::new();
        scan_into(self.store, opts, start, end, limit, &mut out)?;
        Ok(out)
    }

    /// The applied state of a range as of the view: the reads of this view
    /// reflect exactly the log prefix `1..=index` of that range.
    pub fn applied_state(&self, range_id: RangeId) -> Result<Option<IndexTerm>> {
        let key = keys::range_key(range_id, RangeField::Applied);
        let raw = self
            .snapshot
            .get_pinned_cf(self.store.meta_cf()?, key)
            .map_err(|source| self.store.rocks("snapshot get applied state", source))?;
        match raw {
            Some(raw) => Ok(Some(IndexTerm::decode("applied state", &raw)?)),
            None => Ok(None),
        }
    }
}

/// Appends up to `limit` pairs of `[start, end)` read with `opts`.
pub(crate) fn scan_into(
    store: &StateStore,
    mut opts: ReadOptions,
    start: &[u8],
    end: &[u8],
    limit: usize,
    out: &mut Vec<(Bytes, Bytes)>,
) -> Result<()> {
    if limit == 0 || (!end.is_empty() && start >= end) {
        return Ok(());
    }
    if !end.is_empty() {
        // Lets RocksDB stop at the bound instead of skipping tombstones
        // past it.
        opts.set_iterate_upper_bound(end.to_vec());
    }
    let mut it = store.inner.db.raw_iterator_cf_opt(store.data_cf()?, opts);
    it.seek(start);
    while let Some((key, value)) = it.item() {
        if out.len() >= limit {
            break;
        }
        out.push((Bytes::copy_from_slice(key), Bytes::copy_from_slice(value)));
        it.next();
    }
    it.status().map_err(|source| store.rocks("scan", source))
}
