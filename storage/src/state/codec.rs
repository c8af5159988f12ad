//! Encoding of the metadata records the store writes.
//!
//! Every record is `[version: u8][payload][crc32c(version ‖ payload): u32 LE]`.
//! RocksDB has its own block checksums, but those do not catch a record that
//! was written wrong or a value read under the wrong key; ours are cheap and
//! make every decoder reject garbage with a clear error instead of
//! interpreting it.

use super::error::{Result, StateError};
use flotilla_raftgroup::{Index, Term};

const RECORD_VERSION: u8 = 1;

/// Wraps `payload` into a versioned, checksummed record.
pub fn seal(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 5);
    out.push(RECORD_VERSION);
    out.extend_from_slice(payload);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Checks and strips the envelope made by [`seal`].
pub fn unseal<'a>(what: &'static str, record: &'a [u8]) -> Result<&'a [u8]> {
    if record.len() < 5 {
        return Err(StateError::corrupt(
            what,
            format!(
                "record of {} bytes is shorter than its 5-byte envelope",
                record.len()
            ),
        ));
    }
    let (body, crc_bytes) = record.split_at(record.len() - 4);
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
    if body[0] != RECORD_VERSION {
        return Err(StateError::corrupt(
            what,
            format!("unknown record version {}", body[0]),
        ));
    }
    Ok(&body[1..])
}

/// A bounds-checked little-endian reader over untrusted bytes.
pub struct Decoder<'a> {
    what: &'static str,
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    pub fn new(what: &'static str, buf: &'a [u8]) -> Self {
        Decoder { what, buf, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn bytes(&mut self, len: usize) -> Result<&'a [u8]> {
        if len > self.remaining() {
            return Err(StateError::corrupt(
                self.what,
                format!(
                    "need {len} bytes at offset {}, only {} left",
                    self.pos,
                    self.remaining()
                ),
            ));
        }
        let out = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        Ok(out)
    }

    pub fn u32(&mut self) -> Result<u32> {
        let mut raw = [0u8; 4];
        raw.copy_from_slice(self.bytes(4)?);
        Ok(u32::from_le_bytes(raw))
    }

    pub fn u64(&mut self) -> Result<u64> {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(self.bytes(8)?);
        Ok(u64::from_le_bytes(raw))
    }

    /// A `u32` length followed by that many bytes.
    pub fn len_prefixed(&mut self) -> Result<&'a [u8]> {
        let len = self.u32()? as usize;
        self.bytes(len)
    }

    /// Fails unless every byte was consumed: trailing garbage means the
    /// writer and reader disagree on the format.
    pub fn finish(self) -> Result<()> {
        if self.remaining() != 0 {
            return Err(StateError::corrupt(
                self.what,
                format!("{} unexpected trailing bytes", self.remaining()),
            ));
        }
        Ok(())
    }
}

/// Appends a `u32` length and the bytes. Panics only if a key or descriptor
/// exceeds 4 GiB, which the engine's own size limits rule out.
pub fn put_len_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    debug_assert!(bytes.len() <= u32::MAX as usize);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

/// An (index, term) pair: the applied state, or the Raft truncated state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IndexTerm {
    pub index: Index,
    pub term: Term,
}

impl IndexTerm {
    pub fn encode(&self) -> Vec<u8> {
        let mut payload = Vec::with_capacity(16);
        payload.extend_from_slice(&self.index.to_le_bytes());
        payload.extend_from_slice(&self.term.to_le_bytes());
        seal(&payload)
    }

    pub fn decode(what: &'static str, record: &[u8]) -> Result<Self> {
        let mut dec = Decoder::new(what, unseal(what, record)?);
        let index = dec.u64()?;
        let term = dec.u64()?;
        dec.finish()?;
        Ok(IndexTerm { index, term })
    }
}

/// Which cluster and node a store directory belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreIdentity {
    pub cluster_id: u64,
    pub node_id: u64,
}

impl StoreIdentity {
    pub fn encode(&self) -> Vec<u8> {
        let mut payload = Vec::with_capacity(16);
        payload.extend_from_slice(&self.cluster_id.to_le_bytes());
        payload.extend_from_slice(&self.node_id.to_le_bytes());
        seal(&payload)
    }

    pub fn decode(record: &[u8]) -> Result<Self> {
        let mut dec = Decoder::new("store identity", unseal("store identity", record)?);
        let cluster_id = dec.u64()?;
        let node_id = dec.u64()?;
        dec.finish()?;
        Ok(StoreIdentity {
            cluster_id,
            node_id,
        })
    }
}

/// Written before a snapshot apply clears a range, removed atomically with
/// the batch that completes it. Its presence on open means the apply was
/// interrupted; it carries the bounds so recovery knows what to clear even
/// if the descriptor is unknown to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotMarker {
    pub index: Index,
    pub term: Term,
    pub start: Vec<u8>,
    pub end: Vec<u8>,
}

impl SnapshotMarker {
    pub fn encode(&self) -> Vec<u8> {
        let mut payload = Vec::with_capacity(24 + self.start.len() + self.end.len());
        payload.extend_from_slice(&self.index.to_le_bytes());
        payload.extend_from_slice(&self.term.to_le_bytes());
        put_len_prefixed(&mut payload, &self.start);
        put_len_prefixed(&mut payload, &self.end);
        seal(&payload)
    }

    pub fn decode(record: &[u8]) -> Result<Self> {
        const WHAT: &str = "snapshot-applying marker";
        let mut dec = Decoder::new(WHAT, unseal(WHAT, record)?);
        let index = dec.u64()?;
        let term = dec.u64()?;
        let start = dec.len_prefixed()?.to_vec();
        let end = dec.len_prefixed()?.to_vec();
        dec.finish()?;
        Ok(SnapshotMarker {
            index,
            term,
            start,
            end,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_reject_damage() {
        let it = IndexTerm { index: 7, term: 3 };
        let enc = it.encode();
        assert_eq!(IndexTerm::decode("applied", &enc).ok(), Some(it));
        for i in 0..enc.len() {
            let mut bad = enc.clone();
            bad[i] ^= 0x40;
            assert!(IndexTerm::decode("applied", &bad).is_err());
        }
        assert!(IndexTerm::decode("applied", &enc[..enc.len() - 1]).is_err());
        let m = SnapshotMarker {
            index: 9,
            term: 2,
            start: b"a".to_vec(),
            end: vec![],
        };
        assert_eq!(SnapshotMarker::decode(&m.encode()).ok(), Some(m));
    }
}
