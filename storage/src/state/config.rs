//! Settings of the state machine store.

use super::error::{Result, StateError};

/// Tunables of [`StateStore`](super::StateStore). `Default` gives the
/// production defaults; every field is validated by [`StateConfig::validate`]
/// when the store opens.
///
/// ```
/// use flotilla_storage::state::StateConfig;
/// let config = StateConfig {
///     snapshot_chunk_bytes: 256 * 1024,
///     ..StateConfig::default()
/// };
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateConfig {
    /// Key/value bytes per snapshot chunk (encoded entries; a chunk exceeds
    /// it by at most one entry). Default 1 MiB, as in DESIGN.md.
    pub snapshot_chunk_bytes: usize,
    /// Bytes buffered in one RocksDB write batch while applying a received
    /// snapshot, so a huge snapshot never sits in memory at once.
    /// Default 4 MiB.
    pub snapshot_apply_batch_bytes: usize,
    /// fsync the RocksDB WAL on every apply batch. Default `false`: the Raft
    /// WAL already holds every committed entry, see the module docs for why
    /// that is safe. Turn on only for debugging or for a deployment whose
    /// Raft WAL is not durable.
    pub sync_apply: bool,
    /// RocksDB memtable size per column family.
    pub write_buffer_bytes: usize,
    /// RocksDB background flush + compaction threads.
    pub background_jobs_max: i32,
}

/// Smallest accepted chunk size: below this the per-chunk overhead dominates.
pub const SNAPSHOT_CHUNK_BYTES_MIN: usize = 1024;
/// Largest accepted chunk size: a chunk travels as one frame.
pub const SNAPSHOT_CHUNK_BYTES_MAX: usize = 64 * 1024 * 1024;

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            snapshot_chunk_bytes: 1024 * 1024,
            snapshot_apply_batch_bytes: 4 * 1024 * 1024,
            sync_apply: false,
            write_buffer_bytes: 64 * 1024 * 1024,
            background_jobs_max: 2,
        }
    }
}

impl StateConfig {
    /// Checks that the values are usable together.
    pub fn validate(&self) -> Result<()> {
        if !(SNAPSHOT_CHUNK_BYTES_MIN..=SNAPSHOT_CHUNK_BYTES_MAX)
            .contains(&self.snapshot_chunk_bytes)
        {
            return Err(StateError::InvalidConfig(format!(
                "snapshot_chunk_bytes = {} must be in {SNAPSHOT_CHUNK_BYTES_MIN}..={SNAPSHOT_CHUNK_BYTES_MAX}",
                self.snapshot_chunk_bytes
            )));
        }
        if self.snapshot_apply_batch_bytes == 0 {
            return Err(StateError::InvalidConfig(
                "snapshot_apply_batch_bytes must be > 0".into(),
            ));
        }
        if self.write_buffer_bytes < 64 * 1024 {
            return Err(StateError::InvalidConfig(format!(
                "write_buffer_bytes = {} is below 64 KiB",
                self.write_buffer_bytes
            )));
        }
        if self.background_jobs_max < 1 {
            return Err(StateError::InvalidConfig(
                "background_jobs_max must be >= 1".into(),
            ));
        }
        Ok(())
    }
}
