//! Typed WAL errors. Every error that comes from a file names the file and,
//! where it matters, the byte offset, so an operator can look at it.

use std::path::PathBuf;
use std::sync::Arc;

/// Result type of the WAL.
pub type Result<T, E = WalError> = std::result::Result<T, E>;

/// Why a WAL operation failed.
///
/// Errors are `Clone` because one failed group commit fans out the same
/// error to every writer whose batch was in it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WalError {
    /// An I/O call failed. `what` says which operation.
    #[error("wal i/o error while {what} ({path}): {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    /// A record before the end of the log is damaged. Opening refuses unless
    /// [`crate::wal::WalConfig::salvage`] is set.
    #[error("wal corruption in {path} at offset {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// A batch is larger than [`crate::wal::WalConfig::batch_bytes_max`].
    #[error("write batch of {bytes} bytes exceeds the maximum of {max} bytes")]
    BatchTooLarge { bytes: u64, max: u64 },
    /// A batch contradicts the log (gap, append below the compaction point,
    /// entries not contiguous...). Nothing of the batch was written.
    #[error("invalid write batch for group {group}: {reason}")]
    InvalidBatch { group: u64, reason: String },
    /// The configuration is impossible.
    #[error("invalid wal config: {0}")]
    Config(String),
    /// A previous write or fsync failed: the page cache can no longer be
    /// trusted, so the WAL refuses further writes until it is reopened.
    #[error("wal is poisoned by an earlier i/o failure: {0}")]
    Poisoned(String),
}

impl WalError {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        WalError::Io {
            what,
            path: path.into(),
            source: Arc::new(source),
        }
    }

    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Self {
        WalError::Corrupt {
            path: path.into(),
            offset,
            reason: reason.into(),
        }
    }
}
