//! The RocksDB state machine store: applied user data, range metadata and
//! range snapshots of one node.
//!
//! # Layout
//!
//! Two column families (key formats in `keys.rs`):
//! `data` holds raw user keys — ranges are disjoint `[start, end)` slices of
//! it, so a split or merge moves no data — and `meta` holds the node's
//! identity and, per range, the applied index/term, the engine's opaque
//! descriptor, the Raft truncated state, and the snapshot-apply marker.
//!
//! # Durability: which RocksDB settings, and why they are safe
//!
//! The Raft WAL (`crate::wal`) is the source of truth for committed entries;
//! this store is a cache of their application that must never be *wrong*,
//! only possibly *behind*. Settings:
//!
//! - **RocksDB WAL on, no fsync per apply batch** (`sync_apply = false`).
//!   Without the WAL, every write still in a memtable would vanish even on a
//!   plain process crash; with it, a process crash (kill -9) loses nothing,
//!   and an OS crash or power cut loses only an unsynced *suffix* of
//!   batches. Paying an fsync per apply batch would double the node's fsync
//!   rate for no gain, because of the next point.
//! - **Applied index in the same WriteBatch as the data.** A RocksDB write
//!   batch is atomic, and with **`WALRecoveryMode::PointInTime`** recovery
//!   replays the longest intact prefix of the WAL and stops at the first
//!   torn or missing record. So after any crash the store holds, for every
//!   range, the data of exactly the batches up to some point, together with
//!   the applied index those batches wrote: data = apply(`1..=applied`).
//!   Commands need not be idempotent: the engine re-applies from
//!   `applied + 1` using the Raft log, and nothing at or below `applied` is
//!   ever applied twice. [`ApplyBatch::commit`] refuses a batch whose applied
//!   index does not move forward, or that writes a range without setting its
//!   applied index, so the engine cannot break this by accident.
//!   After a power cut the applied index may therefore be *lower* than it
//!   was before; nothing is lost, because every applied entry was committed,
//!   i.e. durable in the Raft WAL of a majority, before it was applied.
//!   `tests/state_crash.rs` checks this both for kill -9 and for a power cut
//!   simulated by cutting the RocksDB WAL at a random byte.
//! - **The one obligation on the engine:** the Raft WAL may only forget
//!   (compact) entries up to an index whose application is *durable*.
//!   Record the compaction with [`StateStore::set_truncated_state`] first:
//!   it is fsync'd, and an fsync of the RocksDB WAL covers every earlier
//!   write, so every apply up to the truncated index is then durable (it
//!   also refuses to truncate past the applied index). [`StateStore::sync`]
//!   gives the same guarantee without recording anything. Otherwise a power
//!   cut could lose applies whose entries are already gone from the Raft
//!   log.
//! - **fsync'd writes** are the rare ones the Raft log cannot replay: the
//!   node identity, the last batch of a snapshot apply (the engine compacts
//!   the Raft log to the snapshot index right after), snapshot rollback, the
//!   truncated state and replica destruction.
//! - **`atomic_flush`** flushes the data and meta memtables together, so
//!   SST files never hold data without its applied index or vice versa,
//!   independently of WAL retention.
//! - The data column family uses lz4 compression and a bloom filter; meta is
//!   small, uncompressed.
//! - Rejected alternative: RocksDB WAL *off* (apply only to memtables, rely
//!   on the Raft log to replay whatever was not flushed). It saves one
//!   sequential write per batch, but couples Raft log compaction to RocksDB
//!   memtable flushes (entries must be kept until the SST holding their
//!   effect is durable) and makes every restart replay everything since the
//!   last flush. Worth revisiting with numbers, not before.
//!
//! # Snapshots
//!
//! [`SnapshotReader`] streams `[start, end)` of a range from a RocksDB
//! point-in-time snapshot as bounded, checksummed [`SnapshotChunk`]s between
//! a [`SnapshotHeader`] and a [`SnapshotTrailer`]. [`SnapshotWriter`]
//! installs them: marker + clear, bounded batches, then one fsync'd batch
//! that sets applied state and descriptor and removes the marker. A crash in
//! between leaves the marker; recovery (run by [`StateStore::open`]) **rolls
//! back** — clears the range, drops its applied state and records
//! "needs snapshot" — because the missing chunks exist only at the sender
//! and the old data is already gone, so finishing is impossible locally.
//!
//! # Example
//!
//! ```
//! use flotilla_storage::state::{StateConfig, StateStore};
//! let dir = tempfile::tempdir().unwrap();
//! let store = StateStore::open(dir.path(), StateConfig::default()).unwrap();
//! store.ensure_identity(1, 1).unwrap();
//! let mut batch = store.apply_batch();
//! batch.put(7, b"user/1", b"alice");
//! batch.set_applied(7, 1, 1);
//! batch.commit().unwrap();
//! let rows = store.scan(b"user/", b"user0", 10).unwrap();
//! assert_eq!(rows.len(), 1);
//! ```

mod apply;
mod codec;
mod config;
mod error;
mod keys;
mod read;
mod size;
mod snapshot_format;
mod snapshot_reader;
mod snapshot_writer;
mod store;

/// Identifies a range (and its Raft group) across the cluster.
pub type RangeId = u64;

pub use apply::ApplyBatch;
pub use codec::{IndexTerm, StoreIdentity};
pub use config::{StateConfig, SNAPSHOT_CHUNK_BYTES_MAX, SNAPSHOT_CHUNK_BYTES_MIN};
pub use error::{Result, StateError};
pub use read::ReadView;
pub use size::RangeSize;
pub use snapshot_format::{
    ChunkEntries, SnapshotChunk, SnapshotHeader, SnapshotTrailer, CHUNK_FRAME_BYTES,
    ENTRY_OVERHEAD_BYTES,
};
pub use snapshot_reader::SnapshotReader;
pub use snapshot_writer::SnapshotWriter;
pub use store::{RangeState, RecoveredSnapshot, StateStore};
