//! On-disk framing: the segment file header and the record envelope.
//!
//! ```text
//! file header (32 bytes)
//!   0..8   magic "FLOTWAL1"
//!   8..12  format version (u32 LE)
//!   12..16 zero
//!   16..24 file sequence number (u64 LE)
//!   24..28 CRC32C of bytes 0..24
//!   28..32 zero
//! record (8-byte aligned; zero padding after the payload)
//!   0..4   CRC32C of payload ++ header[4..16] ++ file sequence (LE)
//!   4..8   stored payload length (u32 LE)
//!   8      type: kind (1 batch, 2 checkpoint) | 0x80 if lz4-compressed
//!   9..12  zero
//!   12..16 uncompressed payload length (u32 LE)
//!   16..   payload
//! ```
//!
//! The CRC covers the file's sequence number so that a record left over in a
//! recycled or renamed file can never be replayed as part of another file.
//! A header of all zeros marks the end of written data: segments are
//! preallocated and their tail is zero-filled.

use std::borrow::Cow;

pub(crate) const MAGIC: &[u8; 8] = b"FLOTWAL1";
pub(crate) const FORMAT_VERSION: u32 = 1;
pub(crate) const FILE_HEADER_LEN: usize = 32;
pub(crate) const RECORD_HEADER_LEN: usize = 16;
/// Records start on 8-byte boundaries; this keeps the scan for a valid record
/// after a damaged one (tail vs. middle corruption) cheap.
pub(crate) const RECORD_ALIGN: usize = 8;
const COMPRESSED_FLAG: u8 = 0x80;

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordKind {
    /// One [`crate::wal::WriteBatch`].
    Batch = 1,
    /// The metadata of every group, first record of every segment.
    Checkpoint = 2,
}

impl RecordKind {
    fn from_u8(code: u8) -> Option<Self> {
        match code {
            1 => Some(RecordKind::Batch),
            2 => Some(RecordKind::Checkpoint),
            _ => None,
        }
    }
}

pub(crate) fn encode_file_header(seq: u64) -> [u8; FILE_HEADER_LEN] {
    let mut out = [0u8; FILE_HEADER_LEN];
    out[0..8].copy_from_slice(MAGIC);
    out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[16..24].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32c::crc32c(&out[0..24]);
    out[24..28].copy_from_slice(&crc.to_le_bytes());
    out
}

/// The file sequence number of a valid header, or why it is not valid.
pub(crate) fn decode_file_header(buf: &[u8]) -> Result<u64, String> {
    if buf.len() < FILE_HEADER_LEN {
        return Err(format!(
            "file shorter than its {FILE_HEADER_LEN}-byte header"
        ));
    }
    if &buf[0..8] != MAGIC {
        return Err("bad magic".into());
    }
    let crc = read_u32(&buf[24..28]);
    if crc != crc32c::crc32c(&buf[0..24]) {
        return Err("file header checksum mismatch".into());
    }
    let version = read_u32(&buf[8..12]);
    if version != FORMAT_VERSION {
        return Err(format!("unsupported format version {version}"));
    }
    Ok(read_u64(&buf[16..24]))
}

/// A payload ready to be framed: compressed or not, with its CRC computed
/// outside any lock (the file sequence is folded in at framing time).
#[derive(Debug, Clone)]
pub(crate) struct PreparedPayload {
    stored: Vec<u8>,
    raw_len: u32,
    compressed: bool,
    payload_crc: u32,
}

impl PreparedPayload {
    /// Compresses `raw` with lz4 when it is larger than
    /// `compress_threshold_bytes` and compression actually shrinks it.
    pub(crate) fn new(raw: Vec<u8>, compress_threshold_bytes: usize) -> Self {
        let raw_len = raw.len() as u32;
        let (stored, compressed) = if raw.len() > compress_threshold_bytes {
            let packed = lz4_flex::block::compress(&raw);
            if packed.len() < raw.len() {
                (packed, true)
            } else {
                (raw, false)
            }
        } else {
            (raw, false)
        };
        let payload_crc = crc32c::crc32c(&stored);
        PreparedPayload {
            stored,
            raw_len,
            compressed,
            payload_crc,
        }
    }

    /// Bytes the framed record takes on disk, padding included.
    pub(crate) fn framed_len(&self) -> usize {
        align_up(RECORD_HEADER_LEN + self.stored.len())
    }

    /// Appends header, payload and padding to `out`.
    pub(crate) fn frame_into(&self, kind: RecordKind, file_seq: u64, out: &mut Vec<u8>) {
        let mut header = [0u8; RECORD_HEADER_LEN];
        header[4..8].copy_from_slice(&(self.stored.len() as u32).to_le_bytes());
        header[8] = kind as u8 | if self.compressed { COMPRESSED_FLAG } else { 0 };
        header[12..16].copy_from_slice(&self.raw_len.to_le_bytes());
        let crc = record_crc(self.payload_crc, &header, file_seq);
        header[0..4].copy_from_slice(&crc.to_le_bytes());
        let start = out.len();
        out.extend_from_slice(&header);
        out.extend_from_slice(&self.stored);
        out.resize(start + self.framed_len(), 0);
    }
}

fn record_crc(payload_crc: u32, header: &[u8; RECORD_HEADER_LEN], file_seq: u64) -> u32 {
    let crc = crc32c::crc32c_append(payload_crc, &header[4..16]);
    crc32c::crc32c_append(crc, &file_seq.to_le_bytes())
}

pub(crate) fn align_up(len: usize) -> usize {
    len.div_ceil(RECORD_ALIGN) * RECORD_ALIGN
}

/// The outcome of reading one record at a position.
#[derive(Debug)]
pub(crate) enum RecordRead<'a> {
    /// A zero header (or no room left for a header): end of written data.
    End,
    /// A valid record; `next` is where the following one starts.
    Record {
        kind: RecordKind,
        payload: Cow<'a, [u8]>,
        next: usize,
    },
    /// Not a valid record. `reason` says why.
    Bad { reason: String },
}

/// Reads the record at `pos` of `buf`, a segment whose sequence number is
/// `file_seq`. Never panics, whatever `buf` holds.
pub(crate) fn read_record(
    buf: &[u8],
    pos: usize,
    file_seq: u64,
    record_bytes_max: usize,
) -> RecordRead<'_> {
    let Some(header) = buf.get(pos..pos.saturating_add(RECORD_HEADER_LEN)) else {
        // Less than a header left: a torn header if anything non-zero remains.
        let rest = buf.get(pos..).unwrap_or(&[]);
        return if rest.iter().all(|&b| b == 0) {
            RecordRead::End
        } else {
            RecordRead::Bad {
                reason: "truncated record header".into(),
            }
        };
    };
    if header.iter().all(|&b| b == 0) {
        return RecordRead::End;
    }
    let mut fixed = [0u8; RECORD_HEADER_LEN];
    fixed.copy_from_slice(header);
    let stored_len = read_u32(&fixed[4..8]) as usize;
    let type_byte = fixed[8];
    let raw_len = read_u32(&fixed[12..16]) as usize;
    let Some(kind) = RecordKind::from_u8(type_byte & !COMPRESSED_FLAG) else {
        return RecordRead::Bad {
            reason: format!("unknown record type {type_byte:#x}"),
        };
    };
    if fixed[9..12] != [0, 0, 0] {
        return RecordRead::Bad {
            reason: "non-zero reserved header bytes".into(),
        };
    }
    if stored_len > record_bytes_max || raw_len > record_bytes_max {
        return RecordRead::Bad {
            reason: format!(
                "record length {stored_len}/{raw_len} above the maximum {record_bytes_max}"
            ),
        };
    }
    let start = pos + RECORD_HEADER_LEN;
    let Some(stored) = buf.get(start..start + stored_len) else {
        return RecordRead::Bad {
            reason: format!("record of {stored_len} bytes runs past the end of the file"),
        };
    };
    let crc = read_u32(&fixed[0..4]);
    if crc != record_crc(crc32c::crc32c(stored), &fixed, file_seq) {
        return RecordRead::Bad {
            reason: "record checksum mismatch".into(),
        };
    }
    let compressed = type_byte & COMPRESSED_FLAG != 0;
    let payload = if compressed {
        match lz4_flex::block::decompress(stored, raw_len) {
            Ok(raw) if raw.len() == raw_len => Cow::Owned(raw),
            Ok(_) | Err(_) => {
                return RecordRead::Bad {
                    reason: "lz4 payload does not decompress to its stated length".into(),
                }
            }
        }
    } else if raw_len != stored_len {
        return RecordRead::Bad {
            reason: "uncompressed record with mismatched lengths".into(),
        };
    } else {
        Cow::Borrowed(stored)
    };
    // Padding must be zero too, so that every byte of a record is checked.
    let next = pos + align_up(RECORD_HEADER_LEN + stored_len);
    let padding = buf.get(start + stored_len..next).unwrap_or(&[]);
    if padding.iter().any(|&b| b != 0) {
        return RecordRead::Bad {
            reason: "non-zero record padding".into(),
        };
    }
    RecordRead::Record {
        kind,
        payload,
        next,
    }
}

pub(crate) fn read_u32(buf: &[u8]) -> u32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&buf[..4]);
    u32::from_le_bytes(raw)
}

pub(crate) fn read_u64(buf: &[u8]) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&buf[..8]);
    u64::from_le_bytes(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip_plain_and_compressed() {
        for raw in [
            vec![7u8; 100],
            vec![1u8; 10_000],
            (0..10_000u32)
                .map(|i| (i.wrapping_mul(2654435761u32) >> 24) as u8)
                .collect(),
        ] {
            let prepared = PreparedPayload::new(raw.clone(), 4096);
            let mut buf = encode_file_header(9).to_vec();
            prepared.frame_into(RecordKind::Batch, 9, &mut buf);
            match read_record(&buf, FILE_HEADER_LEN, 9, 1 << 20) {
                RecordRead::Record {
                    kind,
                    payload,
                    next,
                } => {
                    assert_eq!(kind, RecordKind::Batch);
                    assert_eq!(&payload[..], &raw[..]);
                    assert_eq!(next, buf.len());
                }
                other => panic!("unexpected {other:?}"),
            }
            // The same bytes read as another file's record fail the CRC.
            assert!(matches!(
                read_record(&buf, FILE_HEADER_LEN, 10, 1 << 20),
                RecordRead::Bad { .. }
            ));
        }
    }

    #[test]
    fn repetitive_payload_is_compressed_random_is_not() {
        let prepared = PreparedPayload::new(vec![3u8; 8192], 4096);
        assert!(prepared.compressed);
        let small = PreparedPayload::new(vec![3u8; 100], 4096);
        assert!(!small.compressed);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 4096, ..Default::default() })]

        #[test]
        fn reading_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256), pos in 0usize..300) {
            let _ = decode_file_header(&bytes);
            let _ = read_record(&bytes, pos, 1, 1 << 20);
        }

        /// A header claiming a compressed payload with arbitrary bytes and a
        /// matching CRC still never panics (lz4 decoding is checked).
        #[test]
        fn compressed_garbage_with_valid_crc_never_panics(stored in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256), raw_len in 0u32..100_000) {
            let mut header = [0u8; RECORD_HEADER_LEN];
            header[4..8].copy_from_slice(&(stored.len() as u32).to_le_bytes());
            header[8] = RecordKind::Batch as u8 | COMPRESSED_FLAG;
            header[12..16].copy_from_slice(&raw_len.to_le_bytes());
            let crc = record_crc(crc32c::crc32c(&stored), &header, 5);
            header[0..4].copy_from_slice(&crc.to_le_bytes());
            let mut buf = header.to_vec();
            buf.extend_from_slice(&stored);
            buf.resize(align_up(buf.len()), 0);
            let _ = read_record(&buf, 0, 5, 1 << 20);
        }
    }
}
