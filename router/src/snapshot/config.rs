//! Settings of the snapshot scheduler, with the defaults argued in the
//! module docs of [`crate::snapshot`].

use std::path::PathBuf;
use std::time::Duration;

use super::chunk::CHUNK_RAW_BYTES_LIMIT;
use super::error::SnapshotError;

/// 1 MiB: the storage reader's chunk target (see the module docs).
pub const CHUNK_BYTES_MAX_DEFAULT: usize = 1 << 20;
/// 32 MiB/s ≈ 268 Mbit/s, about a quarter of a 1 Gbit link.
pub const SEND_BYTES_PER_SEC_MAX_DEFAULT: u64 = 32 << 20;

/// Settings of one node's snapshot scheduler.
///
/// ```
/// use flotilla_router::snapshot::SnapshotConfig;
/// let config = SnapshotConfig::new("/var/lib/flotilla/snapshot-staging");
/// assert_eq!(config.sends_concurrent_max, 2);
/// config.validate().unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct SnapshotConfig {
    /// Directory of the receiver's staging files (one per transfer). Every
    /// file in it named `*.snapstage` is deleted when the service starts.
    pub staging_dir: PathBuf,
    /// Largest chunk put on the wire; a bigger chunk from the source is
    /// split. The engine builds its storage reader with this target.
    pub chunk_bytes_max: usize,
    /// Snapshots this node sends at once; further `send` calls wait.
    pub sends_concurrent_max: usize,
    /// Snapshots this node receives (stages or holds staged) at once;
    /// further reservations are refused.
    pub receives_concurrent_max: usize,
    /// Node-wide ceiling of snapshot bytes sent per second (all sends
    /// share it), measured on the wire (after compression).
    pub send_bytes_per_sec_max: u64,
    /// Chunks a sender may have sent but not yet acknowledged. Bounds the
    /// receiver's queue per transfer.
    pub window_chunks: u32,
    /// A transfer with no frame for this long is abandoned (both sides).
    pub timeout_idle: Duration,
    /// Largest snapshot accepted (announced or actually received).
    pub snapshot_bytes_max: u64,
}

impl SnapshotConfig {
    /// Defaults with the given staging directory.
    pub fn new(staging_dir: impl Into<PathBuf>) -> SnapshotConfig {
        SnapshotConfig {
            staging_dir: staging_dir.into(),
            chunk_bytes_max: CHUNK_BYTES_MAX_DEFAULT,
            sends_concurrent_max: 2,
            receives_concurrent_max: 2,
            send_bytes_per_sec_max: SEND_BYTES_PER_SEC_MAX_DEFAULT,
            window_chunks: 4,
            timeout_idle: Duration::from_secs(30),
            snapshot_bytes_max: 64 << 30,
        }
    }

    /// Rejects impossible combinations with a message naming the setting.
    pub fn validate(&self) -> Result<(), SnapshotError> {
        let bad = |m: String| Err(SnapshotError::Config(m));
        // Half the protocol limit: a chunk frame must also fit the
        // transport's frame limit (16 MiB by default) with its headers.
        let chunk_bytes_limit = CHUNK_RAW_BYTES_LIMIT as usize / 2;
        if self.chunk_bytes_max < 4096 || self.chunk_bytes_max > chunk_bytes_limit {
            return bad(format!(
                "chunk_bytes_max = {} must be within 4096..={chunk_bytes_limit}",
                self.chunk_bytes_max
            ));
        }
        if !(1..=64).contains(&self.sends_concurrent_max) {
            return bad(format!(
                "sends_concurrent_max = {} must be within 1..=64",
                self.sends_concurrent_max
            ));
        }
        if !(1..=64).contains(&self.receives_concurrent_max) {
            return bad(format!(
                "receives_concurrent_max = {} must be within 1..=64",
                self.receives_concurrent_max
            ));
        }
        if !(1..=64).contains(&self.window_chunks) {
            return bad(format!(
                "window_chunks = {} must be within 1..=64",
                self.window_chunks
            ));
        }
        if self.timeout_idle < Duration::from_secs(1) {
            return bad(format!(
                "timeout_idle = {:?} must be at least 1 s",
                self.timeout_idle
            ));
        }
        // Every concurrent send may be throttled while a receiver waits for
        // its next chunk; that wait must stay well inside the idle timeout
        // or throttling alone would abort transfers.
        let worst_wait_secs = (self.chunk_bytes_max as f64) * (self.sends_concurrent_max as f64)
            / (self.send_bytes_per_sec_max.max(1) as f64);
        if worst_wait_secs * 4.0 > self.timeout_idle.as_secs_f64() {
            return bad(format!(
                "send_bytes_per_sec_max = {} is too low: one chunk per concurrent send takes {:.1} s, \
                 more than a quarter of timeout_idle = {:?}",
                self.send_bytes_per_sec_max, worst_wait_secs, self.timeout_idle
            ));
        }
        if self.snapshot_bytes_max == 0 {
            return bad("snapshot_bytes_max must be > 0".to_string());
        }
        Ok(())
    }
}
