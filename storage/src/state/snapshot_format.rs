//! What a range snapshot looks like on the wire: a header, numbered chunks
//! of encoded key/value pairs, and a trailer with a checksum over the whole
//! stream. Every decoder here takes untrusted bytes: it checks magic,
//! lengths and CRCs and returns [`StateError::Corrupt`] rather than panic or
//! allocate what a length field claims.

use super::codec::{put_len_prefixed, Decoder};
use super::error::{Result, StateError};
use super::RangeId;
use bytes::Bytes;
use flotilla_raftgroup::{Index, Term};

const HEADER_MAGIC: [u8; 4] = *b"FSH1";
const CHUNK_MAGIC: [u8; 4] = *b"FSC1";
const TRAILER_MAGIC: [u8; 4] = *b"FST1";

/// Bytes an entry costs in a chunk beyond its key and value: two `u32`
/// lengths.
pub const ENTRY_OVERHEAD_BYTES: usize = 8;

/// Fixed bytes of an encoded chunk before its data: magic, seq, length, crc.
pub const CHUNK_FRAME_BYTES: usize = 4 + 8 + 4 + 4;

/// Describes a snapshot stream: which range, the log position the data
/// reflects, and the range's metadata at that position. Read from the same
/// RocksDB snapshot as the data, so the three always agree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotHeader {
    pub range_id: RangeId,
    /// The data is exactly the application of `1..=index_applied`.
    pub index_applied: Index,
    pub term_applied: Term,
    /// First user key of the range.
    pub start: Bytes,
    /// End of the range, exclusive; empty means the end of the key space.
    pub end: Bytes,
    /// The engine's descriptor of the range (opaque here).
    pub descriptor: Bytes,
}

impl SnapshotHeader {
    /// Wire form, checksummed.
    pub fn encode(&self) -> Bytes {
        let mut out =
            Vec::with_capacity(48 + self.start.len() + self.end.len() + self.descriptor.len());
        out.extend_from_slice(&HEADER_MAGIC);
        out.extend_from_slice(&self.range_id.to_le_bytes());
        out.extend_from_slice(&self.index_applied.to_le_bytes());
        out.extend_from_slice(&self.term_applied.to_le_bytes());
        put_len_prefixed(&mut out, &self.start);
        put_len_prefixed(&mut out, &self.end);
        put_len_prefixed(&mut out, &self.descriptor);
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Bytes::from(out)
    }

    /// Parses and validates [`SnapshotHeader::encode`] output.
    pub fn decode(buf: &[u8]) -> Result<SnapshotHeader> {
        const WHAT: &str = "snapshot header";
        let body = check_crc_suffix(WHAT, buf)?;
        let mut dec = Decoder::new(WHAT, body);
        check_magic(WHAT, dec.bytes(4)?, &HEADER_MAGIC)?;
        let range_id = dec.u64()?;
        let index_applied = dec.u64()?;
        let term_applied = dec.u64()?;
        let start = Bytes::copy_from_slice(dec.len_prefixed()?);
        let end = Bytes::copy_from_slice(dec.len_prefixed()?);
        let descriptor = Bytes::copy_from_slice(dec.len_prefixed()?);
        dec.finish()?;
        if !end.is_empty() && start >= end {
            return Err(StateError::corrupt(
                WHAT,
                "range start is not below its end",
            ));
        }
        Ok(SnapshotHeader {
            range_id,
            index_applied,
            term_applied,
            start,
            end,
            descriptor,
        })
    }
}

/// One bounded piece of a snapshot: encoded key/value pairs in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotChunk {
    /// Position in the stream, from 0, no gaps.
    pub seq: u64,
    /// `[key_len: u32 LE][value_len: u32 LE][key][value]` repeated.
    pub data: Bytes,
    /// crc32c of `seq` (8 bytes LE) followed by `data`: a chunk delivered
    /// under the wrong number fails too.
    pub crc32c: u32,
}

impl SnapshotChunk {
    /// Builds a chunk and its checksum.
    pub fn new(seq: u64, data: Bytes) -> SnapshotChunk {
        let crc32c = chunk_crc(seq, &data);
        SnapshotChunk { seq, data, crc32c }
    }

    /// Checks the checksum.
    pub fn verify(&self) -> Result<()> {
        let actual = chunk_crc(self.seq, &self.data);
        if actual != self.crc32c {
            return Err(StateError::corrupt(
                "snapshot chunk",
                format!(
                    "chunk {} checksum mismatch: carried {:#010x}, computed {actual:#010x}",
                    self.seq, self.crc32c
                ),
            ));
        }
        Ok(())
    }

    /// The key/value pairs, each validated for length as it is read.
    pub fn entries(&self) -> ChunkEntries<'_> {
        ChunkEntries {
            dec: Decoder::new("snapshot chunk data", &self.data),
            failed: false,
        }
    }

    /// Wire form: `[magic][seq u64][len u32][crc u32][data]`.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(CHUNK_FRAME_BYTES + self.data.len());
        out.extend_from_slice(&CHUNK_MAGIC);
        out.extend_from_slice(&self.seq.to_le_bytes());
        let len = u32::try_from(self.data.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&self.crc32c.to_le_bytes());
        out.extend_from_slice(&self.data);
        Bytes::from(out)
    }

    /// Parses a frame made by [`SnapshotChunk::encode`] and verifies its
    /// checksum (not its entries: [`SnapshotChunk::entries`] does that).
    pub fn decode(buf: &[u8]) -> Result<SnapshotChunk> {
        const WHAT: &str = "snapshot chunk";
        let mut dec = Decoder::new(WHAT, buf);
        check_magic(WHAT, dec.bytes(4)?, &CHUNK_MAGIC)?;
        let seq = dec.u64()?;
        let len = dec.u32()? as usize;
        let crc32c = dec.u32()?;
        if len != dec.remaining() {
            return Err(StateError::corrupt(
                WHAT,
                format!(
                    "chunk {seq} declares {len} data bytes but {} follow",
                    dec.remaining()
                ),
            ));
        }
        let data = Bytes::copy_from_slice(dec.bytes(len)?);
        dec.finish()?;
        let chunk = SnapshotChunk { seq, data, crc32c };
        chunk.verify()?;
        Ok(chunk)
    }
}

fn chunk_crc(seq: u64, data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&seq.to_le_bytes());
    crc32c::crc32c_append(crc, data)
}

/// Iterator over the pairs of a chunk; yields one error and stops on
/// malformed data.
pub struct ChunkEntries<'a> {
    dec: Decoder<'a>,
    failed: bool,
}

impl<'a> Iterator for ChunkEntries<'a> {
    type Item = Result<(&'a [u8], &'a [u8])>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.dec.remaining() == 0 {
            return None;
        }
        let entry = self.read_entry();
        self.failed = entry.is_err();
        Some(entry)
    }
}

impl<'a> ChunkEntries<'a> {
    fn read_entry(&mut self) -> Result<(&'a [u8], &'a [u8])> {
        let key_len = self.dec.u32()? as usize;
        let value_len = self.dec.u32()? as usize;
        let key = self.dec.bytes(key_len)?;
        let value = self.dec.bytes(value_len)?;
        Ok((key, value))
    }
}

/// Appends one pair in chunk encoding.
pub(crate) fn encode_entry(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    debug_assert!(key.len() <= u32::MAX as usize && value.len() <= u32::MAX as usize);
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
}

/// Ends a snapshot stream: counts and a checksum over every chunk, so the
/// receiver can tell a complete stream from a truncated one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SnapshotTrailer {
    pub chunk_count: u64,
    pub entry_count: u64,
    /// Sum of `data.len()` over all chunks.
    pub data_bytes: u64,
    /// crc32c over the concatenated `data` of all chunks, in order.
    pub checksum: u32,
}

impl SnapshotTrailer {
    /// Wire form, checksummed.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(4 + 24 + 4 + 4);
        out.extend_from_slice(&TRAILER_MAGIC);
        out.extend_from_slice(&self.chunk_count.to_le_bytes());
        out.extend_from_slice(&self.entry_count.to_le_bytes());
        out.extend_from_slice(&self.data_bytes.to_le_bytes());
        out.extend_from_slice(&self.checksum.to_le_bytes());
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Bytes::from(out)
    }

    /// Parses and validates [`SnapshotTrailer::encode`] output.
    pub fn decode(buf: &[u8]) -> Result<SnapshotTrailer> {
        const WHAT: &str = "snapshot trailer";
        let body = check_crc_suffix(WHAT, buf)?;
        let mut dec = Decoder::new(WHAT, body);
        check_magic(WHAT, dec.bytes(4)?, &TRAILER_MAGIC)?;
        let trailer = SnapshotTrailer {
            chunk_count: dec.u64()?,
            entry_count: dec.u64()?,
            data_bytes: dec.u64()?,
            checksum: dec.u32()?,
        };
        dec.finish()?;
        Ok(trailer)
    }
}

/// Running totals both ends keep while chunks go by.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StreamTally {
    pub trailer: SnapshotTrailer,
}

impl StreamTally {
    pub fn add(&mut self, data: &[u8], entries: u64) {
        let t = &mut self.trailer;
        t.checksum = crc32c::crc32c_append(t.checksum, data);
        t.chunk_count += 1;
        t.entry_count += entries;
        t.data_bytes += data.len() as u64;
    }
}

fn check_magic(what: &'static str, found: &[u8], expected: &[u8; 4]) -> Result<()> {
    if found != expected {
        return Err(StateError::corrupt(
            what,
            format!("bad magic {found:02x?}, expected {expected:02x?}"),
        ));
    }
    Ok(())
}

fn check_crc_suffix<'a>(what: &'static str, buf: &'a [u8]) -> Result<&'a [u8]> {
    if buf.len() < 8 {
        return Err(StateError::corrupt(
            what,
            format!("only {} bytes", buf.len()),
        ));
    }
    let (body, crc_bytes) = buf.split_at(buf.len() - 4);
    let mut raw = [0u8; 4];
    raw.copy_from_slice(crc_bytes);
    let stored = u32::from_le_bytes(raw);
    let actual = crc32c::crc32c(body);
    if stored != actual {
        return Err(StateError::corrupt(
            what,
            format!("checksum mismatch: stored {stored:#010x}, computed {actual:#010x}"),
        ));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_round_trip_and_entries() {
        let mut data = Vec::new();
        encode_entry(&mut data, b"a", b"1");
        encode_entry(&mut data, b"bb", b"");
        let chunk = SnapshotChunk::new(3, Bytes::from(data));
        let back = SnapshotChunk::decode(&chunk.encode()).unwrap();
        assert_eq!(back, chunk);
        let pairs: Vec<_> = back.entries().collect::<Result<_>>().unwrap();
        assert_eq!(pairs, vec![(&b"a"[..], &b"1"[..]), (&b"bb"[..], &b""[..])]);
    }

    #[test]
    fn header_and_trailer_round_trip() {
        let h = SnapshotHeader {
            range_id: 9,
            index_applied: 100,
            term_applied: 4,
            start: Bytes::from_static(b"a"),
            end: Bytes::new(),
            descriptor: Bytes::from_static(b"desc"),
        };
        assert_eq!(SnapshotHeader::decode(&h.encode()).unwrap(), h);
        let t = SnapshotTrailer {
            chunk_count: 2,
            entry_count: 3,
            data_bytes: 4,
            checksum: 5,
        };
        assert_eq!(SnapshotTrailer::decode(&t.encode()).unwrap(), t);
        let mut bad = t.encode().to_vec();
        bad[5] ^= 1;
        assert!(SnapshotTrailer::decode(&bad).unwrap_err().is_corruption());
    }
}
