//! Segment files: naming, creation with preallocation, sealing, listing.
//!
//! A segment is preallocated to its target size with `File::set_len` when
//! it is created (one metadata commit per segment, not per append), and the
//! written extent is tracked in memory: appends inside the allocated size
//! only need `fdatasync`. `set_len` leaves a hole, though: the zero-fill
//! thread (`prefill.rs`) writes zeros ahead of the appends so their sync
//! need not allocate blocks either. When a segment is sealed (a newer one
//! becomes active) it is cut to its written length, so only the last
//! segment ever has a zero-filled tail.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::{Result, WalError};
use super::format::{encode_file_header, FILE_HEADER_LEN};

const SUFFIX: &str = ".wal";

/// `0000000000000007.wal`: fixed width so names sort like numbers.
pub(crate) fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016x}{SUFFIX}"))
}

/// Segment files of `dir`, oldest first. Other files are ignored.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let read =
        std::fs::read_dir(dir).map_err(|e| WalError::io("listing the wal directory", dir, e))?;
    for item in read {
        let item = item.map_err(|e| WalError::io("listing the wal directory", dir, e))?;
        let name = item.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(SUFFIX) else {
            continue;
        };
        if stem.len() != 16 {
            continue;
        }
        if let Ok(seq) = u64::from_str_radix(stem, 16) {
            out.push((seq, item.path()));
        }
    }
    out.sort_unstable_by_key(|&(seq, _)| seq);
    Ok(out)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| WalError::io("syncing the wal directory", dir, e))
}

/// The segment being appended to.
#[derive(Debug)]
pub(crate) struct ActiveSegment {
    pub seq: u64,
    pub path: PathBuf,
    pub file: Arc<File>,
    /// Bytes written so far (header included): where the next record goes.
    pub written: u64,
    /// Current file length (preallocated).
    pub allocated: u64,
    /// The file length grew since the last sync: the next sync must be a
    /// full `fsync` (metadata), not `fdatasync`.
    pub size_changed: bool,
    /// End of the checkpoint record: a segment holding nothing more is
    /// never rotated away (a batch larger than the target goes in it).
    pub checkpoint_end: u64,
}

impl ActiveSegment {
    /// Creates segment `seq` with its header, preallocated to `prealloc_bytes`.
    pub fn create(dir: &Path, seq: u64, prealloc_bytes: u64) -> Result<Self> {
        let path = segment_path(dir, seq);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| WalError::io("creating a segment", &path, e))?;
        file.write_all_at(&encode_file_header(seq), 0)
            .map_err(|e| WalError::io("writing a segment header", &path, e))?;
        let allocated = prealloc_bytes.max(FILE_HEADER_LEN as u64);
        file.set_len(allocated)
            .map_err(|e| WalError::io("preallocating a segment", &path, e))?;
        Ok(ActiveSegment {
            seq,
            path,
            file: Arc::new(file),
            written: FILE_HEADER_LEN as u64,
            allocated,
            size_changed: true,
            checkpoint_end: FILE_HEADER_LEN as u64,
        })
    }

    pub fn written_floor(&self) -> u64 {
        self.checkpoint_end
    }

    /// Writes `buf` at the end of the written extent (pwrite).
    pub fn append(&mut self, buf: &[u8]) -> Result<()> {
        let end = self.written + buf.len() as u64;
        if end > self.allocated {
            // Grow in big steps so that a segment over its target (one huge
            // batch) does not pay a metadata commit per append.
            let grow = end.max(self.allocated + self.allocated / 4);
            self.file
                .set_len(grow)
                .map_err(|e| WalError::io("growing a segment", &self.path, e))?;
            self.allocated = grow;
            self.size_changed = true;
        }
        self.file
            .write_all_at(buf, self.written)
            .map_err(|e| WalError::io("appending to a segment", &self.path, e))?;
        self.written = end;
        Ok(())
    }

    pub fn sync(&mut self) -> Result<()> {
        let result = if self.size_changed {
            self.file.sync_all()
        } else {
            self.file.sync_data()
        };
        result.map_err(|e| WalError::io("syncing a segment", &self.path, e))?;
        self.size_changed = false;
        Ok(())
    }

    /// Cuts the preallocated tail and syncs: the segment is now immutable.
    pub fn seal(&mut self) -> Result<()> {
        self.file
            .set_len(self.written)
            .map_err(|e| WalError::io("sealing a segment", &self.path, e))?;
        self.allocated = self.written;
        self.size_changed = true;
        self.sync()
    }
}
