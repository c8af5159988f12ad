//! One chunk of a snapshot as it travels and as it is staged: lz4 block
//! compressed when that shrinks it, raw otherwise, with a CRC32C.
//!
//! The CRC covers the chunk's sequence number, flags, raw length and the
//! payload *as sent*, so a flipped bit anywhere in a chunk — including the
//! fields that say how to decompress it — is caught before the payload is
//! decompressed or written. The whole-snapshot checksum
//! ([`WholeChecksum`]) is chained over the *uncompressed* bytes instead: it
//! checks end to end that what the engine reads back is what the source
//! produced, independent of how chunks were compressed.

use bytes::Bytes;

use super::error::ChunkError;

/// Protocol limit on the raw size of one chunk, whatever the local config
/// says: bounds the memory a peer can make us allocate for one frame and
/// keeps nodes with different `chunk_bytes_max` interoperable.
pub const CHUNK_RAW_BYTES_LIMIT: u32 = 16 << 20;

/// Bit 0 of the flags: the payload is an lz4 block.
pub(crate) const FLAG_LZ4: u8 = 0x01;

/// A chunk ready for the wire or read back from the staging file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireChunk {
    /// Position in the snapshot; 0 is the source's header.
    pub seq: u64,
    /// The payload is lz4-compressed.
    pub compressed: bool,
    /// Length of the uncompressed data.
    pub raw_len: u32,
    /// CRC32C over seq, flags, raw_len and payload.
    pub crc: u32,
    /// What travels: compressed or raw bytes.
    pub payload: Bytes,
}

impl WireChunk {
    /// Compresses `raw` (kept raw when lz4 does not shrink it, e.g. already
    /// compressed SST blocks) and checksums the result. CPU-bound: callers
    /// run it on a blocking thread.
    pub fn encode(seq: u64, raw: Bytes) -> WireChunk {
        // `raw.len()` is bounded by the sender's chunk limit, far below u32::MAX.
        let raw_len = u32::try_from(raw.len()).unwrap_or(u32::MAX);
        let compressed = lz4_flex::block::compress(&raw);
        let (is_lz4, payload) = if compressed.len() < raw.len() {
            (true, Bytes::from(compressed))
        } else {
            (false, raw)
        };
        let crc = chunk_crc(seq, flags_of(is_lz4), raw_len, &payload);
        WireChunk {
            seq,
            compressed: is_lz4,
            raw_len,
            crc,
            payload,
        }
    }

    /// Checks the CRC and returns the uncompressed bytes.
    pub fn verify_and_decode(&self) -> Result<Bytes, ChunkError> {
        let computed = chunk_crc(
            self.seq,
            flags_of(self.compressed),
            self.raw_len,
            &self.payload,
        );
        if computed != self.crc {
            return Err(ChunkError::Checksum {
                expected: self.crc,
                computed,
            });
        }
        if !self.compressed {
            if self.payload.len() != self.raw_len as usize {
                return Err(ChunkError::Decompress {
                    raw_len: self.raw_len,
                });
            }
            return Ok(self.payload.clone());
        }
        if self.raw_len > CHUNK_RAW_BYTES_LIMIT {
            return Err(ChunkError::Decompress {
                raw_len: self.raw_len,
            });
        }
        let mut out = vec![0u8; self.raw_len as usize];
        // `checked-decode` makes lz4_flex return an error instead of
        // panicking when the block would overrun `out`.
        match lz4_flex::block::decompress_into(&self.payload, &mut out) {
            Ok(n) if n == out.len() => Ok(Bytes::from(out)),
            _ => Err(ChunkError::Decompress {
                raw_len: self.raw_len,
            }),
        }
    }

    /// Flags byte as encoded.
    pub(crate) fn flags(&self) -> u8 {
        flags_of(self.compressed)
    }
}

fn flags_of(compressed: bool) -> u8 {
    if compressed {
        FLAG_LZ4
    } else {
        0
    }
}

fn chunk_crc(seq: u64, flags: u8, raw_len: u32, payload: &[u8]) -> u32 {
    let mut fixed = [0u8; 13];
    fixed[..8].copy_from_slice(&seq.to_le_bytes());
    fixed[8] = flags;
    fixed[9..].copy_from_slice(&raw_len.to_le_bytes());
    crc32c::crc32c_append(crc32c::crc32c(&fixed), payload)
}

/// CRC32C chained over the uncompressed header and chunks, in order, plus
/// their count and total length (so dropping or duplicating an empty chunk
/// is caught too).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WholeChecksum {
    crc: u32,
    /// Chunks folded in so far (header included).
    pub chunk_count: u64,
    /// Uncompressed bytes folded in so far.
    pub raw_bytes: u64,
}

impl WholeChecksum {
    /// Folds the next chunk's uncompressed bytes in.
    pub fn update(&mut self, raw: &[u8]) {
        self.crc = crc32c::crc32c_append(self.crc, raw);
        self.chunk_count += 1;
        self.raw_bytes += raw.len() as u64;
    }

    /// The checksum value sent in the final frame.
    pub fn value(&self) -> u32 {
        self.crc
    }
}
