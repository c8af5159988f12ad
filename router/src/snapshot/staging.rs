//! The receiver's staging directory: one file per transfer, removed on any
//! failure, on cancellation and when the staged snapshot is dropped; stale
//! files of a previous process are removed at startup.
//!
//! A staging file is a sequence of records, each
//! `len: u32 | seq: u64 | flags: u8 | raw_len: u32 | crc: u32 | payload`
//! (`len` counts what follows it). Chunks are stored exactly as received,
//! still compressed, so staging costs one write per chunk and the reader
//! re-verifies every CRC: a disk that rots between staging and apply is
//! caught too. Everything here is blocking `std::fs`; async callers run it
//! on `spawn_blocking`.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::OwnedSemaphorePermit;

use super::chunk::{WholeChecksum, WireChunk, CHUNK_RAW_BYTES_LIMIT};
use super::error::SnapshotError;
use crate::{NodeId, RangeId};

/// Suffix of staging files; only files with it are ever deleted.
pub const STAGING_SUFFIX: &str = "snapstage";

const RECORD_FIXED_BYTES: usize = 8 + 1 + 4 + 4;

/// The staging directory.
#[derive(Debug)]
pub(crate) struct Staging {
    dir: PathBuf,
    next_file: AtomicU64,
}

impl Staging {
    /// Creates the directory if needed and deletes every staging file left
    /// by a previous process (a transfer never survives a restart: the
    /// sender retries from the start). Returns how many were removed.
    pub fn open(dir: &Path) -> Result<(Staging, usize), SnapshotError> {
        let io_err = |source| SnapshotError::Staging {
            path: dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir).map_err(io_err)?;
        let mut removed = 0;
        for entry in fs::read_dir(dir).map_err(io_err)? {
            let path = entry.map_err(io_err)?.path();
            if path.extension().is_some_and(|ext| ext == STAGING_SUFFIX) {
                fs::remove_file(&path).map_err(|source| SnapshotError::Staging {
                    path: path.clone(),
                    source,
                })?;
                removed += 1;
            }
        }
        Ok((
            Staging {
                dir: dir.to_path_buf(),
                next_file: AtomicU64::new(1),
            },
            removed,
        ))
    }

    /// Creates the file of a new transfer. The local counter in the name
    /// keeps names unique even when a sender reuses a transfer id.
    pub fn create(
        &self,
        range_id: RangeId,
        from: NodeId,
        transfer_id: u64,
    ) -> Result<StagingFile, SnapshotError> {
        let n = self.next_file.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!(
            "r{range_id}-n{from}-t{transfer_id:x}-{n}.{STAGING_SUFFIX}"
        ));
        let file = File::create_new(&path).map_err(|source| SnapshotError::Staging {
            path: path.clone(),
            source,
        })?;
        Ok(StagingFile {
            file: Some(file),
            path: Some(path),
        })
    }
}

/// A staging file being written. Dropping it deletes the file.
#[derive(Debug)]
pub(crate) struct StagingFile {
    file: Option<File>,
    path: Option<PathBuf>,
}

impl StagingFile {
    /// Appends one verified chunk.
    pub fn append(&mut self, chunk: &WireChunk) -> Result<(), SnapshotError> {
        let len = RECORD_FIXED_BYTES + chunk.payload.len();
        let mut fixed = [0u8; 4 + RECORD_FIXED_BYTES];
        fixed[..4].copy_from_slice(&(len as u32).to_le_bytes());
        fixed[4..12].copy_from_slice(&chunk.seq.to_le_bytes());
        fixed[12] = chunk.flags();
        fixed[13..17].copy_from_slice(&chunk.raw_len.to_le_bytes());
        fixed[17..21].copy_from_slice(&chunk.crc.to_le_bytes());
        let result = match self.file.as_mut() {
            Some(file) => file
                .write_all(&fixed)
                .and_then(|()| file.write_all(&chunk.payload)),
            None => Err(io::Error::other("staging file already finished")),
        };
        result.map_err(|source| self.error(source))
    }

    /// Flushes the file to disk and turns it into a staged file.
    pub fn finish(mut self) -> Result<StagedFile, SnapshotError> {
        let file = self.file.take();
        let synced = match file {
            Some(file) => file.sync_all(),
            None => Err(io::Error::other("staging file already finished")),
        };
        if let Err(source) = synced {
            return Err(self.error(source));
        }
        match self.path.take() {
            Some(path) => Ok(StagedFile { path }),
            None => Err(SnapshotError::Shutdown),
        }
    }

    fn error(&self, source: io::Error) -> SnapshotError {
        SnapshotError::Staging {
            path: self.path.clone().unwrap_or_default(),
            source,
        }
    }
}

impl Drop for StagingFile {
    fn drop(&mut self) {
        self.file.take();
        if let Some(path) = self.path.take() {
            remove_logged(&path);
        }
    }
}

/// A complete, fsynced staging file. Dropping it deletes the file.
#[derive(Debug)]
pub(crate) struct StagedFile {
    path: PathBuf,
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        remove_logged(&self.path);
    }
}

fn remove_logged(path: &Path) {
    if let Err(error) = fs::remove_file(path) {
        if error.kind() != io::ErrorKind::NotFound {
            // Not fatal: the next startup removes it.
            tracing::warn!(path = %path.display(), %error, "could not remove snapshot staging file");
        }
    }
}

/// What a staged snapshot is, as announced by the sender and verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StagedMeta {
    pub from: NodeId,
    pub range_id: RangeId,
    pub index: u64,
    pub term: u64,
    /// Chunks including the header.
    pub chunk_count: u64,
    /// Uncompressed bytes including the header.
    pub raw_bytes: u64,
    pub checksum: u32,
}

/// A received snapshot whose every chunk and whole checksum verified, staged
/// on disk. The engine reads it back with [`StagedSnapshot::reader`] (on a
/// blocking thread) and applies it. Dropping it deletes the file and frees
/// the receive slot: until then it counts against
/// `receives_concurrent_max`, which is what bounds staging disk use.
#[derive(Debug)]
pub struct StagedSnapshot {
    meta: StagedMeta,
    file: StagedFile,
    _slot: OwnedSemaphorePermit,
}

impl StagedSnapshot {
    pub(crate) fn new(
        meta: StagedMeta,
        file: StagedFile,
        slot: OwnedSemaphorePermit,
    ) -> StagedSnapshot {
        StagedSnapshot {
            meta,
            file,
            _slot: slot,
        }
    }

    /// Range, index, term, sizes.
    pub fn meta(&self) -> &StagedMeta {
        &self.meta
    }

    /// Path of the staged file (deleted when `self` is dropped).
    pub fn path(&self) -> &Path {
        &self.file.path
    }

    /// Opens a reader yielding the header, then the chunks in order, each
    /// re-verified. Blocking I/O.
    pub fn reader(&self) -> Result<StagedReader, SnapshotError> {
        let file = File::open(&self.file.path).map_err(|source| SnapshotError::Staging {
            path: self.file.path.clone(),
            source,
        })?;
        Ok(StagedReader {
            input: BufReader::with_capacity(64 << 10, file),
            path: self.file.path.clone(),
            meta: self.meta,
            whole: WholeChecksum::default(),
            header_read: false,
        })
    }
}

/// Reads a staged snapshot back: [`StagedReader::header`] first, then
/// [`StagedReader::next_chunk`] until `None`, which is only returned after
/// the whole checksum verified again.
#[derive(Debug)]
pub struct StagedReader {
    input: BufReader<File>,
    path: PathBuf,
    meta: StagedMeta,
    whole: WholeChecksum,
    header_read: bool,
}

impl StagedReader {
    /// The source's header (chunk 0). Must be called first, once.
    pub fn header(&mut self) -> Result<Bytes, SnapshotError> {
        if self.header_read {
            return Err(self.corrupt("header requested twice"));
        }
        self.header_read = true;
        self.read_record()?
            .ok_or_else(|| self.corrupt("no header record"))
    }

    /// The next data chunk, or `None` at the verified end.
    pub fn next_chunk(&mut self) -> Result<Option<Bytes>, SnapshotError> {
        if !self.header_read {
            return Err(self.corrupt("header not read first"));
        }
        if self.whole.chunk_count == self.meta.chunk_count {
            if self.whole.value() != self.meta.checksum
                || self.whole.raw_bytes != self.meta.raw_bytes
            {
                return Err(self.corrupt("whole-snapshot checksum mismatch"));
            }
            return Ok(None);
        }
        match self.read_record()? {
            Some(chunk) => Ok(Some(chunk)),
            None => Err(self.corrupt("file ends before the last chunk")),
        }
    }

    fn read_record(&mut self) -> Result<Option<Bytes>, SnapshotError> {
        let mut len = [0u8; 4];
        match self.input.read_exact(&mut len) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(source) => {
                return Err(SnapshotError::Staging {
                    path: self.path.clone(),
                    source,
                })
            }
        }
        let len = u32::from_le_bytes(len) as usize;
        if !(RECORD_FIXED_BYTES..=RECORD_FIXED_BYTES + CHUNK_RAW_BYTES_LIMIT as usize)
            .contains(&len)
        {
            return Err(self.corrupt(&format!("record length {len} out of bounds")));
        }
        let mut record = vec![0u8; len];
        self.input
            .read_exact(&mut record)
            .map_err(|source| SnapshotError::Staging {
                path: self.path.clone(),
                source,
            })?;
        let record = Bytes::from(record);
        let mut word = [0u8; 8];
        word.copy_from_slice(&record[..8]);
        let seq = u64::from_le_bytes(word);
        let flags = record[8];
        let mut half = [0u8; 4];
        half.copy_from_slice(&record[9..13]);
        let raw_len = u32::from_le_bytes(half);
        half.copy_from_slice(&record[13..17]);
        let crc = u32::from_le_bytes(half);
        if seq != self.whole.chunk_count || flags & !super::chunk::FLAG_LZ4 != 0 {
            return Err(self.corrupt(&format!("record {seq} (flags {flags:#x}) out of place")));
        }
        let chunk = WireChunk {
            seq,
            compressed: flags & super::chunk::FLAG_LZ4 != 0,
            raw_len,
            crc,
            payload: record.slice(RECORD_FIXED_BYTES..),
        };
        let raw = chunk
            .verify_and_decode()
            .map_err(|error| self.corrupt(&error.to_string()))?;
        self.whole.update(&raw);
        Ok(Some(raw))
    }

    fn corrupt(&self, detail: &str) -> SnapshotError {
        SnapshotError::StagedCorrupt {
            path: self.path.clone(),
            detail: detail.to_string(),
        }
    }
}
