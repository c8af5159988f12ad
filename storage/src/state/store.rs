//! The store itself: opening RocksDB, identity, metadata and reads.

use super::apply::ApplyBatch;
use super::codec::{IndexTerm, SnapshotMarker, StoreIdentity};
use super::config::StateConfig;
use super::error::{Result, StateError};
use super::keys::{self, RangeField, CF_DATA, CF_META};
use super::read::{scan_into, ReadView};
use super::RangeId;
use bytes::Bytes;
use parking_lot::Mutex;
use rocksdb::{
    BlockBasedOptions, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, DBRecoveryMode,
    Options, ReadOptions, WriteBatch, WriteOptions, DB,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The RocksDB state machine store of one node: user data of every range
/// hosted here plus per-range metadata (applied index, descriptor, Raft
/// truncated state) and the node's identity.
///
/// Cheap to clone (an `Arc` inside); `Send + Sync`, so one instance is shared
/// by every apply thread and snapshot task of the node.
///
/// ```
/// use flotilla_storage::state::{StateConfig, StateStore};
/// let dir = tempfile::tempdir().unwrap();
/// let store = StateStore::open(dir.path(), StateConfig::default()).unwrap();
/// store.ensure_identity(7, 1).unwrap();
///
/// // Apply entry 5 of range 1: data and applied index in one atomic write.
/// let mut batch = store.apply_batch();
/// batch.put(1, b"k", b"v");
/// batch.set_applied(1, 5, 2);
/// batch.commit().unwrap();
///
/// assert_eq!(store.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
/// assert_eq!(store.applied_state(1).unwrap().map(|a| a.index), Some(5));
/// ```
#[derive(Clone)]
pub struct StateStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) db: DB,
    pub(crate) path: PathBuf,
    pub(crate) config: StateConfig,
    /// Ranges whose snapshot apply is running or was abandoned in this
    /// process: apply batches, readers and a second writer are refused.
    pub(crate) busy: Mutex<HashMap<RangeId, WriterState>>,
    /// Apply writes: RocksDB WAL on, no fsync (see the module docs).
    pub(crate) write_apply: WriteOptions,
    /// Rare writes whose loss the Raft log cannot repair: fsync'd.
    pub(crate) write_sync: WriteOptions,
    /// Serializes id allocation (read-modify-write of the counter).
    pub(crate) id_lock: Mutex<()>,
}

/// Why a range is in the busy map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriterState {
    /// A `SnapshotWriter` is alive: recovery must not touch the range.
    Writing,
    /// A writer was dropped unfinished: the range is half-written until
    /// recovery rolls it back. Refusing applies meanwhile keeps log entries
    /// off a range whose data is incomplete.
    Abandoned,
}

/// Everything the store knows about one range.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeState {
    /// Last applied log position; `None` for an unknown or emptied range.
    pub applied: Option<IndexTerm>,
    /// The engine's descriptor bytes.
    pub descriptor: Option<Bytes>,
    /// Raft log truncated state.
    pub truncated: Option<IndexTerm>,
    /// Set when an interrupted snapshot apply was rolled back: the range is
    /// empty and must receive a snapshot (at least this new) before it can
    /// apply log entries again.
    pub needs_snapshot: Option<IndexTerm>,
    /// A snapshot apply to this position is in progress (or was interrupted
    /// and not yet recovered).
    pub snapshot_in_progress: Option<IndexTerm>,
}

/// One interrupted snapshot apply that recovery rolled back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredSnapshot {
    pub range_id: RangeId,
    /// The position the interrupted snapshot was going to install.
    pub target: IndexTerm,
}

impl StateStore {
    /// Opens (creating if needed) the store in `dir`, then rolls back any
    /// snapshot apply a crash interrupted (see
    /// [`StateStore::recover_interrupted_snapshots`]).
    ///
    /// Only one process may have a directory open: RocksDB's `LOCK` file
    /// makes a second open fail with [`StateError::RocksDb`]. The database
    /// closes when the last clone of the store, [`SnapshotReader`] or
    /// [`SnapshotWriter`] is dropped.
    ///
    /// [`SnapshotReader`]: super::SnapshotReader
    /// [`SnapshotWriter`]: super::SnapshotWriter
    pub fn open(dir: impl AsRef<Path>, config: StateConfig) -> Result<StateStore> {
        config.validate()?;
        let path = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&path).map_err(|source| StateError::Io {
            op: "create store directory",
            path: path.clone(),
            source,
        })?;

        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        // A crash without fsync may leave a torn WAL tail. Point-in-time
        // recovery replays the longest intact prefix and stops there: every
        // surviving write batch is complete and no later batch survives
        // without the earlier ones. That prefix property is what makes
        // "data and applied index in one batch" crash-consistent.
        db_opts.set_wal_recovery_mode(DBRecoveryMode::PointInTime);
        // Flush data and meta memtables together. With the WAL on this is
        // belt and braces (the WAL is kept until every column family has
        // flushed), but it keeps data and applied index consistent in SST
        // files too, whatever the WAL retention does.
        db_opts.set_atomic_flush(true);
        db_opts.set_max_background_jobs(config.background_jobs_max);
        // Keep RocksDB's info LOG small: thousands of nodes in tests.
        db_opts.set_keep_log_file_num(4);
        db_opts.set_max_log_file_size(8 * 1024 * 1024);

        let mut data_opts = Options::default();
        data_opts.set_write_buffer_size(config.write_buffer_bytes);
        data_opts.set_compression_type(DBCompressionType::Lz4);
        let mut table = BlockBasedOptions::default();
        table.set_bloom_filter(10.0, false);
        data_opts.set_block_based_table_factory(&table);

        let mut meta_opts = Options::default();
        // Metadata is tiny and hot: a small memtable, no compression.
        meta_opts.set_write_buffer_size((config.write_buffer_bytes / 8).max(64 * 1024));
        meta_opts.set_compression_type(DBCompressionType::None);

        let cfs = vec![
            ColumnFamilyDescriptor::new(CF_DATA, data_opts),
            ColumnFamilyDescriptor::new(CF_META, meta_opts),
        ];
        let db = DB::open_cf_descriptors(&db_opts, &path, cfs).map_err(|source| {
            StateError::RocksDb {
                op: "open",
                path: path.clone(),
                source,
            }
        })?;

        let mut write_apply = WriteOptions::default();
        write_apply.set_sync(config.sync_apply);
        write_apply.disable_wal(false);
        let mut write_sync = WriteOptions::default();
        write_sync.set_sync(true);

        let store = StateStore {
            inner: Arc::new(Inner {
                db,
                path,
                config,
                busy: Mutex::new(HashMap::new()),
                write_apply,
                write_sync,
                id_lock: Mutex::new(()),
            }),
        };
        let recovered = store.recover_interrupted_snapshots()?;
        tracing::info!(
            path = %store.inner.path.display(),
            recovered_snapshots = recovered.len(),
            "state store opened"
        );
        Ok(store)
    }

    /// The directory of this store.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &StateConfig {
        &self.inner.config
    }

    // ----- identity -----------------------------------------------------

    /// Binds the directory to `(cluster_id, node_id)` on first use and
    /// refuses it afterwards if it belongs to anyone else.
    ///
    /// ```
    /// use flotilla_storage::state::{StateConfig, StateStore, StateError};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = StateStore::open(dir.path(), StateConfig::default()).unwrap();
    /// store.ensure_identity(7, 1).unwrap();
    /// store.ensure_identity(7, 1).unwrap(); // idempotent
    /// assert!(matches!(store.ensure_identity(7, 2), Err(StateError::IdentityMismatch { .. })));
    /// ```
    pub fn ensure_identity(&self, cluster_id: u64, node_id: u64) -> Result<StoreIdentity> {
        let wanted = StoreIdentity {
            cluster_id,
            node_id,
        };
        match self.identity()? {
            Some(found) if found == wanted => Ok(found),
            Some(found) => Err(StateError::IdentityMismatch {
                path: self.inner.path.clone(),
                found_cluster_id: found.cluster_id,
                found_node_id: found.node_id,
                expected_cluster_id: cluster_id,
                expected_node_id: node_id,
            }),
            None => {
                let mut batch = WriteBatch::default();
                batch.put_cf(self.meta_cf()?, keys::identity_key(), wanted.encode());
                self.write(batch, true, "write identity")?;
                tracing::info!(cluster_id, node_id, "state store identity recorded");
                Ok(wanted)
            }
        }
    }

    /// Reserves `count` consecutive ids from a node-wide counter that
    /// only grows and survives restarts (synced before returning). Returns
    /// the first. The engine builds cluster-unique range and replica ids
    /// from them.
    pub fn allocate_ids(&self, count: u64) -> Result<u64> {
        let _guard = self.inner.id_lock.lock();
        let key = keys::id_counter_key();
        let next = match self.get_meta(&key, "read id counter")? {
            Some(raw) if raw.len() == 8 => {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(&raw);
                u64::from_le_bytes(bytes)
            }
            Some(raw) => {
                return Err(StateError::Corrupt {
                    what: "id counter",
                    detail: format!("expected 8 bytes, found {}", raw.len()),
                })
            }
            None => 1,
        };
        let after = next.checked_add(count).ok_or(StateError::Corrupt {
            what: "id counter",
            detail: "exhausted".into(),
        })?;
        let mut batch = WriteBatch::default();
        batch.put_cf(self.meta_cf()?, key, after.to_le_bytes());
        self.write(batch, true, "write id counter")?;
        Ok(next)
    }

    /// The identity recorded by [`StateStore::ensure_identity`], if any.
    pub fn identity(&self) -> Result<Option<StoreIdentity>> {
        match self.get_meta(&keys::identity_key(), "read identity")? {
            Some(raw) => Ok(Some(StoreIdentity::decode(&raw)?)),
            None => Ok(None),
        }
    }

    // ----- reads ---------------------------------------------------------

    /// The latest value of a user key.
    pub fn get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        let value = self
            .inner
            .db
            .get_pinned_cf(self.data_cf()?, key)
            .map_err(|source| self.rocks("get", source))?;
        Ok(value.map(|v| Bytes::copy_from_slice(&v)))
    }

    /// Up to `limit` key/value pairs of `[start, end)` in key order (empty
    /// `end`: to the end of the key space), from the latest state. Use
    /// [`StateStore::read_view`] when several reads must agree.
    pub fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<(Bytes, Bytes)>> {
        let mut out = Vec::new();
        scan_into(self, ReadOptions::default(), start, end, limit, &mut out)?;
        Ok(out)
    }

    /// A point-in-time view: every read through it sees the same state,
    /// whatever is applied meanwhile.
    ///
    /// ```
    /// use flotilla_storage::state::{StateConfig, StateStore};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = StateStore::open(dir.path(), StateConfig::default()).unwrap();
    /// let view = store.read_view();
    /// let mut batch = store.apply_batch();
    /// batch.put(1, b"a", b"1");
    /// batch.set_applied(1, 1, 1);
    /// batch.commit().unwrap();
    /// assert_eq!(view.get(b"a").unwrap(), None); // taken before the write
    /// assert!(store.get(b"a").unwrap().is_some());
    /// ```
    pub fn read_view(&self) -> ReadView<'_> {
        ReadView::new(self)
    }

    // ----- per-range metadata -------------------------------------------

    /// Applied index and term of a range.
    pub fn applied_state(&self, range_id: RangeId) -> Result<Option<IndexTerm>> {
        self.get_index_term(range_id, RangeField::Applied, "applied state")
    }

    /// Raft log truncated state of a range.
    pub fn truncated_state(&self, range_id: RangeId) -> Result<Option<IndexTerm>> {
        self.get_index_term(range_id, RangeField::Truncated, "truncated state")
    }

    /// Records the Raft log truncated state, fsync'd. The fsync of the
    /// RocksDB WAL also makes every earlier apply durable, so once this
    /// returns the engine may delete Raft log entries up to `index` from the
    /// Raft WAL. Refused if `index` is beyond the applied index: entries not
    /// yet applied must never be forgotten.
    pub fn set_truncated_state(&self, range_id: RangeId, index: u64, term: u64) -> Result<()> {
        let applied = self.applied_state(range_id)?.map_or(0, |a| a.index);
        if index > applied {
            return Err(StateError::TruncatedBeyondApplied {
                range_id,
                index,
                applied,
            });
        }
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.meta_cf()?,
            keys::range_key(range_id, RangeField::Truncated),
            IndexTerm { index, term }.encode(),
        );
        self.write(batch, true, "write truncated state")
    }

    /// The engine's descriptor bytes of a range.
    pub fn range_descriptor(&self, range_id: RangeId) -> Result<Option<Bytes>> {
        let key = keys::range_key(range_id, RangeField::Descriptor);
        match self.get_meta(&key, "read descriptor")? {
            Some(raw) => Ok(Some(Bytes::copy_from_slice(super::codec::unseal(
                "range descriptor",
                &raw,
            )?))),
            None => Ok(None),
        }
    }

    /// All metadata of a range in one call.
    pub fn range_state(&self, range_id: RangeId) -> Result<RangeState> {
        let marker = self.snapshot_marker(range_id)?;
        Ok(RangeState {
            applied: self.applied_state(range_id)?,
            descriptor: self.range_descriptor(range_id)?,
            truncated: self.truncated_state(range_id)?,
            needs_snapshot: self.get_index_term(
                range_id,
                RangeField::NeedsSnapshot,
                "needs-snapshot record",
            )?,
            snapshot_in_progress: marker.map(|m| IndexTerm {
                index: m.index,
                term: m.term,
            }),
        })
    }

    /// Ids of every range with any metadata here other than a tombstone,
    /// ascending. The engine calls it at start to find its replicas.
    pub fn range_ids(&self) -> Result<Vec<RangeId>> {
        let (start, end) = keys::all_ranges_meta_bounds();
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(end);
        let mut it = self.inner.db.raw_iterator_cf_opt(self.meta_cf()?, opts);
        it.seek(&start);
        let mut ids: Vec<RangeId> = Vec::new();
        while let Some(key) = it.key() {
            if let Some((id, field)) = keys::parse_range_key(key) {
                if ids.last() != Some(&id) && field != Some(RangeField::Tombstone) {
                    ids.push(id);
                }
            }
            it.next();
        }
        it.status()
            .map_err(|source| self.rocks("scan range ids", source))?;
        Ok(ids)
    }

    // ----- writes ----------------------------------------------------------

    /// Starts an atomic apply batch; see [`ApplyBatch`].
    pub fn apply_batch(&self) -> ApplyBatch<'_> {
        ApplyBatch::new(self)
    }

    /// Makes every write so far durable (fsync of the RocksDB WAL). The
    /// engine calls it before it lets the Raft WAL forget entries: after it
    /// returns, every applied index read from this store survives a power
    /// cut.
    pub fn sync(&self) -> Result<()> {
        self.inner
            .db
            .flush_wal(true)
            .map_err(|source| self.rocks("sync wal", source))
    }

    /// Removes a replica: its user data `[start, end)` (empty `end`: to the
    /// end of the key space) and every metadata record, in one fsync'd
    /// write. Refused while a snapshot is being applied to the range (an
    /// abandoned one is fine: destroying clears it too).
    pub fn destroy_range(&self, range_id: RangeId, start: &[u8], end: &[u8]) -> Result<()> {
        self.destroy(range_id, start, end, None)
    }

    /// Removes a replica like [`StateStore::destroy_range`] and, in the
    /// same fsync'd write, leaves a tombstone: the configuration version at
    /// which the replica was removed. A snapshot or message of an older
    /// configuration must not recreate it (see [`StateStore::tombstone`]).
    pub fn destroy_replica(
        &self,
        range_id: RangeId,
        start: &[u8],
        end: &[u8],
        conf_version: u64,
    ) -> Result<()> {
        self.destroy(range_id, start, end, Some(conf_version))
    }

    fn destroy(
        &self,
        range_id: RangeId,
        start: &[u8],
        end: &[u8],
        tombstone: Option<u64>,
    ) -> Result<()> {
        let mut busy = self.inner.busy.lock();
        if busy.get(&range_id) == Some(&WriterState::Writing) {
            return Err(StateError::RangeBusy { range_id });
        }
        let mut batch = WriteBatch::default();
        self.clear_data(&mut batch, start, end)?;
        let (meta_start, meta_end) = keys::range_meta_bounds(range_id);
        let meta = self.meta_cf()?;
        batch.delete_range_cf(meta, meta_start, meta_end);
        if let Some(version) = tombstone {
            batch.put_cf(
                meta,
                keys::range_key(range_id, RangeField::Tombstone),
                super::codec::seal(&version.to_le_bytes()),
            );
        }
        self.write(batch, true, "destroy range")?;
        busy.remove(&range_id);
        drop(busy);
        tracing::info!(range_id, ?tombstone, "replica data and metadata destroyed");
        Ok(())
    }

    /// The configuration version at which this node's replica of the range
    /// was removed, if it was.
    pub fn tombstone(&self, range_id: RangeId) -> Result<Option<u64>> {
        let key = keys::range_key(range_id, RangeField::Tombstone);
        let Some(raw) = self.get_meta(&key, "read tombstone")? else {
            return Ok(None);
        };
        let payload = super::codec::unseal("tombstone", &raw)?;
        let mut reader = super::codec::Decoder::new("tombstone", payload);
        let version = reader.u64()?;
        reader.finish()?;
        Ok(Some(version))
    }

    /// Rolls back every snapshot apply that was interrupted (its marker is
    /// still there: crash, or writer dropped unfinished) and is not running
    /// now in this process. Called by
    /// [`StateStore::open`]; safe to call again at any time.
    ///
    /// Roll back, not finish: the chunks not yet written exist only at the
    /// sender, whose point-in-time snapshot died with the stream, and the
    /// range's old data was already cleared in step 2. The only consistent
    /// state we can reach alone is "empty": data `[start, end)` cleared,
    /// applied state removed, and a needs-snapshot record so that the engine
    /// asks the leader for a fresh snapshot and [`ApplyBatch::commit`]
    /// refuses log entries meanwhile (applying them to an empty state would
    /// break exactly-once). One fsync'd batch, so recovery itself is
    /// crash-safe and idempotent.
    pub fn recover_interrupted_snapshots(&self) -> Result<Vec<RecoveredSnapshot>> {
        let (start, end) = keys::all_ranges_meta_bounds();
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(end);
        let mut markers = Vec::new();
        {
            let mut it = self.inner.db.raw_iterator_cf_opt(self.meta_cf()?, opts);
            it.seek(&start);
            while let Some((key, value)) = it.item() {
                if let Some((id, Some(RangeField::SnapshotApplying))) = keys::parse_range_key(key) {
                    markers.push((id, SnapshotMarker::decode(value)?));
                }
                it.next();
            }
            it.status()
                .map_err(|source| self.rocks("scan snapshot markers", source))?;
        }
        let mut recovered = Vec::new();
        for (range_id, marker) in markers {
            // Held across the write so a new writer cannot start in between.
            let mut busy = self.inner.busy.lock();
            if busy.get(&range_id) == Some(&WriterState::Writing) {
                continue; // a live writer in this process owns it
            }
            let meta = self.meta_cf()?;
            let mut batch = WriteBatch::default();
            self.clear_data(&mut batch, &marker.start, &marker.end)?;
            batch.delete_cf(meta, keys::range_key(range_id, RangeField::Applied));
            batch.delete_cf(
                meta,
                keys::range_key(range_id, RangeField::SnapshotApplying),
            );
            let target = IndexTerm {
                index: marker.index,
                term: marker.term,
            };
            batch.put_cf(
                meta,
                keys::range_key(range_id, RangeField::NeedsSnapshot),
                target.encode(),
            );
            self.write(batch, true, "roll back interrupted snapshot")?;
            busy.remove(&range_id);
            drop(busy);
            tracing::warn!(
                range_id,
                index = target.index,
                term = target.term,
                "interrupted snapshot apply rolled back; range needs a new snapshot"
            );
            metrics::counter!("flotilla_storage_snapshot_rollbacks_total").increment(1);
            recovered.push(RecoveredSnapshot { range_id, target });
        }
        Ok(recovered)
    }

    // ----- helpers for the other files of this module ---------------------

    pub(crate) fn data_cf(&self) -> Result<&ColumnFamily> {
        self.cf(CF_DATA)
    }

    pub(crate) fn meta_cf(&self) -> Result<&ColumnFamily> {
        self.cf(CF_META)
    }

    fn cf(&self, name: &'static str) -> Result<&ColumnFamily> {
        // Both column families are created at open; a miss means the
        // directory was tampered with underneath us.
        self.inner
            .db
            .cf_handle(name)
            .ok_or_else(|| StateError::corrupt("column family", format!("{name} missing")))
    }

    pub(crate) fn rocks(&self, op: &'static str, source: rocksdb::Error) -> StateError {
        StateError::RocksDb {
            op,
            path: self.inner.path.clone(),
            source,
        }
    }

    pub(crate) fn write(&self, batch: WriteBatch, sync: bool, op: &'static str) -> Result<()> {
        let opts = if sync {
            &self.inner.write_sync
        } else {
            &self.inner.write_apply
        };
        self.inner
            .db
            .write_opt(batch, opts)
            .map_err(|source| self.rocks(op, source))
    }

    pub(crate) fn get_meta(&self, key: &[u8], op: &'static str) -> Result<Option<Vec<u8>>> {
        let value = self
            .inner
            .db
            .get_pinned_cf(self.meta_cf()?, key)
            .map_err(|source| self.rocks(op, source))?;
        Ok(value.map(|v| v.to_vec()))
    }

    pub(crate) fn get_index_term(
        &self,
        range_id: RangeId,
        field: RangeField,
        what: &'static str,
    ) -> Result<Option<IndexTerm>> {
        match self.get_meta(&keys::range_key(range_id, field), what)? {
            Some(raw) => Ok(Some(IndexTerm::decode(what, &raw)?)),
            None => Ok(None),
        }
    }

    pub(crate) fn snapshot_marker(&self, range_id: RangeId) -> Result<Option<SnapshotMarker>> {
        let key = keys::range_key(range_id, RangeField::SnapshotApplying);
        match self.get_meta(&key, "read snapshot marker")? {
            Some(raw) => Ok(Some(SnapshotMarker::decode(&raw)?)),
            None => Ok(None),
        }
    }

    /// Adds to `batch` the deletion of user data `[start, end)`.
    ///
    /// RocksDB's `delete_range` needs a finite end, so for the last range
    /// (empty `end`) we bound it just past the largest key present now. A
    /// key written later beyond it would belong to this range, and nothing
    /// writes to a range while it is being cleared (busy set, or the engine
    /// destroying the replica), so the bound is exact.
    pub(crate) fn clear_data(
        &self,
        batch: &mut WriteBatch,
        start: &[u8],
        end: &[u8],
    ) -> Result<()> {
        let cf = self.data_cf()?;
        if !end.is_empty() {
            if start < end {
                batch.delete_range_cf(cf, start, end);
            }
            return Ok(());
        }
        let mut it = self.inner.db.raw_iterator_cf(cf);
        it.seek_to_last();
        let last = it.key().map(|k| k.to_vec());
        it.status()
            .map_err(|source| self.rocks("find last key", source))?;
        if let Some(mut last) = last {
            if last.as_slice() >= start {
                last.push(0); // smallest key greater than `last`
                batch.delete_range_cf(cf, start, last.as_slice());
            }
        }
        Ok(())
    }
}
